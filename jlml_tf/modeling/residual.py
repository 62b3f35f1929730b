"""Bottleneck residual units (He et al. 2016), the building block of every JLML stream.

A unit can be IBN-a (Pan et al., ECCV 2018, "IBN-Net"): the batch norm after its first 1x1
convolution normalises half of the channels per image (instance norm) and half over the batch.
Instance norm removes each image's contrast and colour cast, the appearance that changes from
camera to camera, while the batch-normed half keeps what tells people apart.
"""
from __future__ import annotations

import keras
from keras import layers

from jlml_tf.modeling.fused_batch_norm import FusedBatchNormalization


def batch_norm(name, bn_momentum=0.9, sync_bn=False, fused_bn=False, bn_group_size=0):
    """A batch-norm layer; `bn_group_size` > 0 normalises each group of that many consecutive
    training images on its own (FusedBatchNormalization)."""
    if fused_bn or bn_group_size:
        return FusedBatchNormalization(momentum=bn_momentum, epsilon=1e-5, synchronized=sync_bn,
                                       group_size=bn_group_size, name=name)
    return layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-5, synchronized=sync_bn,
                                     name=name)


def conv_bn(x, filters, kernel_size, strides, name, activation=True, bn_momentum=0.9,
            sync_bn=False, fused_bn=False, instance_channels=0, bn_group_size=0):
    """Conv, batch norm, ReLU; the first `instance_channels` channels get instance norm instead."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    bn = batch_norm(f"{name}_bn", bn_momentum, sync_bn, fused_bn, bn_group_size)
    if instance_channels:
        per_image, per_batch = x[..., :instance_channels], x[..., instance_channels:]
        # groups=-1: one group per channel, i.e. instance norm (with a learned scale and shift).
        per_image = layers.GroupNormalization(groups=-1, epsilon=1e-5, name=f"{name}_in")(per_image)
        x = layers.Concatenate(name=f"{name}_ibn")([per_image, bn(per_batch)])
    else:
        x = bn(x)
    if activation:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def bottleneck_unit(x, mid_filters, strides, expansion, name, bn_momentum=0.9, sync_bn=False,
                    fused_bn=False, ibn=False, bn_group_size=0):
    """1x1 reduce, 3x3 (strided), 1x1 expand; projection shortcut when the shape changes.
    `ibn`: IBN-a, instance norm on half of the 1x1 reduction's channels."""
    out_filters = mid_filters * expansion
    kw = dict(bn_momentum=bn_momentum, sync_bn=sync_bn, fused_bn=fused_bn,
              bn_group_size=bn_group_size)
    shortcut = x
    if strides != 1 or x.shape[-1] != out_filters:
        shortcut = conv_bn(x, out_filters, 1, strides, f"{name}_proj", activation=False, **kw)
    y = conv_bn(x, mid_filters, 1, 1, f"{name}_a", instance_channels=mid_filters // 2 if ibn else 0,
                **kw)
    y = conv_bn(y, mid_filters, 3, strides, f"{name}_b", **kw)
    y = conv_bn(y, out_filters, 1, 1, f"{name}_c", activation=False, **kw)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def residual_stages(x, widths, units_per_stage, strides, expansion, name, bn_momentum=0.9,
                    sync_bn=False, fused_bn=False, ibn_stages=0, bn_group_size=0):
    """The stages in order; the units of the first `ibn_stages` stages are IBN-a."""
    for stage, (width, units, stride) in enumerate(zip(widths, units_per_stage, strides)):
        for unit in range(units):
            x = bottleneck_unit(x, width, stride if unit == 0 else 1, expansion,
                                f"{name}_s{stage + 1}u{unit + 1}", bn_momentum, sync_bn, fused_bn,
                                ibn=stage < ibn_stages, bn_group_size=bn_group_size)
    return x


def stem(x, filters, name, bn_momentum=0.9, sync_bn=False, fused_bn=False, bn_group_size=0):
    """conv 3x3/1, BN, ReLU, max-pool 3x3/2: the shared low-level layers."""
    x = conv_bn(x, filters, 3, 1, name, bn_momentum=bn_momentum, sync_bn=sync_bn,
                fused_bn=fused_bn, bn_group_size=bn_group_size)
    return layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)


@keras.saving.register_keras_serializable(package="jlml")
class HorizontalStripes(layers.Layer):
    """Cuts a feature map into m horizontal stripes; row bounds round(i*H/m) handle any H."""

    def __init__(self, num_stripes, **kwargs):
        super().__init__(**kwargs)
        self.num_stripes = num_stripes

    def bounds(self, height):
        return [round(i * height / self.num_stripes) for i in range(self.num_stripes + 1)]

    def call(self, x):
        b = self.bounds(x.shape[1])
        return [x[:, b[i]:b[i + 1]] for i in range(self.num_stripes)]

    def compute_output_shape(self, input_shape):
        b = self.bounds(input_shape[1])
        return [(input_shape[0], b[i + 1] - b[i], *input_shape[2:]) for i in range(self.num_stripes)]

    def get_config(self):
        return {**super().get_config(), "num_stripes": self.num_stripes}
