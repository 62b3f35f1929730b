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

SOURCES = ("off", "train", "test")  # where each camera's batch-norm statistics come from


def calibration_rows(source: str, table, trial, rows: np.ndarray) -> dict[int, np.ndarray]:
    """Camera id -> the rows whose images calibrate that camera's batch norm: the trial's
    training images of the camera ("train": no test image used, labels unused) or the embedded
    images of the camera themselves ("test": transductive, as a deployed camera calibrated on
    its own recent footage)."""
    if source not in SOURCES[1:]:
        raise ValueError(f"camera batch-norm source {source!r}: expected one of "
                         f"{', '.join(SOURCES[1:])}")
    pool = np.asarray(trial.train if source == "train" else rows, np.int64)
    cams = table.camids[pool]
    return {int(c): pool[cams == c] for c in np.unique(cams)}


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


def calibrate(model, batches: Iterable) -> int:
    """Sets every batch-norm layer's moving statistics to the average of its batch statistics
    over `batches` (each weighted by its size), in one pass; returns the number of images.

    The model runs in training mode, so each layer sees its inputs normalised the way it will
    see them afterwards ("precise BN"); nothing but the moving statistics changes (the model
    must hold no dropout or other training-only randomness before its output). No batch: the
    statistics stay as they are."""
    layers = batch_norm_layers(model)
    if not layers:
        raise ValueError(f"{model.name}: no batch-norm layer to calibrate")
    momenta = [l.momentum for l in layers]
    seen = 0
    try:
        for images in batches:
            size = int(images.shape[0])
            if size == 0:
                continue
            for layer in layers:  # new = old * m + batch * (1 - m): a running mean by size
                layer.momentum = seen / (seen + size)
            model(images, training=True)
            seen += size
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return seen


@contextlib.contextmanager
def calibrated_to(model, batches: Iterable) -> Iterator[int]:
    """Within the block the model's batch-norm statistics are those of `batches`; the trained
    ones come back afterwards, also on an error. Yields the number of calibration images."""
    layers = batch_norm_layers(model)
    saved = _statistics(layers)
    try:
        yield calibrate(model, batches)
    finally:
        _restore(layers, saved)
