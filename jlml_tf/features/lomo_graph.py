"""LOMO in TensorFlow ops, so a model can carry it: SavedModel, TF Serving and TFLite.

The same features as `lomo.lomo` (NumPy, float64; its docstring describes them) without
Retinex, computed in float32 with ops TFLite has built in (one-hot codes, average pooling for
the window counts, gathers for SILTP's replicated borders). `LomoLayer` wraps it for Keras
models (`jlml.with_linear_map` builds it in front of a fused XQDA map).

float32 moves a few pixels across a quantisation step that float64 leaves on the other side
(a hue or saturation on a level's edge, a grey value .5 from rounding, a neighbour at (1 -+ tau)
times the centre), so a window count may differ by one: every real VIPeR image has a few such
pixels, each LOMO vector stays within a cosine of 0.999 of NumPy's, and the exported VIPeR
model ranked one query of 316 differently (BENCHMARKS.md). `tests/test_lomo_graph.py` checks
equality where no pixel is on a step.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from jlml_tf.features import lomo as lomo_lib
from jlml_tf.features import retinex as retinex_lib


def check_config(cfg: lomo_lib.LomoConfig) -> None:
    if cfg.retinex != retinex_lib.NONE:
        raise ValueError(f"LOMO in the graph has no Retinex: pass retinex={retinex_lib.NONE!r}, "
                         f"not {cfg.retinex!r}")


def _rgb_to_hsv(rgb01: tf.Tensor) -> tf.Tensor:
    """lomo.rgb_to_hsv, the same case order (later cases win ties)."""
    r, g, b = rgb01[..., 0], rgb01[..., 1], rgb01[..., 2]
    v = tf.reduce_max(rgb01, axis=-1)
    delta = v - tf.reduce_min(rgb01, axis=-1)
    coloured = delta > 0
    safe = tf.where(coloured, delta, tf.ones_like(delta))
    zero = tf.zeros_like(v)
    h = tf.where(tf.equal(v, r), (g - b) / safe, zero)
    h = tf.where(tf.equal(v, g), 2.0 + (b - r) / safe, h)
    h = tf.where(tf.equal(v, b), 4.0 + (r - g) / safe, h)
    h = tf.where(coloured, tf.math.floormod(h / 6.0, 1.0), zero)
    s = tf.where(v > 0, delta / tf.where(v > 0, v, tf.ones_like(v)), zero)
    return tf.stack([h, s, v], axis=-1)


def _quantise(values: tf.Tensor, levels: int) -> tf.Tensor:
    """floor(levels x) capped at levels - 1, as float32 levels."""
    return tf.minimum(tf.floor(values * float(levels)), float(levels - 1))


def _pool2(x: tf.Tensor) -> tf.Tensor:
    """2x2 average pooling of [N, H, W, C] (an odd last row or column dropped)."""
    return tf.nn.avg_pool2d(x, 2, 2, "VALID")


def _row_maxima(codes: tf.Tensor, num_bins: int, cfg: lomo_lib.LomoConfig) -> tf.Tensor:
    """Integer codes [N, H, W] -> per row of windows, each bin's largest window count:
    [N, rows * num_bins] (lomo.window_histograms, then lomo.horizontal_max)."""
    onehot = tf.one_hot(tf.cast(codes, tf.int32), num_bins, dtype=tf.float32)
    area = float(cfg.block_size * cfg.block_size)
    counts = tf.round(tf.nn.avg_pool2d(onehot, cfg.block_size, cfg.block_step, "VALID") * area)
    maxima = tf.reduce_max(counts, axis=2)  # [N, rows, bins]
    return tf.reshape(maxima, [-1, maxima.shape[1] * num_bins])


def _log_normalise(counts: tf.Tensor) -> tf.Tensor:
    x = tf.math.log1p(counts)
    norm = tf.sqrt(tf.reduce_sum(tf.square(x), axis=1, keepdims=True))
    return x / tf.where(norm > 0, norm, tf.ones_like(norm))


def _has_windows(height: int, width: int, cfg: lomo_lib.LomoConfig) -> bool:
    return height >= cfg.block_size and width >= cfg.block_size


def _hsv_part(rgb01: tf.Tensor, cfg: lomo_lib.LomoConfig) -> tf.Tensor:
    hsv = _rgb_to_hsv(rgb01)
    levels = tf.stack([_quantise(hsv[..., c], cfg.hsv_bins[c]) for c in range(3)], axis=-1)
    bh, bs, _ = cfg.hsv_bins
    parts = []
    for scale in range(cfg.num_scales):
        height, width = levels.shape[1], levels.shape[2]
        if not _has_windows(height, width, cfg):
            break
        codes = levels[..., 0] + bh * levels[..., 1] + bh * bs * levels[..., 2]
        parts.append(_row_maxima(codes, int(np.prod(cfg.hsv_bins)), cfg))
        if scale + 1 == cfg.num_scales or min(height, width) < 2:
            break
        levels = tf.floor(_pool2(levels))  # pooled levels stay levels, as in the NumPy code
    return _log_normalise(tf.concat(parts, axis=1))


def _siltp(gray: tf.Tensor, radius: int, cfg: lomo_lib.LomoConfig) -> tf.Tensor:
    """lomo.siltp of grey images [N, H, W]: float32 codes; borders replicated by gathering
    clipped indices (TF's pad has no edge mode)."""
    height, width = gray.shape[1], gray.shape[2]
    lower, upper = (1.0 - cfg.tau) * gray, (1.0 + cfg.tau) * gray
    codes = tf.zeros_like(gray)
    for k, (dy, dx) in enumerate(lomo_lib.neighbour_offsets(radius, cfg.num_points)):
        rows = np.clip(np.arange(height) + dy, 0, height - 1)
        cols = np.clip(np.arange(width) + dx, 0, width - 1)
        neighbour = tf.gather(tf.gather(gray, rows, axis=1), cols, axis=2)
        darker = tf.cast(neighbour < lower, tf.float32)
        brighter = tf.cast(neighbour > upper, tf.float32)
        codes = codes + float(3 ** k) * (darker + 2.0 * brighter)
    return codes


def _siltp_part(gray: tf.Tensor, radius: int, cfg: lomo_lib.LomoConfig) -> tf.Tensor | None:
    parts = []
    for scale in range(cfg.num_scales):
        height, width = gray.shape[1], gray.shape[2]
        if width < 2 * radius + 1 or not _has_windows(height, width, cfg):
            break  # as the NumPy code: every later level is smaller still
        parts.append(_row_maxima(_siltp(gray, radius, cfg), 3 ** cfg.num_points, cfg))
        if scale + 1 == cfg.num_scales or min(height, width) < 2:
            break
        gray = _pool2(gray[..., None])[..., 0]
    return _log_normalise(tf.concat(parts, axis=1)) if parts else None


def lomo(images, cfg: lomo_lib.LomoConfig = lomo_lib.LomoConfig(retinex=retinex_lib.NONE)
         ) -> tf.Tensor:
    """LOMO of RGB images [N, height, width, 3] (uint8 or whole values in [0, 255]) of the
    configured size, without Retinex: float32 [N, lomo.feature_dim(cfg)]."""
    check_config(cfg)
    images = tf.convert_to_tensor(images)
    cfg.check_images(images.shape)
    pixels = tf.cast(images, tf.float32)
    weights = lomo_lib.GRAY_WEIGHTS
    gray = tf.round(sum(pixels[..., c] * weights[c] for c in range(3))) / 255.0
    parts = [_hsv_part(pixels / 255.0, cfg)]
    for radius in cfg.radii:
        part = _siltp_part(gray, radius, cfg)
        if part is not None:
            parts.append(part)
    return tf.concat(parts, axis=1)


LAYER_NAME = "lomo"  # the name scope of LomoLayer's ops in a model (TFLite keeps them float)


@keras.saving.register_keras_serializable(package="jlml_tf")
class LomoLayer(keras.layers.Layer):
    """LOMO (no Retinex) of the input pixels as a Keras layer without weights."""

    def __init__(self, lomo_config: dict | None = None, **kwargs):
        kwargs.setdefault("trainable", False)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.lomo_config = dict(lomo_config or {"retinex": retinex_lib.NONE})
        self.cfg = lomo_lib.LomoConfig.from_dict(self.lomo_config)
        check_config(self.cfg)

    def call(self, images):
        return lomo(images, self.cfg)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], lomo_lib.feature_dim(self.cfg))

    def get_config(self):
        return {**super().get_config(), "lomo_config": self.lomo_config}
