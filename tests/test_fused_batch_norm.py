"""The fused batch norm trains exactly like Keras' plain layer: outputs, gradients, statistics."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from jlml_tf.modeling import jlml
from jlml_tf.modeling.fused_batch_norm import FusedBatchNormalization


def _pair(**kwargs):
    plain = keras.layers.BatchNormalization(**kwargs)
    fused = FusedBatchNormalization(**kwargs)
    for layer in (plain, fused):
        layer.build((None, 6, 5, 3))
    gamma, beta = np.array([1.5, 0.5, 2.0], np.float32), np.array([0.1, -0.2, 0.3], np.float32)
    moving = [np.array([0.2, 0.0, -0.1], np.float32), np.array([1.0, 2.0, 0.5], np.float32)]
    weights = [gamma] * kwargs.get("scale", True) + [beta] * kwargs.get("center", True) + moving
    plain.set_weights(weights)
    fused.set_weights(weights)
    return plain, fused


def _train_step(layer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        # Non-uniform weights: the gradient of a plain sum through BN is zero.
        weights = tf.reshape(tf.range(tf.size(y), dtype=y.dtype), y.shape) / 100.0
        loss = tf.reduce_sum(y * weights + 0.5 * y * y)
    return y, tape.gradient(loss, [x] + layer.trainable_variables)


@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
def test_training_step_matches_plain_layer(center, scale):
    plain, fused = _pair(momentum=0.9, epsilon=1e-5, center=center, scale=scale)
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, (4, 6, 5, 3)), tf.float32)
    y_plain, g_plain = _train_step(plain, x)
    y_fused, g_fused = _train_step(fused, x)
    np.testing.assert_allclose(y_fused, y_plain, atol=2e-5)
    for a, b in zip(g_fused, g_plain):
        np.testing.assert_allclose(a, b, atol=2e-4)
    # The moving statistics follow the same (biased-variance) update.
    for a, b in zip(fused.non_trainable_weights, plain.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)


def test_inference_uses_moving_statistics():
    plain, fused = _pair()
    x = tf.random.stateless_normal((2, 6, 5, 3), seed=(1, 2))
    np.testing.assert_array_equal(fused(x, training=False), plain(x, training=False))


def test_whole_network_trains_the_same(tiny_model_config):
    plain_cfg = dataclasses.replace(tiny_model_config, fused_batch_norm=False)
    fused_cfg = dataclasses.replace(tiny_model_config, fused_batch_norm=True)
    keras.utils.set_random_seed(3)
    plain, _ = jlml.build_jlml(plain_cfg)
    fused, _ = jlml.build_jlml(fused_cfg)
    fused.set_weights(plain.get_weights())
    assert any(isinstance(l, FusedBatchNormalization) for l in fused.layers)
    assert not any(isinstance(l, FusedBatchNormalization) for l in plain.layers)
    images = tf.random.stateless_uniform((4, 64, 32, 3), seed=(4, 5), maxval=255.0)
    labels = tf.constant([0, 1, 2, 3])

    def step(model):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.add_n([tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
                labels, v, from_logits=True)) for v in logits.values()])
        return logits, tape.gradient(loss, model.trainable_variables)

    (logits_p, grads_p), (logits_f, grads_f) = step(plain), step(fused)
    for name in logits_p:
        np.testing.assert_allclose(logits_f[name], logits_p[name], rtol=1e-3, atol=1e-4)
    for a, b in zip(grads_f, grads_p):
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-4)
    for a, b in zip(fused.non_trainable_weights, plain.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


def test_mixed_bfloat16_matches_plain_layer_within_bfloat16_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        plain, fused = _pair(momentum=0.9, epsilon=1e-5)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x = tf.cast(np.random.default_rng(1).normal(1.0, 2.0, (4, 6, 5, 3)), tf.bfloat16)
    y_plain, _ = _train_step(plain, x)
    y_fused, _ = _train_step(fused, x)
    assert y_fused.dtype == y_plain.dtype == tf.bfloat16
    # bfloat16 has an 8-bit mantissa: outputs of size ~2 agree to a few 1e-2.
    np.testing.assert_allclose(tf.cast(y_fused, tf.float32), tf.cast(y_plain, tf.float32),
                               atol=3e-2)
    for a, b in zip(fused.non_trainable_weights, plain.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("shape", [(6, 4, 3, 2), (6, 2)])
def test_groups_are_each_normalised_like_a_batch_of_their_own(shape):
    # one layer over 3 groups of 2 images = the plain layer over each group alone
    grouped = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, group_size=2)
    plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    for layer in (grouped, plain):
        layer.build((None, *shape[1:]))
    weights = [np.array([1.5, 0.5]), np.array([0.1, -0.2]), np.zeros(2), np.ones(2)]
    grouped.set_weights(weights)
    x = np.random.default_rng(2).normal(0.0, 1.0, shape).astype(np.float32)
    x[2:4] += 5.0  # a camera with another mean
    y = grouped(tf.constant(x), training=True).numpy()
    means, variances = [], []
    for g in range(3):
        plain.set_weights(weights)
        np.testing.assert_allclose(y[2 * g:2 * g + 2], plain(x[2 * g:2 * g + 2], training=True),
                                   atol=1e-5)
        axes = tuple(range(len(shape) - 1))
        means.append(x[2 * g:2 * g + 2].mean(axes))
        variances.append(x[2 * g:2 * g + 2].var(axes))
    # the moving statistics follow the groups' average: the within-camera statistics
    np.testing.assert_allclose(grouped.moving_mean.numpy(), 0.1 * np.mean(means, 0), rtol=1e-5)
    np.testing.assert_allclose(grouped.moving_variance.numpy(),
                               0.9 + 0.1 * np.mean(variances, 0), rtol=1e-5)
    assert FusedBatchNormalization.from_config(grouped.get_config()).group_size == 2
    with pytest.raises(ValueError, match="whole groups of group_size=2.*cameras_per_batch"):
        grouped(tf.constant(x[:5]), training=True)  # batch size known when traced
    unknown = tf.function(lambda x: grouped(x, training=True),
                          input_signature=[tf.TensorSpec([None, *shape[1:]], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="whole groups of group_size=2"):
        unknown(tf.constant(x[:5]))


def test_grouped_network_builds_grouped_layers_and_deploys_without_them(tiny_model_config):
    from jlml_tf.inference import camera_bn, run_dir

    cfg = dataclasses.replace(tiny_model_config, feature_bn=True, batch_norm_group_size=2)
    training, _ = jlml.build_jlml(cfg)
    layers = camera_bn.batch_norm_layers(training)
    assert layers and all(getattr(l, "group_size", 0) == 2 for l in layers)
    deployed, _ = run_dir.build_deployed(cfg)
    assert all(getattr(l, "group_size", 0) == 0 for l in camera_bn.batch_norm_layers(deployed))
    assert training.count_params() == deployed.count_params()
    with pytest.raises(ValueError, match="batch_norm_group_size"):
        dataclasses.replace(cfg, batch_norm_group_size=-1)
    with pytest.raises(ValueError, match="groups are normalised within each replica"):
        dataclasses.replace(cfg, sync_batch_norm=True)


def test_grouped_gradients_and_bfloat16_match_the_plain_layer_on_each_group():
    grouped = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, group_size=3)
    plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    for layer in (grouped, plain):
        layer.build((None, 4, 2, 3))
        layer.set_weights([np.array([1.5, 0.5, 2.0]), np.array([0.1, -0.2, 0.3]),
                           np.zeros(3), np.ones(3)])
    x = tf.constant(np.random.default_rng(4).normal(1.0, 2.0, (6, 4, 2, 3)), tf.float32)

    def step(layer, x):  # a loss that weighs each output by its input, not by its position
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * x / 10.0 + 0.5 * y * y)
        return y, tape.gradient(loss, [x] + layer.trainable_variables)

    _, g_grouped = step(grouped, x)
    pieces = [step(plain, x[i:i + 3]) for i in (0, 3)]
    # input gradients: each group's own; gamma/beta gradients: the sum over the groups
    np.testing.assert_allclose(g_grouped[0], np.concatenate([p[1][0] for p in pieces]),
                               atol=1e-4)
    for i in (1, 2):
        np.testing.assert_allclose(g_grouped[i], pieces[0][1][i] + pieces[1][1][i], rtol=1e-4,
                                   atol=1e-4)
    # a batch of unknown size takes the moments path: the same outputs as the fused kernel's
    dynamic = tf.function(lambda x: grouped(x, training=True),
                          input_signature=[tf.TensorSpec([None, 4, 2, 3], tf.float32)])
    np.testing.assert_allclose(dynamic(x), grouped(x, training=True), atol=1e-5)
    # mixed bfloat16: the fused kernel per group against the moments path, within bfloat16
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        fused, moments = (FusedBatchNormalization(group_size=3) for _ in range(2))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    half = tf.cast(x, tf.bfloat16)
    y_fused = fused(half, training=True)
    y_moments = tf.function(lambda x: moments(x, training=True), input_signature=[
        tf.TensorSpec([None, 4, 2, 3], tf.bfloat16)])(half)
    assert y_fused.dtype == y_moments.dtype == tf.bfloat16
    assert fused.moving_mean.dtype == "float32"
    np.testing.assert_allclose(tf.cast(y_fused, tf.float32), tf.cast(y_moments, tf.float32),
                               atol=3e-2)
    for a, b in zip(fused.non_trainable_weights, moments.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-2, atol=1e-3)
