"""JLML network: the paper's complexity figures, structure per configuration, shapes."""
import dataclasses

import keras
import numpy as np
import pytest

from jlml_tf import model_summary
from jlml_tf.config import ModelConfig
from jlml_tf.modeling import jlml


@pytest.fixture(scope="module")
def default_models():
    return jlml.build_jlml(ModelConfig(num_classes=751))


def test_default_parameter_count_matches_paper(default_models):
    training_model, _ = default_models
    params = jlml.feature_parameter_count(training_model)
    assert params == 7_329_504  # pinned: any architecture change shows up here
    assert abs(params - 7.2e6) / 7.2e6 < 0.05


def test_default_multiply_adds_match_paper(default_models):
    training_model, _ = default_models
    macs = model_summary.count_macs(training_model, exclude=tuple(jlml.classifier_layers(training_model)))
    assert abs(macs - 1.54e9) / 1.54e9 < 0.10


def test_default_depth_is_39(default_models):
    assert model_summary.longest_weighted_path(default_models[0]) == 39


def test_default_embedding_is_1024(default_models):
    _, embedding_model = default_models
    assert embedding_model.output.shape == (None, 1024)


def test_count_macs_of_known_conv():
    import keras
    x = keras.Input((8, 6, 3))
    y = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
    z = keras.layers.Dense(5)(keras.layers.Flatten()(y))
    model = keras.Model(x, z)
    assert model_summary.count_macs(model) == 4 * 3 * 4 * (3 * 3 * 3) + 4 * 3 * 4 * 5


@pytest.mark.parametrize("stripes", [2, 6, 10])
def test_one_local_stream_per_stripe(tiny_model_config, stripes):
    cfg = ModelConfig.from_dict({**tiny_model_config.to_dict(), "num_stripes": stripes,
                                "input_height": 96})
    training_model, _ = jlml.build_jlml(cfg)
    names = {l.name.split("_")[0] for l in training_model.layers if l.name.startswith("local")}
    streams = {n for n in names if n[5:].isdigit()}
    assert streams == {f"local{i + 1}" for i in range(stripes)}
    heights = [s[1] for s in training_model.get_layer("stripes").compute_output_shape((None, 32, 16, 8))]
    assert sum(heights) == 32 and max(heights) - min(heights) <= 1


def test_shapes_and_heads(tiny_model_config):
    training_model, embedding_model = jlml.build_jlml(tiny_model_config)
    x = np.random.default_rng(0).uniform(0, 255, (3, 64, 32, 3)).astype("float32")
    logits = training_model(x, training=False)
    assert set(logits) == {"global", "local"}
    assert all(v.shape == (3, 5) for v in logits.values())
    assert embedding_model(x).shape == (3, 32)


def test_embedding_model_shares_weights(tiny_model_config):
    training_model, embedding_model = jlml.build_jlml(tiny_model_config)
    training_model.get_layer("global_feature").kernel.assign(
        np.ones(training_model.get_layer("global_feature").kernel.shape, "float32"))
    assert np.all(embedding_model.get_layer("global_feature").kernel.numpy() == 1.0)


@pytest.mark.parametrize("feature_bn,branches", [(True, "both"), (False, "both"),
                                                (True, "local")])
def test_training_outputs_include_the_embedding_l2_matches(tiny_model_config, feature_bn,
                                                           branches):
    """with_features(embedding=True): "embedding" is the embedding model's output (after the
    feature BN when there is one), "features" the pre-BN features; in inference mode."""
    cfg = dataclasses.replace(tiny_model_config, feature_bn=feature_bn, branches=branches)
    training_model, embedding_model = jlml.build_jlml(cfg)
    for layer in training_model.layers:  # non-trivial BN statistics, so BN is not the identity
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.3, "float32"))
    x = np.random.default_rng(2).uniform(0, 255, (3, 64, 32, 3)).astype("float32")
    outputs = jlml.with_features(training_model, embedding=True)(x, training=False)
    np.testing.assert_allclose(outputs["embedding"].numpy(), embedding_model(x).numpy(),
                               rtol=1e-5, atol=1e-6)
    differs = not np.allclose(outputs["features"].numpy(), embedding_model(x).numpy(), atol=1e-4)
    assert differs == feature_bn
    assert "embedding" not in jlml.with_features(training_model)(x, training=False)


def test_l2_normalised_embedding(tiny_model_config):
    model = jlml.with_l2_normalization(jlml.build_jlml(tiny_model_config)[1])
    x = np.random.default_rng(1).uniform(0, 255, (4, 64, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.linalg.norm(model(x).numpy(), axis=1), 1.0, rtol=1e-5)


def test_l2_normalization_is_not_applied_twice(tiny_model_config):
    model = jlml.with_l2_normalization(jlml.build_jlml(tiny_model_config)[1])
    assert jlml.with_l2_normalization(model) is model


def test_flip_test_model_is_the_normalised_sum_of_both_views(tiny_model_config):
    l2 = jlml.with_l2_normalization(jlml.build_jlml(tiny_model_config)[1])
    flip = jlml.with_flip_test(l2)
    x = np.random.default_rng(2).uniform(0, 255, (3, 64, 32, 3)).astype("float32")
    mirrored = x[:, :, ::-1].copy()
    both = l2(x).numpy() + l2(mirrored).numpy()
    want = both / np.linalg.norm(both, axis=1, keepdims=True)
    np.testing.assert_allclose(flip(x).numpy(), want, atol=1e-6)
    np.testing.assert_array_equal(flip(x).numpy(), flip(mirrored).numpy())  # a + b == b + a
    assert np.abs(l2(x).numpy() - l2(mirrored).numpy()).max() > 1e-3  # one view is not symmetric
    assert flip.count_params() == l2.count_params()  # the views share the weights


def test_linear_map_model_is_the_mapped_embedding_on_the_sphere(tiny_model_config):
    from jlml_tf.evaluation import metric_learning

    l2 = jlml.with_l2_normalization(jlml.build_jlml(tiny_model_config)[1])
    matrix = np.random.default_rng(3).normal(size=(32, 5)).astype("float32")
    x = np.random.default_rng(4).uniform(0, 255, (4, 64, 32, 3)).astype("float32")
    projected = l2(x).numpy() @ matrix
    radius = float(np.median(np.linalg.norm(projected, axis=1)))  # some rows beyond it
    mapped = jlml.with_linear_map(l2, matrix, radius)
    np.testing.assert_allclose(mapped(x).numpy(),
                               metric_learning.onto_sphere(projected, radius), atol=1e-5)
    assert mapped.output.shape[-1] == 6
    assert mapped.count_params() == l2.count_params() + 32 * 5
    assert not mapped.get_layer(jlml.LINEAR_MAP_LAYER).trainable
    with pytest.raises(ValueError, match=r"\(32, r\)"):
        jlml.with_linear_map(l2, matrix[:16], radius)
    with pytest.raises(ValueError, match="sphere radius 0.0"):
        jlml.with_linear_map(l2, matrix, 0.0)


def test_fused_linear_map_model_maps_the_weighted_embedding_and_lomo(tiny_model_config):
    from test_lomo_graph import block_images

    from jlml_tf.evaluation import fusion, metric_learning
    from jlml_tf.features import lomo

    l2 = jlml.with_l2_normalization(jlml.build_jlml(tiny_model_config)[1])
    cfg = lomo.LomoConfig(height=64, width=32, retinex="none")
    dim = 32 + lomo.feature_dim(cfg)
    matrix = np.random.default_rng(5).normal(size=(dim, 5)).astype("float32")
    x = block_images(np.random.default_rng(6), 3, 64, 32)
    fused = fusion.concatenate(l2(x.astype("float32")).numpy(), lomo.lomo(x, cfg), 2.0)
    mapped = jlml.with_linear_map(l2, matrix, 50.0, {"weight": 2.0, "lomo": cfg.to_dict()})
    np.testing.assert_allclose(mapped(x.astype("float32")).numpy(),
                               metric_learning.onto_sphere(fused @ matrix, 50.0), atol=1e-5)
    assert mapped.count_params() == l2.count_params() + dim * 5  # LOMO has no weights
    with pytest.raises(ValueError, match=rf"\({dim}, r\)"):
        jlml.with_linear_map(l2, matrix[:32], 50.0, {"weight": 2.0, "lomo": cfg.to_dict()})
    other = lomo.LomoConfig(height=128, width=48, retinex="none").to_dict()
    with pytest.raises(ValueError, match="LOMO was computed on 128x48 images, the model takes "
                                         "64x32"):
        jlml.with_linear_map(l2, matrix, 50.0, {"weight": 2.0, "lomo": other})


def test_uniloss_has_one_classifier_on_concatenation(tiny_model_config):
    cfg = ModelConfig.from_dict({**tiny_model_config.to_dict(), "loss_mode": "uni"})
    training_model, _ = jlml.build_jlml(cfg)
    heads = jlml.classifier_layers(training_model)
    assert list(heads) == [jlml.UNI_CLASSIFIER]
    assert heads[jlml.UNI_CLASSIFIER].kernel.shape == (32, 5)


@pytest.mark.parametrize("branches,dim", [("global", 16), ("local", 16)])
def test_single_branch_ablations(tiny_model_config, branches, dim):
    cfg = ModelConfig.from_dict({**tiny_model_config.to_dict(), "branches": branches})
    training_model, embedding_model = jlml.build_jlml(cfg)
    assert set(training_model.output) == {branches}
    assert embedding_model.output.shape == (None, dim)


def test_without_shared_stem_has_two_stems(tiny_model_config):
    cfg = ModelConfig.from_dict({**tiny_model_config.to_dict(), "shared_stem": False})
    shared, _ = jlml.build_jlml(tiny_model_config)
    separate, _ = jlml.build_jlml(cfg)
    names = {l.name for l in separate.layers}
    assert {"global_stem_conv", "local_stem_conv"} <= names and "stem_conv" not in names
    assert separate.count_params() > shared.count_params()


def test_config_round_trip(tiny_model_config):
    text = tiny_model_config.to_json()
    assert ModelConfig.from_json(text) == tiny_model_config
    assert ModelConfig.from_json(text).to_json() == text


@pytest.mark.parametrize("field,value,message", [
    ("num_stripes", 11, "num_stripes"), ("branches", "both_ways", "branches"),
    ("loss_mode", "triplet", "loss_mode"), ("global_widths", [4], "global_widths"),
    ("ibn_stages", 3, "ibn_stages"), ("ibn_stages", -1, "ibn_stages")])
def test_bad_config_names_field(tiny_model_config, field, value, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict({**tiny_model_config.to_dict(), field: value})


def test_unknown_config_field_is_rejected(tiny_model_config):
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({**tiny_model_config.to_dict(), "stripes": 4})


def test_feature_bn_normalises_each_branch_feature_in_the_embedding(tiny_model_config):
    cfg = dataclasses.replace(tiny_model_config, feature_bn=True)
    plain, _ = jlml.build_jlml(tiny_model_config)
    training_model, embedding_model = jlml.build_jlml(cfg)
    # gamma, beta, moving mean and variance per feature, for each of the two branches
    assert training_model.count_params() - plain.count_params() == 2 * 4 * cfg.feature_dim
    for branch in ("global", "local"):
        bn = training_model.get_layer(f"{branch}_feature_bn")
        bn.gamma.assign(np.full(cfg.feature_dim, 2.0, np.float32))
        bn.beta.assign(np.full(cfg.feature_dim, 3.0, np.float32))
    x = np.random.default_rng(0).uniform(0, 255, (4, cfg.input_height, cfg.input_width, 3))
    # fresh moving statistics (mean 0, variance 1): y = 2 x / sqrt(1 + eps) + 3 on every feature
    features = embedding_model(x.astype(np.float32), training=False).numpy()
    raw = keras.Model(training_model.input, [training_model.get_layer("global_feature").output,
                                             training_model.get_layer("local_feature").output])
    expected = np.concatenate([f.numpy() for f in raw(x.astype(np.float32))], axis=-1)
    np.testing.assert_allclose(features, 2 * expected / np.sqrt(1 + 1e-5) + 3, rtol=1e-4, atol=1e-4)


def test_ibn_units_are_in_the_first_stages_of_every_stream(tiny_model_config):
    cfg = dataclasses.replace(tiny_model_config, ibn_stages=1)
    plain, _ = jlml.build_jlml(tiny_model_config)
    ibn, _ = jlml.build_jlml(cfg)
    instance_norms = sorted(l.name for l in ibn.layers if isinstance(l, keras.layers.GroupNormalization))
    stripes = range(1, cfg.num_stripes + 1)
    assert instance_norms == sorted(["global_s1u1_a_in"] + [f"local{i}_s1u1_a_in" for i in stripes])
    # half of each unit's reduced channels move from batch norm (4 numbers each) to instance
    # norm (a scale and a shift): global width 4 -> 2 channels, each local width 2 -> 1
    channels = cfg.global_widths[0] // 2 + cfg.num_stripes * (cfg.local_widths[0] // 2)
    assert plain.count_params() - ibn.count_params() == 2 * channels


def test_ibn_normalises_half_the_channels_per_image():
    from jlml_tf.modeling import residual

    inputs = keras.Input((6, 5, 3))
    probe = keras.Model(inputs, residual.conv_bn(inputs, 8, 1, 1, "unit", activation=False,
                                                 instance_channels=4))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 6, 5, 3)).astype(np.float32)
    changed = x.copy()
    changed[1:] = rng.uniform(0, 64, changed[1:].shape)  # the other images of the batch, darker
    out, out_changed = probe(x, training=True).numpy(), probe(changed, training=True).numpy()
    # instance norm at initialisation: each image's channel has mean 0 and variance 1 ...
    np.testing.assert_allclose(out[..., :4].mean(axis=(1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out[..., :4].var(axis=(1, 2)), 1.0, atol=1e-3)
    # ... and does not depend on the rest of the batch, unlike the batch-normed half
    np.testing.assert_allclose(out_changed[0, ..., :4], out[0, ..., :4], atol=1e-5)
    assert np.abs(out_changed[0, ..., 4:] - out[0, ..., 4:]).max() > 0.1
