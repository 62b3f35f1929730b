"""JLML losses: one softmax cross-entropy per branch, and the selective-feature-learning penalties.

A classifier kernel has shape [features, identities]. Groups are slices along `group_axis`:
axis 0 makes each feature's weights over all identities one group (a row of the kernel).
"""
from __future__ import annotations

import tensorflow as tf

from jlml_tf.config import SparsityConfig
from jlml_tf.modeling import jlml


def _group_reduce_axis(group_axis: int) -> int:
    # A group is a slice at a fixed index of `group_axis`: its members run along the other axis.
    return 1 - group_axis


def group_lasso(kernel: tf.Tensor, group_axis: int = 0) -> tf.Tensor:
    """l2,1 norm: the sum over groups of each group's l2 norm; drives whole groups to zero."""
    kernel = tf.cast(kernel, tf.float32)
    return tf.reduce_sum(tf.norm(kernel, ord="euclidean", axis=_group_reduce_axis(group_axis)))


def exclusive_group_lasso(kernel: tf.Tensor, group_axis: int = 1) -> tf.Tensor:
    """l1,2: the sum over groups of the squared l1 norm; members of a group compete (sparsity
    within each group, e.g. each identity uses few local features when group_axis=1)."""
    kernel = tf.cast(kernel, tf.float32)
    return tf.reduce_sum(tf.square(tf.reduce_sum(tf.abs(kernel), axis=_group_reduce_axis(group_axis))))


def sparsity_penalties(model, cfg: SparsityConfig, feature_dim: int) -> dict[str, tf.Tensor]:
    """The SFL penalty terms (already weighted by their coefficients) for a training model.

    Multi-loss: group LASSO on the global classifier, exclusive LASSO on the local one. UniLoss:
    the same penalties on the global and local row blocks of the single classifier.
    """
    heads = jlml.classifier_layers(model)
    global_kernel = local_kernel = None
    if jlml.UNI_CLASSIFIER in heads:
        kernel = heads[jlml.UNI_CLASSIFIER].kernel
        global_kernel, local_kernel = kernel[:feature_dim], kernel[feature_dim:]
    else:
        if jlml.GLOBAL_CLASSIFIER in heads:
            global_kernel = heads[jlml.GLOBAL_CLASSIFIER].kernel
        if jlml.LOCAL_CLASSIFIER in heads:
            local_kernel = heads[jlml.LOCAL_CLASSIFIER].kernel
    terms = {}
    if cfg.global_group_lasso and global_kernel is not None:
        terms["global_group_lasso"] = cfg.global_group_lasso * group_lasso(
            global_kernel, cfg.global_group_axis)
    if cfg.local_exclusive_lasso and local_kernel is not None:
        terms["local_exclusive_lasso"] = cfg.local_exclusive_lasso * exclusive_group_lasso(
            local_kernel, cfg.local_group_axis)
    return terms


def per_example_cross_entropy(labels: tf.Tensor, logits: dict[str, tf.Tensor],
                              label_smoothing: float = 0.0,
                              mixup: tuple[tf.Tensor, tf.Tensor] | None = None
                              ) -> dict[str, tf.Tensor]:
    """Softmax cross-entropy of every head, per example (the caller averages over the global
    batch, which keeps the loss right under tf.distribute). `mixup` = (partner labels, weights
    [B]) blends each target as mixup.mix blended the images: weight x labels + (1 - weight) x
    partner labels."""
    out = {}
    for name, head_logits in logits.items():
        num_classes = tf.shape(head_logits)[-1]
        onehot = tf.one_hot(labels, num_classes, dtype=tf.float32)
        if mixup is not None:
            partners, weights = mixup
            weights = tf.cast(weights, tf.float32)[:, None]
            onehot = weights * onehot + (1.0 - weights) * tf.one_hot(partners, num_classes,
                                                                     dtype=tf.float32)
        if label_smoothing:
            onehot = onehot * (1.0 - label_smoothing) + label_smoothing / tf.cast(num_classes, tf.float32)
        out[name] = tf.nn.softmax_cross_entropy_with_logits(onehot, tf.cast(head_logits, tf.float32))
    return out


def batch_hard_triplet(features: tf.Tensor, labels: tf.Tensor, margin: float) -> tf.Tensor:
    """Batch-hard triplet loss per example (Hermans et al., 2017): for each anchor, its
    farthest same-identity and its nearest other-identity image in the batch, Euclidean
    distance, hinge max(0, d_ap - d_an + margin); margin 0 gives the soft margin
    log(1 + exp(d_ap - d_an)). An anchor without a positive or a negative in the batch scores 0.
    """
    x = tf.cast(features, tf.float32)
    distances = pairwise_distances(x)
    same = tf.equal(labels[:, None], labels[None, :])
    positive = tf.logical_and(same, tf.logical_not(tf.eye(tf.shape(x)[0], dtype=tf.bool)))
    negative = tf.logical_not(same)
    hardest_positive = tf.reduce_max(tf.where(positive, distances, 0.0), axis=1)
    hardest_negative = tf.reduce_min(tf.where(negative, distances, tf.reduce_max(distances)), axis=1)
    gap = hardest_positive - hardest_negative
    loss = tf.nn.softplus(gap) if margin == 0 else tf.nn.relu(gap + margin)
    valid = tf.logical_and(tf.reduce_any(positive, axis=1), tf.reduce_any(negative, axis=1))
    return tf.where(valid, loss, 0.0)


def pairwise_distances(x: tf.Tensor) -> tf.Tensor:
    """Euclidean distances [B, B] between the rows of x [B, d], in float32."""
    x = tf.cast(x, tf.float32)
    squared = tf.reduce_sum(tf.square(x), axis=1)
    gram = tf.matmul(x, x, transpose_b=True)
    # the epsilon keeps the gradient of sqrt finite on the zero diagonal
    return tf.sqrt(tf.maximum(squared[:, None] + squared[None, :] - 2.0 * gram, 0.0) + 1e-12)


def weight_decay(model, coefficient: float) -> tf.Tensor:
    """L2 weight decay on conv and dense kernels (not BN, biases or the SFL-regularised heads'
    sparsity terms, which are separate)."""
    kernels = [w for w in model.trainable_weights if w.path.endswith("kernel")]
    if not coefficient or not kernels:
        return tf.constant(0.0)
    return coefficient * 0.5 * tf.add_n([tf.reduce_sum(tf.square(tf.cast(k, tf.float32))) for k in kernels])
