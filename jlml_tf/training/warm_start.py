"""Start a run from another run's weights (all but the identity classifiers, unless asked).

Small benchmarks (CUHK01, GRID) are usually trained from a model that has already seen many
identities; the paper did the same with its pre-training. The classifiers are skipped because
the identity sets differ; everything else must have the same shapes. A continuation on the same
training identities (say, more epochs with stronger augmentation) keeps the classifiers too, so
fresh heads do not pull the features about while they learn.
"""
from __future__ import annotations

import os

import keras

from jlml_tf.inference import run_dir as run_dir_lib
from jlml_tf.config import ModelConfig
from jlml_tf.modeling import jlml

# Fields that may differ between the source and the new run without changing any feature weight.
# The network is convolutional up to global pooling, so the input size changes no weight shape:
# a model pre-trained small can be fine-tuned at a larger size.
_FREE_FIELDS = {"num_classes", "dropout", "loss_mode", "fused_batch_norm", "sync_batch_norm",
                "batch_norm_momentum", "batch_norm_group_size", "input_height", "input_width"}


def check_compatible(source: ModelConfig, target: ModelConfig, source_path: str) -> None:
    old, new = source.to_dict(), target.to_dict()
    diff = {k: (old.get(k), v) for k, v in new.items()
            if k not in _FREE_FIELDS and old.get(k) != v}
    if diff:
        raise ValueError(f"--init_from={source_path}: its model differs from this run's in "
                         f"{diff} (source, this run); feature weights cannot be copied")


def copy_feature_weights(source: str | os.PathLike, target: keras.Model,
                         target_cfg: ModelConfig, classifiers: bool = False) -> int:
    """Copies every non-classifier layer's weights (and the classifiers' if `classifiers`) from
    `source` (a run or checkpoint) into the training model `target`; returns the number of
    weight tensors copied."""
    loaded = run_dir_lib.load_run(source)
    source_cfg, source_model = loaded.model_cfg, loaded.training_model
    check_compatible(source_cfg, target_cfg, os.fspath(source))
    skip = set() if classifiers else \
        set(jlml.classifier_layers(target)) | set(jlml.classifier_layers(source_model))
    if classifiers and source_cfg.num_classes != target_cfg.num_classes:
        raise ValueError(f"--init_classifiers: {os.fspath(source)} has {source_cfg.num_classes} "
                         f"identities and this run {target_cfg.num_classes}; classifiers can "
                         "only be copied between runs on the same training identities")
    copied = 0
    for layer in target.layers:
        if layer.name in skip or not layer.weights:
            continue
        layer.set_weights(source_model.get_layer(layer.name).get_weights())
        copied += len(layer.weights)
    return copied
