"""Evaluate an embedding model on a trial of a data set: features in, protocol metrics out."""
from __future__ import annotations

import os
import pathlib

import keras
import numpy as np
import tensorflow as tf

from jlml_tf.config import ModelConfig
from jlml_tf.data import pipeline
from jlml_tf.data.types import ImageTable, ReidData, Trial
from jlml_tf.evaluation import fit_metric, protocol, report
from jlml_tf.evaluation.metric_learning import LEARNED_METRICS
from jlml_tf.inference import camera_bn
from jlml_tf.modeling import jlml


def embedding_function(embedding_model: keras.Model, flip: bool = False):
    """The deployed embedding as a compiled function: float pixels -> L2-normalised float32.

    flip: test-time augmentation, the normalised sum of the image's and its mirror's embeddings
    (two forward passes; training flips too, so both views are in-distribution)."""
    model = jlml.with_l2_normalization(embedding_model)
    if flip:
        model = jlml.with_flip_test(model)
    return tf.function(lambda x: tf.cast(model(x, training=False), tf.float32),
                       reduce_retracing=True)


def _embed(forward, table: ImageTable, rows: np.ndarray, dim: int, height: int, width: int,
           batch_size: int, verbose: int) -> np.ndarray:
    if len(rows) == 0:
        return np.zeros((0, dim), np.float32)
    bar = keras.utils.Progbar(len(rows), verbose=verbose, unit_name="image")
    features = []
    for images in pipeline.eval_dataset(table, rows, height, width, batch_size):
        features.append(forward(images).numpy())
        bar.add(len(features[-1]))
    return np.concatenate(features)


def extract_features(embedding_model: keras.Model, table: ImageTable, rows: np.ndarray,
                     height: int, width: int, batch_size: int = 64, verbose: int = 1,
                     flip: bool = False) -> np.ndarray:
    """L2-normalised embeddings of `table` rows, in order (the deployed model's output;
    `flip` as in embedding_function)."""
    rows = np.asarray(rows, np.int64)
    forward = embedding_function(embedding_model, flip) if len(rows) else None
    return _embed(forward, table, rows, embedding_model.output.shape[-1], height, width,
                  batch_size, verbose)


def extract_features_by_camera(embedding_model: keras.Model, table: ImageTable,
                               rows: np.ndarray, calibration: dict[int, np.ndarray],
                               height: int, width: int, batch_size: int = 64, verbose: int = 1,
                               flip: bool = False, log=print) -> np.ndarray:
    """extract_features, each camera's images embedded with batch-norm statistics calibrated on
    `calibration[camera]` (camera_bn.Calibrator); a camera with fewer than camera_bn.MIN_IMAGES
    calibration images keeps the trained statistics. The model's trained statistics are
    restored afterwards."""
    rows = np.asarray(rows, np.int64)
    dim = embedding_model.output.shape[-1]
    features = np.zeros((len(rows), dim), np.float32)
    cams = table.camids[rows]
    calibrator = camera_bn.Calibrator(embedding_model)
    forward = embedding_function(embedding_model, flip)
    for cam in np.unique(cams):
        chosen = calibration.get(int(cam), np.zeros(0, np.int64))
        enough = len(chosen) >= camera_bn.MIN_IMAGES
        batches = pipeline.eval_dataset(table, chosen, height, width, batch_size) \
            if enough else []
        with calibrator.calibrated_to(batches) as count:
            if verbose:
                log(f"camera {cam}: {np.sum(cams == cam)} images, batch norm calibrated on "
                    f"{count} images" if count else f"camera {cam}: {len(chosen)} calibration "
                    f"images (fewer than {camera_bn.MIN_IMAGES}), trained statistics kept")
            features[cams == cam] = _embed(forward, table, rows[cams == cam], dim, height,
                                           width, batch_size, verbose)
    return features


def evaluate_trial(embedding_model: keras.Model, data: ReidData, trial: Trial, cfg: ModelConfig,
                   metric: str = "l2", batch_size: int = 64, verbose: int = 1,
                   multi_query_pooling: str = "mean", flip: bool = False) -> dict:
    """Single-query (and multi-query, when the trial has extra query images) metrics."""
    needed = [trial.query, trial.gallery, trial.multi_query]
    if metric in LEARNED_METRICS:
        needed.append(trial.train)
    rows = np.unique(np.concatenate(needed))
    feats = extract_features(embedding_model, data.table, rows, cfg.input_height,
                             cfg.input_width, batch_size, verbose, flip)
    lookup = lambda r: feats[np.searchsorted(rows, r)]  # noqa: E731
    pids, cams = data.table.pids, data.table.camids
    fitted = fit_metric(metric, lookup(trial.train) if metric in LEARNED_METRICS else None,
                        pids[trial.train], cams[trial.train])
    multi = None
    if len(trial.multi_query):
        multi = (lookup(trial.multi_query), pids[trial.multi_query], cams[trial.multi_query])
    return protocol.evaluate(lookup(trial.query), pids[trial.query], cams[trial.query],
                             lookup(trial.gallery), pids[trial.gallery], cams[trial.gallery],
                             metric=fitted, same_camera_junk=data.same_camera_junk,
                             multi_query=multi, multi_query_pooling=multi_query_pooling)


def write_trial_report(trial_dir: str | os.PathLike, results: dict, data: ReidData,
                       trial: Trial) -> dict[str, pathlib.Path]:
    return report.write_report(trial_dir, {"JLML": [results]},
                               title=f"{data.name} / {data.protocol} / {trial.name}")


def write_run_report(run_dir: str | os.PathLike, per_trial: dict[str, dict], data: ReidData,
                     paper: dict | None, paper_key: str) -> str:
    """Mean and std over trials next to the paper's figures; returns the Markdown table."""
    paths = report.write_report(
        run_dir, {"JLML (this run)": list(per_trial.values())}, paper=paper,
        paper_label=f"Paper ({paper_key})", title=f"{data.name} / {data.protocol}",
        extra={"trials": list(per_trial), "dataset": data.name, "protocol": data.protocol})
    return paths["markdown"].read_text() + f"\nWritten to {pathlib.Path(run_dir).resolve()}\n"
