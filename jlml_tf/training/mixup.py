"""Mixup inside the training step (Zhang et al., ICLR 2018): each image blended with a partner.

With the LOMO + XQDA teacher on, this is distillation as function matching (Beyer et al., CVPR
2022): the teacher scores the blended pixels the student sees, so the student is taught the
teacher's distances on images the teacher was not fitted on, where on the split's own images
it only repeats the labels (docs/cpu_recipe.md, section 40). The cross-entropy takes the blend
of the two images' labels in the same proportion. On VIPeR's distilled fine-tuning, alpha = 1
lowered R1 on the two splits tried (docs/cpu_recipe.md section 41), so it is off by default.

Partners are drawn within groups of consecutive images (the camera samplers' one-camera groups),
so per-camera batch norm still sees one camera per group. The draw is a function of the seed it
is given, so a resumed run blends as the uninterrupted one would.
"""
from __future__ import annotations

import tensorflow as tf


# Folded into the step's key so mixup's draws differ from the input pipeline's, which are
# keyed by (seed, epoch) and the image's index.
STREAM = 0x6D6978  # "mix"


def problem(triplet_weight: float, teacher_folds: int, jit_compile: bool) -> str | None:
    """Why mixup cannot go with these settings, or None: a blended image has two identities,
    so it has no positives to mine and no map of a cross-fitted teacher that is blind to it;
    XLA has no kernel for the stateless gamma draws of its weights."""
    if jit_compile:
        return "XLA cannot compile the weights' gamma draws: set --nojit_compile"
    if triplet_weight:
        return "a blended image has no triplet positives: set --triplet_weight=0"
    if teacher_folds > 1:
        return ("no cross-fitted map is blind to both of a blend's identities: set "
                "--distill_lomo_folds=1")
    return None


def step_key(seed: int, step: tf.Tensor, replica: tf.Tensor) -> tf.Tensor:
    """The stateless seed of one replica's draws at one optimiser step: a resumed run blends
    as an uninterrupted one would, and replicas draw differently."""
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    return tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(key, STREAM), replica)


def mix(images: tf.Tensor, labels: tf.Tensor, alpha: float, seed: tf.Tensor,
        group_size: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(blended images, the partners' labels, each image's own weight lambda [B]).

    Image i becomes lambda_i x_i + (1 - lambda_i) x_p(i), lambda_i ~ Beta(alpha, alpha) and p a
    random permutation within each group of `group_size` consecutive images (so p(i) may be i).
    `seed` is a stateless seed, shape [2]; the batch must be whole groups.
    """
    batch = tf.shape(images)[0]
    tf.debugging.assert_equal(batch % group_size, 0,
                              message=f"mixup: the batch is not whole groups of {group_size}")
    seeds = tf.random.experimental.stateless_split(seed, 2)
    weights = beta(seeds[0], alpha, [batch])
    noise = tf.random.stateless_uniform([batch // group_size, group_size], seeds[1])
    starts = tf.range(0, batch, group_size)[:, None]
    partners = tf.reshape(tf.argsort(noise, axis=1) + starts, [-1])
    lam = tf.cast(weights, images.dtype)[:, None, None, None]
    blended = lam * images + (1.0 - lam) * tf.gather(images, partners)
    return blended, tf.gather(labels, partners), weights


def beta(seed: tf.Tensor, alpha: float, shape) -> tf.Tensor:
    """Beta(alpha, alpha) samples as sigmoid(log G_a - log G_b), G ~ Gamma(alpha) (TF has no
    stateless Beta). log G = log G' + log(U) / alpha with G' ~ Gamma(alpha + 1) and U uniform,
    so small alphas, whose gammas underflow to 0, still give weights near 0 or 1."""
    seeds = tf.random.experimental.stateless_split(seed, 4)

    def log_gamma(gamma_seed, uniform_seed):
        shifted = tf.random.stateless_gamma(shape, gamma_seed, alpha + 1.0)
        uniform = tf.random.stateless_uniform(shape, uniform_seed, minval=1e-30, maxval=1.0)
        return tf.math.log(shifted) + tf.math.log(uniform) / alpha

    return tf.sigmoid(log_gamma(seeds[0], seeds[1]) - log_gamma(seeds[2], seeds[3]))
