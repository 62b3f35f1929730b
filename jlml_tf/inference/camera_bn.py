"""Per-camera batch-norm statistics: a test-time calibration with unlabelled images.

Every camera has its own light, colour cast and viewpoint, so a layer's activations are shifted
per camera. Re-estimating every batch-norm layer's moving mean and variance from images of one
camera, and embedding that camera's images with them, removes that shift before the features
are compared (camera-based batch normalisation, Zhuang et al., ECCV 2020; AdaBN, Li et al.,
2016, per domain). No label and no weight other than the moving statistics changes.

    with calibrated_to(embedding_model, batches_of_camera_images):
        features = embed(images_of_that_camera)
    # the trained statistics are back here
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import numpy as np

from jlml_tf.config import MIN_CAMERA_IMAGES

SOURCES = ("off", "train", "test")  # where each camera's batch-norm statistics come from
MIN_IMAGES = MIN_CAMERA_IMAGES  # fewer calibration images: the trained statistics are kept


def calibration_rows(source: str, table, trial, *, seed: int = 0) -> dict[int, np.ndarray]:
    """Camera id -> the rows whose images calibrate that camera's batch norm: the trial's
    training images of the camera ("train": no test image used, labels unused) or the trial's
    test images (query, gallery, multi-query) of the camera ("test": transductive, as a
    deployed camera calibrated on its own recent footage; the training split is never pooled
    in, also when its features are embedded for a learned metric).

    Each camera's rows are shuffled (`seed`): the tables list a person's images together, and
    batches of a few identities would each see a fraction of the between-person spread."""
    if source not in SOURCES[1:]:
        raise ValueError(f"camera batch-norm source {source!r}: expected one of "
                         f"{', '.join(SOURCES[1:])}")
    pool = np.asarray(trial.train, np.int64) if source == "train" else np.unique(
        np.concatenate([trial.query, trial.gallery, trial.multi_query]).astype(np.int64))
    cams = table.camids[pool]
    rng = np.random.default_rng(seed)
    return {int(c): rng.permutation(pool[cams == c]) for c in np.unique(cams)}


def batch_norm_layers(model) -> list:
    """Every batch-norm layer of `model`, nested models included (subclasses such as the fused
    one too), each once."""
    import keras

    found, seen, todo = [], set(), list(model.layers)
    while todo:
        layer = todo.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        todo.extend(getattr(layer, "layers", []))
    return found


def _statistics(layers) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.array(l.moving_mean), np.array(l.moving_variance)) for l in layers]


def _restore(layers, saved) -> None:
    for layer, (mean, variance) in zip(layers, saved):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(variance)


def _pooled(mean_sum: np.ndarray, square_sum: np.ndarray, count: int):
    mean = mean_sum / count
    return mean, np.maximum(square_sum / count - np.square(mean), 0.0)


class Calibrator:
    """Re-estimates a model's batch-norm statistics; build one per model and reuse it (its
    forward pass is compiled once)."""

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        self.layers = batch_norm_layers(model)
        if not self.layers:
            raise ValueError(f"{model.name}: no batch-norm layer to calibrate (--camera_bn and "
                             "--camera_bn_images need a model with batch normalisation)")
        # Momentum 0 while tracing: each batch's own statistics land in the moving ones, read
        # after the step (the layers read their momentum when the graph is built). Per-camera
        # training groups (group_size) off: a calibration batch is one camera's images.
        kept = [(l.momentum, getattr(l, "group_size", 0)) for l in self.layers]
        for layer in self.layers:
            layer.momentum = 0.0
            if hasattr(layer, "group_size"):
                layer.group_size = 0
        try:
            step = tf.function(lambda x: model(x, training=True), reduce_retracing=True)
            self._concrete = step.get_concrete_function(
                tf.TensorSpec([None, *model.input.shape[1:]], tf.float32))
        finally:
            for layer, (momentum, group_size) in zip(self.layers, kept):
                layer.momentum = momentum
                if hasattr(layer, "group_size"):
                    layer.group_size = group_size

    def calibrate(self, batches: Iterable) -> int:
        """Sets every batch-norm layer's moving statistics to its statistics over all of
        `batches`; returns the number of images.

        The mean is the size-weighted average of the batch means; the variance is the
        variance over all images, E[var_b + mean_b^2] - mean^2, not the average of the batch
        variances, which would miss the spread between batches ("precise BN", Wu & Johnson,
        2021). The model runs in training mode, so each layer sees its inputs normalised the
        way it will see them afterwards; nothing but the moving statistics changes (the model
        must hold no dropout or other training-only randomness before its output). No batch:
        the statistics stay as they are."""
        import tensorflow as tf

        saved = _statistics(self.layers)
        sums = [(np.zeros_like(m, np.float64), np.zeros_like(v, np.float64)) for m, v in saved]
        seen = 0
        try:
            for images in batches:
                size = int(images.shape[0])
                if size == 0:
                    continue
                self._concrete(tf.cast(images, tf.float32))
                for (mean_sum, square_sum), (mean, variance) in zip(sums,
                                                                    _statistics(self.layers)):
                    mean_sum += size * mean
                    square_sum += size * (variance + np.square(mean, dtype=np.float64))
                seen += size
        except BaseException:
            _restore(self.layers, saved)  # not one batch's statistics
            raise
        _restore(self.layers, saved if not seen else [_pooled(m, s, seen) for m, s in sums])
        return seen

    @contextlib.contextmanager
    def calibrated_to(self, batches: Iterable) -> Iterator[int]:
        """Within the block the model's batch-norm statistics are those of `batches`; the
        trained ones come back afterwards, also on an error. Yields the number of images."""
        saved = _statistics(self.layers)
        try:
            yield self.calibrate(batches)
        finally:
            _restore(self.layers, saved)


def calibrate(model, batches: Iterable) -> int:
    """Calibrator(model).calibrate(batches), for a single calibration."""
    return Calibrator(model).calibrate(batches)


def calibrated_to(model, batches: Iterable):
    """Calibrator(model).calibrated_to(batches), for a single calibration."""
    return Calibrator(model).calibrated_to(batches)
