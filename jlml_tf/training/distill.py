"""Distillation from LOMO + XQDA: the hand-crafted matcher's distances as a training signal.

Why: on VIPeR's 632 training images JLML matched by L2 stays 14-17 R1 below LOMO + XQDA fitted on
the same images (docs/cpu_recipe.md sections 17-35), and fusing the two in one XQDA beats both
(section 36): LOMO's colour and texture histograms over horizontal strips carry what so few
images do not teach the network. Here the network is taught to rank as LOMO + XQDA does, and
at test time nothing changes: the embedding alone, by L2.

The teacher: XQDA (metric_learning.fit_xqda) fitted on the LOMO of the split's training images
as the benchmark's baseline does, but on all pairs rather than cross-view ones; the images of
--extra_train sets are scored by it, their labels unused. It is kept as its linear map L: the
teacher's distance is |L^T (x - y)|, the square root of XQDA's (the same ranks). In each step
LOMO of the augmented batch (the pixels the network sees) is mapped by L, and the distances
between the batch's unit-norm embeddings are taught the teacher's by one of two losses
(LOSSES, `train --distill_lomo_loss`):

  distance    relational knowledge distillation, distance-wise (Park et al., CVPR 2019): each
              distance matrix divided by its mean over pairs, compared by the Huber loss;
  neighbours  each image's softmax over the batch's other images by distance, the teacher's
              taught by KL (a listwise transfer of cross-sample similarities in the spirit of
              DarkRank, Chen et al., AAAI 2018): the nearest neighbours, which decide a rank,
              weigh most.

Both divide distances by their batch mean, so neither the teacher's nor the embedding's scale
matters. Each replica compares the pairs of its own share of the batch.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import pathlib

import numpy as np
import tensorflow as tf

from jlml_tf.evaluation import metric_learning
from jlml_tf.features import lomo as lomo_lib
from jlml_tf.features import lomo_graph, retinex
from jlml_tf.training import losses

TEACHER_FILE = "lomo_teacher.npz"  # in the run directory: fitted once, read back on resume
DEFAULT_LOSS = "neighbours"  # a LOSSES name (`train --distill_lomo_loss`)
NEIGHBOUR_TEMPERATURE = 0.1  # of the batch's mean distance (`train --distill_lomo_temperature`)
# A floor well above the temperatures at which a pair's logit would reach the -1e9 that masks
# the diagonal out (neighbour_loss).
MIN_TEMPERATURE = 1e-3


@dataclasses.dataclass
class LomoTeacher:
    matrix: np.ndarray  # (LOMO dim, r) float32: XQDA's L
    lomo: lomo_lib.LomoConfig  # LOMO at the model's input size, without Retinex
    source: str = ""  # fingerprint() of the images and labels it was fitted on

    def __post_init__(self):
        # one tensor, captured by the traced step rather than copied into every trace
        self._matrix = tf.constant(np.asarray(self.matrix, np.float32))

    def features(self, images: tf.Tensor) -> tf.Tensor:
        """L^T LOMO(images) for float pixels [B, H, W, 3] in 0..255 (rounded first: LOMO's
        histograms take whole pixel values, and augmentation may leave fractions)."""
        pixels = tf.round(tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0))
        return tf.matmul(lomo_graph.lomo(pixels, self.lomo), self._matrix)


def lomo_config(height: int, width: int) -> lomo_lib.LomoConfig:
    return lomo_lib.LomoConfig(retinex=retinex.NONE, height=height, width=width)


def fingerprint(filenames, labels) -> str:
    """A digest of the (file name, label) pairs a teacher is fitted on, so a resumed run
    cannot pick up another split's or another hold-out's teacher."""
    pairs = sorted(zip((str(f) for f in filenames), (int(v) for v in labels)))
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def fit(images: np.ndarray, labels: np.ndarray, batch_size: int = 64,
        source: str = "") -> LomoTeacher:
    """XQDA's map fitted on the LOMO of uint8 images [N, H, W, 3] with identity labels [N]."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"expected images [N, H, W, 3] and N labels, got {images.shape} and "
                         f"{labels.shape}")
    if len(np.unique(labels)) < 2:
        raise ValueError("the LOMO teacher needs at least two identities to fit XQDA")
    cfg = lomo_config(*images.shape[1:3])
    features = np.concatenate([lomo_graph.lomo(images[i:i + batch_size], cfg).numpy()
                               for i in range(0, len(images), batch_size)])
    metric = metric_learning.fit_xqda(features, labels)
    return LomoTeacher(metric.linear_map(), cfg, source)


def save(teacher: LomoTeacher, path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    # per process: workers of one multi-worker run share the directory
    staging = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(staging, matrix=np.asarray(teacher.matrix, np.float32),
             lomo=np.array(json.dumps(teacher.lomo.to_dict())), source=np.array(teacher.source))
    os.replace(staging, path)  # atomic: a run killed while saving keeps no half file
    return path


def load(path: str | os.PathLike, height: int, width: int, source: str) -> LomoTeacher:
    """A saved teacher, refused (naming the file) unless it is LOMO at this input size fitted
    on the images and labels `source` fingerprints."""
    with np.load(path) as stored:
        matrix = stored["matrix"]
        cfg = lomo_lib.LomoConfig.from_dict(json.loads(str(stored["lomo"])))
        stored_source = str(stored["source"]) if "source" in stored else ""
    problem = None
    if cfg != lomo_config(height, width) or matrix.shape[0] != lomo_lib.feature_dim(cfg):
        problem = (f"LOMO {cfg.height}x{cfg.width} ({matrix.shape[0]}-d), not this model's "
                   f"{height}x{width}")
    elif stored_source != source:
        problem = "fitted on other training images or labels than this run's"
    if problem:
        raise ValueError(f"{path}: a LOMO teacher for {problem}; delete it or use another "
                         "--run_dir")
    return LomoTeacher(matrix, cfg, source)


def _pairs(size) -> tf.Tensor:
    return tf.logical_not(tf.eye(size, dtype=tf.bool))


def _normalised_distances(x: tf.Tensor, pairs: tf.Tensor) -> tf.Tensor:
    """Distances divided by their mean over the pairs i != j (static shapes, no masking)."""
    d = losses.pairwise_distances(x)
    size = tf.cast(tf.shape(d)[0], tf.float32)
    mean = tf.reduce_sum(tf.where(pairs, d, 0.0)) / (size * (size - 1.0))
    return d / tf.maximum(mean, 1e-12)


def relational_loss(student: tf.Tensor, teacher: tf.Tensor) -> tf.Tensor:
    """RKD's distance-wise loss: the mean Huber loss between the two batches' distance
    matrices, each divided by its mean over the pairs i != j (the diagonal is left out)."""
    pairs = _pairs(tf.shape(student)[0])
    error = tf.abs(_normalised_distances(student, pairs)
                   - tf.stop_gradient(_normalised_distances(teacher, pairs)))
    huber = tf.where(error <= 1.0, 0.5 * tf.square(error), error - 0.5)
    return tf.reduce_sum(tf.where(pairs, huber, 0.0)) / tf.reduce_sum(tf.cast(pairs, tf.float32))


def neighbour_loss(student: tf.Tensor, teacher: tf.Tensor,
                   temperature: float = NEIGHBOUR_TEMPERATURE) -> tf.Tensor:
    """Each image's distribution over the batch's other images, softmax(-d / (mean d *
    temperature)), of the teacher taught to the student by KL(teacher || student), averaged over
    the images: the near neighbours, which decide a rank, weigh most."""
    pairs = _pairs(tf.shape(student)[0])

    def log_neighbours(x):
        # -1e9, not -inf, on the diagonal: its probability is exactly 0 and the difference of
        # two such log-probabilities stays finite (-inf would give 0 * nan in the KL)
        logits = -_normalised_distances(x, pairs) / temperature
        return tf.nn.log_softmax(tf.where(pairs, logits, -1e9), axis=1)

    target = tf.stop_gradient(log_neighbours(teacher))
    kl = tf.reduce_sum(tf.where(pairs, tf.exp(target) * (target - log_neighbours(student)), 0.0),
                       axis=1)
    return tf.reduce_mean(kl)


LOSSES = {"distance": relational_loss, "neighbours": neighbour_loss}  # --distill_lomo_loss


def has_temperature(name: str) -> bool:
    return LOSSES[name] is neighbour_loss


def temperature_problem(name: str, temperature: float) -> str | None:
    """Why the LOSSES term `name` cannot take `temperature`, or None."""
    if not has_temperature(name):
        return None if temperature == NEIGHBOUR_TEMPERATURE else \
            f"the {name} loss has no temperature"
    if not (math.isfinite(temperature) and temperature >= MIN_TEMPERATURE):
        return f"a temperature must be finite and at least {MIN_TEMPERATURE}"
    return None


def make_loss(name: str, temperature: float = NEIGHBOUR_TEMPERATURE):
    """The LOSSES term `name` as a function of (student, teacher), with the neighbours loss's
    temperature bound; ValueError for a temperature the loss cannot take."""
    problem = temperature_problem(name, temperature)
    if problem:
        raise ValueError(f"distillation temperature {temperature}: {problem}")
    if has_temperature(name):
        return functools.partial(neighbour_loss, temperature=temperature)
    return LOSSES[name]
