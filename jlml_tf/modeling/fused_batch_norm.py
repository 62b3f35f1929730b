"""Batch normalisation that trains through TensorFlow's fused kernel.

Keras 3's BatchNormalization computes moments and the normalisation as separate ops, which on a
CPU makes several passes over every activation; at JLML's high-resolution early stages that is
memory-bound work comparable to the convolutions. `tf.nn.fused_batch_norm` (oneDNN on CPU, cuDNN
on GPU) does it in one pass. Same variables, same formula, same moving-average update: a model
built with it loads the plain model's checkpoints and computes the same outputs (see the test).
Inference and every case the fused kernel does not cover use the parent's code.

`group_size` > 0 (training only): the batch is consecutive groups of that many images, each
normalised with its own statistics (camera-based batch norm, Zhuang et al., ECCV 2020: with
`--sampler=camera` or `camera_pairs` and `--cameras_per_batch`, each group holds one
camera's images). The moving statistics average the groups' ones, the within-camera
statistics that `camera_bn` calibrates.
"""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="jlml_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):

    def __init__(self, *args, group_size: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.group_size = int(group_size)

    def get_config(self):
        return {**super().get_config(), "group_size": self.group_size}

    def _fused_applies(self, inputs, training, mask) -> bool:
        return (bool(training) and self.trainable and mask is None and not self.synchronized
                and not self.renorm and len(inputs.shape) == 4
                and self.axis in (-1, 3) and keras.backend.backend() == "tensorflow")

    def call(self, inputs, training=None, mask=None):
        if self.group_size and training and self.trainable:
            if self._fused_applies(inputs, training, mask) and inputs.shape[0] is not None:
                return self._fused_groups(inputs)
            return self._grouped(inputs)
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        y, mean, variance = self._fused(inputs)
        self._update_moving(mean, variance)
        return tf.cast(y, self.compute_dtype)

    def _fused(self, inputs):
        """(normalised, mean, biased variance) through the fused kernel."""
        channels = inputs.shape[-1]
        gamma = self.gamma if self.scale else tf.ones([channels], "float32")
        beta = self.beta if self.center else tf.zeros([channels], "float32")
        # Half-precision activations go in as they are: the kernel accumulates the statistics in
        # float32 itself, so no extra cast passes over the activations are needed.
        x = inputs if inputs.dtype in (tf.bfloat16, tf.float16) else tf.cast(inputs, "float32")
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, tf.cast(gamma, "float32"), tf.cast(beta, "float32"), epsilon=self.epsilon,
            is_training=True)
        # The kernel returns the unbiased (n - 1) variance; Keras averages the biased one.
        n = tf.cast(tf.size(x, out_type=tf.int64) // channels, "float32")
        return y, mean, variance * (n - 1.0) / n

    def _update_moving(self, mean, variance):
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum))

    def _whole_groups_message(self) -> str:
        return (f"{self.name}: a training batch must be whole groups of group_size="
                f"{self.group_size} images (--batch_size / --cameras_per_batch)")

    def _check_groups(self, batch: int):
        if batch % self.group_size:
            raise ValueError(f"{self._whole_groups_message()}; got {batch}")

    def _fused_groups(self, inputs):
        """The fused kernel on each group of a batch of known size: one pass per group."""
        self._check_groups(inputs.shape[0])
        outputs = [self._fused(part)
                   for part in tf.split(inputs, inputs.shape[0] // self.group_size)]
        self._update_moving(tf.reduce_mean(tf.stack([o[1] for o in outputs]), 0),
                            tf.reduce_mean(tf.stack([o[2] for o in outputs]), 0))
        return tf.cast(tf.concat([o[0] for o in outputs], 0), self.compute_dtype)

    def _grouped(self, inputs):
        """Each group of `group_size` consecutive images normalised with its own statistics."""
        if self.axis not in (-1, len(inputs.shape) - 1):
            raise ValueError(f"{self.name}: group_size needs channels-last inputs")
        if inputs.shape[0] is not None:
            self._check_groups(inputs.shape[0])  # XLA drops the assert below
        shape = tf.shape(inputs)
        check = tf.debugging.assert_equal(shape[0] % self.group_size, 0,
                                          message=self._whole_groups_message())
        with tf.control_dependencies([check]):
            groups = tf.reshape(tf.cast(inputs, "float32"),
                                tf.concat([[-1, self.group_size], shape[1:]], 0))
        axes = list(range(1, len(inputs.shape)))  # within a group: all but the channels
        mean, variance = tf.nn.moments(groups, axes=axes, keepdims=True)
        scale = tf.math.rsqrt(variance + self.epsilon)
        if self.scale:
            scale = scale * tf.cast(self.gamma, "float32")
        offset = -mean * scale
        if self.center:
            offset = offset + tf.cast(self.beta, "float32")
        y = groups * scale + offset  # one pass over the activations: gamma folded in
        channels = inputs.shape[-1]
        group_mean = tf.reduce_mean(tf.reshape(mean, [-1, channels]), 0)
        group_variance = tf.reduce_mean(tf.reshape(variance, [-1, channels]), 0)
        self._update_moving(group_mean, group_variance)
        return tf.cast(tf.reshape(y, shape), self.compute_dtype)
