"""The JLML network: shared stem, a global branch and m local stripe streams, one head per branch.

`build_jlml` returns two Keras models that share weights:
- the training model maps RGB pixels in [0, 255] to a dict of logits, one entry per loss;
- the embedding model maps the same pixels to the 1024-d concatenated feature (L2-normalised
  by default), the representation matched by L2 distance at test time.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from jlml_tf.config import PIXEL_MEAN, PIXEL_STD, ModelConfig
from jlml_tf.modeling import residual


GLOBAL_CLASSIFIER = "global_classifier"
LOCAL_CLASSIFIER = "local_classifier"
UNI_CLASSIFIER = "uni_classifier"
LINEAR_MAP_LAYER = "linear_map"  # with_linear_map's Dense (a fused map's stays float in int8)


def _batch_norm_options(cfg: ModelConfig) -> dict:
    return dict(bn_momentum=cfg.batch_norm_momentum, sync_bn=cfg.sync_batch_norm,
                fused_bn=cfg.fused_batch_norm, bn_group_size=cfg.batch_norm_group_size)


def _global_branch(x, cfg: ModelConfig):
    bn = _batch_norm_options(cfg)
    x = residual.residual_stages(x, cfg.global_widths, cfg.units_per_stage, cfg.stage_strides,
                                 cfg.expansion, "global", ibn_stages=cfg.ibn_stages, **bn)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    return _feature(layers.Dense(cfg.feature_dim, name="global_feature")(x), cfg, "global")


def _local_branch(x, cfg: ModelConfig):
    bn = _batch_norm_options(cfg)
    stripes = residual.HorizontalStripes(cfg.num_stripes, name="stripes")(x)
    pooled = []
    for i, stripe in enumerate(stripes):
        y = residual.residual_stages(stripe, cfg.local_widths, cfg.units_per_stage,
                                     cfg.stage_strides, cfg.expansion, f"local{i + 1}",
                                     ibn_stages=cfg.ibn_stages, **bn)
        pooled.append(layers.GlobalAveragePooling2D(name=f"local{i + 1}_pool")(y))
    y = pooled[0] if len(pooled) == 1 else layers.Concatenate(name="local_concat")(pooled)
    return _feature(layers.Dense(cfg.feature_dim, name="local_feature")(y), cfg, "local")


def _feature(x, cfg: ModelConfig, branch: str):
    if not cfg.feature_bn:
        return x
    return residual.batch_norm(f"{branch}_feature_bn", cfg.batch_norm_momentum,
                               bn_group_size=cfg.batch_norm_group_size)(x)


def _classifier(x, cfg: ModelConfig, name):
    if cfg.dropout:
        x = layers.Dropout(cfg.dropout, name=f"{name}_dropout")(x)
    # float32 logits keep the softmax stable under mixed precision.
    return layers.Dense(cfg.num_classes, dtype="float32", name=name)(x)


def build_jlml(cfg: ModelConfig) -> tuple[keras.Model, keras.Model]:
    """Returns (training_model, embedding_model), sharing all weights."""
    bn = _batch_norm_options(cfg)
    pixels = keras.Input((cfg.input_height, cfg.input_width, 3), name="pixels")
    x = layers.Normalization(mean=PIXEL_MEAN, variance=[s * s for s in PIXEL_STD],
                             name="normalize")(pixels)
    features = {}
    shared = residual.stem(x, cfg.stem_filters, "stem", **bn) if cfg.shared_stem else None
    if cfg.branches in ("both", "global"):
        low = shared if cfg.shared_stem else residual.stem(x, cfg.stem_filters, "global_stem", **bn)
        features["global"] = _global_branch(low, cfg)
    if cfg.branches in ("both", "local"):
        low = shared if cfg.shared_stem else residual.stem(x, cfg.stem_filters, "local_stem", **bn)
        features["local"] = _local_branch(low, cfg)

    parts = list(features.values())
    concat = parts[0] if len(parts) == 1 else layers.Concatenate(name="embedding_concat")(parts)
    if cfg.loss_mode == "uni":
        logits = {"uni": _classifier(concat, cfg, UNI_CLASSIFIER)}
    else:
        logits = {k: _classifier(v, cfg, f"{k}_classifier") for k, v in features.items()}
    training_model = keras.Model(pixels, logits, name="jlml_train")

    embedding = layers.Activation("linear", dtype="float32", name="embedding")(concat)
    embedding_model = keras.Model(pixels, embedding, name="jlml_embedding")
    return training_model, embedding_model


FEATURE_LAYERS = ("global_feature", "local_feature")  # each branch's feature_dim-d feature, before BNNeck


def with_features(training_model: keras.Model, embedding: bool = False) -> keras.Model:
    """The training model with a second output, the branches' features concatenated before
    BNNeck (where a metric loss acts on a BNNeck model; Luo et al., 2019); weights shared.
    embedding=True adds a third, "embedding": the features the embedding model concatenates
    (after BNNeck when the model has one), for losses on what L2 matches (the trainer calls it
    with training=True, so BNNeck then uses the batch's statistics)."""
    names = {layer.name for layer in training_model.layers}
    parts = [training_model.get_layer(n).output for n in FEATURE_LAYERS if n in names]
    if not parts:
        raise ValueError(f"{training_model.name}: no layer named {' or '.join(FEATURE_LAYERS)}")
    outputs = {"logits": training_model.output, "features": _concatenated(parts, "metric_features")}
    if embedding:
        matched = [training_model.get_layer(f"{n}_bn" if f"{n}_bn" in names else n).output
                   for n in FEATURE_LAYERS if n in names]
        outputs["embedding"] = _concatenated(matched, "matched_features")
    return keras.Model(training_model.input, outputs, name="jlml_train_features")


def _concatenated(parts, name: str):
    return parts[0] if len(parts) == 1 else layers.Concatenate(name=name)(parts)


def build_training_model(cfg: ModelConfig) -> keras.Model:
    return build_jlml(cfg)[0]


def build_embedding_model(cfg: ModelConfig, normalize: bool = True) -> keras.Model:
    return with_l2_normalization(build_jlml(cfg)[1]) if normalize else build_jlml(cfg)[1]


def with_l2_normalization(embedding_model: keras.Model) -> keras.Model:
    """Wraps an embedding model so its output has unit L2 norm (shares the weights); a model
    that already ends in that normalisation is returned as it is."""
    if embedding_model.layers[-1].name == "l2_normalize":
        return embedding_model
    out = layers.UnitNormalization(axis=-1, dtype="float32", name="l2_normalize")(
        embedding_model.output)
    return keras.Model(embedding_model.input, out, name="jlml_embedding_l2")


def with_flip_test(l2_model: keras.Model) -> keras.Model:
    """Test-time flip in one graph: unit(e(x) + e(mirror(x))) for an L2-normalised embedding
    model e (two forward passes, shared weights). An image and its mirror get the same
    embedding. Evaluation's --flip_test and export's --flip_test both build it here."""
    pixels = keras.Input(l2_model.input.shape[1:], name="images")
    mirrored = keras.ops.flip(pixels, axis=2)  # NHWC: width
    total = layers.Add(dtype="float32")([l2_model(pixels), l2_model(mirrored)])
    out = layers.UnitNormalization(axis=-1, dtype="float32", name="l2_normalize")(total)
    return keras.Model(pixels, out, name="jlml_embedding_l2_flip")


def with_linear_map(l2_model: keras.Model, matrix, radius: float,
                    fusion: dict | None = None) -> keras.Model:
    """onto_sphere(L^T e(x), R) for an L2-normalised embedding model e, a fixed (dim, r) matrix L
    and radius R: a learned metric (XQDA, KISSME; `Metric.linear_map`) carried by the model as
    (r + 1)-d unit-norm outputs whose L2 distance ranks as evaluation's `--metric=xqda_map`
    (metric_learning.onto_sphere, the NumPy twin).

    fusion (`LinearMap.fusion`, a map fitted by `evaluate --fuse_lomo`): L maps [w * e(x),
    LOMO(x)] instead, LOMO computed in the graph from the same input pixels (lomo_graph)."""
    matrix = np.asarray(matrix, np.float32)
    pixels = keras.Input(l2_model.input.shape[1:], name="images")
    features = l2_model(pixels)
    dim = l2_model.output.shape[-1]
    if fusion:
        from jlml_tf.features import lomo, lomo_graph

        cfg = lomo.LomoConfig.from_dict(fusion["lomo"])
        if tuple(pixels.shape[1:3]) != (cfg.height, cfg.width):
            raise ValueError(f"the fused map's LOMO was computed on {cfg.height}x{cfg.width} "
                             f"images, the model takes {pixels.shape[1]}x{pixels.shape[2]}")
        handcrafted = lomo_graph.LomoLayer(cfg.to_dict(),
                                           name=lomo_graph.LAYER_NAME)(pixels)
        weighted = layers.Rescaling(float(fusion["weight"]), dtype="float32",
                                    name="fusion_weight")(features)
        features = layers.Concatenate(dtype="float32", name="fused")([weighted, handcrafted])
        dim = features.shape[-1]
    if matrix.ndim != 2 or matrix.shape[0] != dim:
        raise ValueError(f"linear map of shape {matrix.shape} does not apply to the model's "
                         f"{dim}-d {'fused features' if fusion else 'embedding'}: expected "
                         f"({dim}, r)")
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError(f"sphere radius {radius}: expected a positive number")
    project = layers.Dense(matrix.shape[1], use_bias=False, dtype="float32", trainable=False,
                           name=LINEAR_MAP_LAYER)
    scaled = project(features)  # L^T x / R: the radius is folded into the weights
    rest = ops.sqrt(ops.maximum(1.0 - ops.sum(ops.square(scaled), axis=-1, keepdims=True), 0.0))
    project.set_weights([matrix / np.float32(radius)])
    out = layers.UnitNormalization(axis=-1, dtype="float32", name="l2_normalize")(
        ops.concatenate([scaled, rest], axis=-1))
    name = f"{l2_model.name}_lomo_mapped" if fusion else f"{l2_model.name}_mapped"
    return keras.Model(pixels, out, name=name)


def classifier_layers(model: keras.Model) -> dict[str, layers.Dense]:
    names = (GLOBAL_CLASSIFIER, LOCAL_CLASSIFIER, UNI_CLASSIFIER)
    return {layer.name: layer for layer in model.layers if layer.name in names}


def feature_parameter_count(model: keras.Model) -> int:
    """Parameters without the identity classifiers, the count used in the paper's table."""
    heads = sum(l.count_params() for l in classifier_layers(model).values())
    return model.count_params() - heads
