"""Network building blocks and the JLML model."""
from jlml_tf.modeling.jlml import build_embedding_model, build_jlml, build_training_model

__all__ = ["build_jlml", "build_training_model", "build_embedding_model"]
