"""SFL penalties and multi-loss cross-entropy checked against NumPy on random matrices."""
import numpy as np
import pytest
import tensorflow as tf

from jlml_tf.training import losses
from jlml_tf.config import ModelConfig, SparsityConfig
from jlml_tf.modeling import jlml

RNG = np.random.default_rng(42)


def numpy_group_lasso(w, group_axis):
    groups = w if group_axis == 0 else w.T  # one row per group
    norms = np.sqrt((groups ** 2).sum(axis=1))
    grad_groups = groups / norms[:, None]
    return norms.sum(), (grad_groups if group_axis == 0 else grad_groups.T)


def numpy_exclusive_lasso(w, group_axis):
    groups = w if group_axis == 0 else w.T
    l1 = np.abs(groups).sum(axis=1)
    grad_groups = 2 * l1[:, None] * np.sign(groups)
    return (l1 ** 2).sum(), (grad_groups if group_axis == 0 else grad_groups.T)


def value_and_grad(fn, w, axis):
    var = tf.Variable(w)
    with tf.GradientTape() as tape:
        value = fn(var, axis)
    return value.numpy(), tape.gradient(value, var).numpy()


@pytest.mark.parametrize("axis", [0, 1])
def test_group_lasso_value_and_gradient(axis):
    w = RNG.normal(size=(7, 5)).astype("float64")
    value, grad = value_and_grad(losses.group_lasso, w, axis)
    expected_value, expected_grad = numpy_group_lasso(w, axis)
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5)


@pytest.mark.parametrize("axis", [0, 1])
def test_exclusive_lasso_value_and_gradient(axis):
    w = RNG.normal(size=(6, 9)).astype("float64")
    value, grad = value_and_grad(losses.exclusive_group_lasso, w, axis)
    expected_value, expected_grad = numpy_exclusive_lasso(w, axis)
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5)


def test_group_lasso_on_hand_made_matrix():
    w = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    assert losses.group_lasso(w, 0).numpy() == pytest.approx(5.0 + 0.0 + 1.0)
    assert losses.exclusive_group_lasso(w, 1).numpy() == pytest.approx(4.0 ** 2 + 4.0 ** 2)


def test_penalties_pick_the_right_heads(tiny_model_config):
    model, _ = jlml.build_jlml(tiny_model_config)
    cfg = SparsityConfig(global_group_lasso=0.5, local_exclusive_lasso=0.25)
    terms = losses.sparsity_penalties(model, cfg, tiny_model_config.feature_dim)
    g = model.get_layer(jlml.GLOBAL_CLASSIFIER).kernel.numpy()
    l = model.get_layer(jlml.LOCAL_CLASSIFIER).kernel.numpy()
    assert terms["global_group_lasso"].numpy() == pytest.approx(0.5 * numpy_group_lasso(g, 0)[0], rel=1e-5)
    assert terms["local_exclusive_lasso"].numpy() == pytest.approx(0.25 * numpy_exclusive_lasso(l, 1)[0], rel=1e-5)


def test_uniloss_penalties_use_row_blocks(tiny_model_config):
    cfg = ModelConfig.from_dict({**tiny_model_config.to_dict(), "loss_mode": "uni"})
    model, _ = jlml.build_jlml(cfg)
    terms = losses.sparsity_penalties(model, SparsityConfig(1.0, 0, 1.0, 1), cfg.feature_dim)
    k = model.get_layer(jlml.UNI_CLASSIFIER).kernel.numpy()
    assert terms["global_group_lasso"].numpy() == pytest.approx(numpy_group_lasso(k[:16], 0)[0], rel=1e-5)
    assert terms["local_exclusive_lasso"].numpy() == pytest.approx(numpy_exclusive_lasso(k[16:], 1)[0], rel=1e-5)


def test_zero_coefficient_disables_penalty(tiny_model_config):
    model, _ = jlml.build_jlml(tiny_model_config)
    assert losses.sparsity_penalties(model, SparsityConfig(0.0, 0, 0.0, 1), 16) == {}


def test_per_branch_cross_entropy_matches_numpy():
    logits = {"global": RNG.normal(size=(4, 3)).astype("float32"),
              "local": RNG.normal(size=(4, 3)).astype("float32")}
    labels = np.array([0, 2, 1, 2])
    out = losses.per_example_cross_entropy(tf.constant(labels), {k: tf.constant(v) for k, v in logits.items()})
    for name, z in logits.items():
        log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        np.testing.assert_allclose(out[name].numpy(), -log_softmax[np.arange(4), labels], rtol=1e-5)


def test_label_smoothing_raises_loss_of_confident_prediction():
    logits = {"g": tf.constant([[10.0, 0.0, 0.0]])}
    plain = losses.per_example_cross_entropy(tf.constant([0]), logits)["g"].numpy()
    smooth = losses.per_example_cross_entropy(tf.constant([0]), logits, label_smoothing=0.1)["g"].numpy()
    assert smooth > plain


def test_bad_group_axis_is_rejected():
    with pytest.raises(ValueError, match="global_group_axis"):
        SparsityConfig(global_group_axis=2)


def _kernels_and_others(model):
    """Conv and dense kernels by layer type (not by variable name), and every other trainable
    variable (batch-norm gamma/beta, dense biases)."""
    import keras

    kernels, others = [], []
    for layer in model._flatten_layers(include_self=False):
        for w in layer.trainable_weights:
            is_kernel = isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) \
                and w is layer.kernel
            (kernels if is_kernel else others).append(w)
    return kernels, others


@pytest.mark.parametrize("fused_batch_norm", [True, False])
def test_weight_decay_is_half_the_squared_norm_of_kernels_only(tiny_model_config,
                                                               fused_batch_norm):
    cfg = ModelConfig.from_dict({**tiny_model_config.to_dict(), "feature_bn": True,
                                 "fused_batch_norm": fused_batch_norm, "num_stripes": 4})
    model, _ = jlml.build_jlml(cfg)
    kernels, others = _kernels_and_others(model)
    assert len(kernels) == 37 + 4 and len(others) == 2 * 39 + 4  # conv + dense; BN + biases
    assert {id(w) for w in kernels + others} == {id(w) for w in model.trainable_weights}
    # Known values: kernels 0.5 and 0.25 alternately, everything else large.
    for i, w in enumerate(kernels):
        w.assign(np.full(w.shape, 0.5 if i % 2 else 0.25, np.float32))
    for w in others:
        w.assign(np.full(w.shape, 3.0, np.float32))
    expected = sum(np.prod(w.shape) * (0.25 if i % 2 else 0.0625) for i, w in enumerate(kernels))
    assert losses.weight_decay(model, 1e-3).numpy() == pytest.approx(1e-3 * 0.5 * expected,
                                                                     rel=1e-6)
    # Changing a BN gamma/beta or a bias changes nothing; the gradient is coefficient x kernel
    # on kernels and absent (or zero) everywhere else.
    for w in others:
        w.assign(np.full(w.shape, -7.0, np.float32))
    assert losses.weight_decay(model, 1e-3).numpy() == pytest.approx(1e-3 * 0.5 * expected,
                                                                     rel=1e-6)
    with tf.GradientTape() as tape:
        decay = losses.weight_decay(model, 2.0)
    grads = tape.gradient(decay, kernels + others)
    for w, g in zip(kernels, grads[:len(kernels)]):
        np.testing.assert_allclose(g.numpy(), 2.0 * w.numpy(), rtol=1e-6, err_msg=w.path)
    assert all(g is None or not np.any(g.numpy()) for g in grads[len(kernels):])


def test_weight_decay_on_random_kernels_and_zero_coefficient(tiny_model_config):
    model, _ = jlml.build_jlml(tiny_model_config)
    kernels, _ = _kernels_and_others(model)
    expected = 0.5 * sum((w.numpy().astype(np.float64) ** 2).sum() for w in kernels)
    assert losses.weight_decay(model, 5e-4).numpy() == pytest.approx(5e-4 * expected, rel=1e-5)
    assert losses.weight_decay(model, 0.0).numpy() == 0.0


def test_batch_hard_triplet_by_hand():
    # points on a line: person 0 at 0 and 3, person 1 at 1 and 5, person 2 alone at 10
    features = tf.constant([[0.0], [3.0], [1.0], [5.0], [10.0]])
    labels = tf.constant([0, 0, 1, 1, 2])
    got = losses.batch_hard_triplet(features, labels, margin=0.5).numpy()
    # anchor 0: d_ap 3, d_an 1 -> 2.5; anchor 3: d_ap 3, d_an 2 -> 1.5;
    # anchor 1: d_ap 4, d_an 1 -> 3.5; anchor 5: d_ap 4, d_an 2 -> 2.5; person 2 has no positive
    np.testing.assert_allclose(got, [2.5, 1.5, 3.5, 2.5, 0.0], atol=1e-5)
    soft = losses.batch_hard_triplet(features, labels, margin=0.0).numpy()
    np.testing.assert_allclose(soft[:4], np.log1p(np.exp([2.0, 1.0, 3.0, 2.0])), atol=1e-5)
    assert soft[4] == 0.0


def test_batch_hard_triplet_is_zero_when_people_are_apart_and_has_finite_gradients():
    features = tf.Variable([[0.0, 0.0], [0.0, 0.1], [9.0, 9.0], [9.0, 9.0]])
    labels = tf.constant([4, 4, 7, 7])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(losses.batch_hard_triplet(features, labels, margin=0.3))
    assert float(loss) == 0.0
    assert np.isfinite(tape.gradient(loss, features).numpy()).all()  # identical points included
