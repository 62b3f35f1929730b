"""Distillation from LOMO + XQDA: the hand-crafted matcher's distances as a training signal.

Why: on VIPeR's 632 training images JLML matched by L2 stays 14-17 R1 below LOMO + XQDA fitted on
the same images (docs/cpu_recipe.md sections 17-35), and fusing the two in one XQDA beats both
(section 36): LOMO's colour and texture histograms over horizontal strips carry what so few
images do not teach the network. Here the network is taught to rank as LOMO + XQDA does, and
at test time nothing changes: the embedding alone, by L2.

The teacher: XQDA (metric_learning.fit_xqda, all pairs) fitted on the LOMO of the split's
training images (the benchmark's LOMO + XQDA baseline; images of --extra_train sets are scored
by it, their labels unused), kept as its linear map L, so that the teacher's distance is
|L^T (x - y)|. In each step LOMO of the augmented batch (the pixels the network sees) is mapped by L, and the
distances between the batch's unit-norm embeddings are matched to the teacher's: relational
knowledge distillation, distance-wise (Park et al., CVPR 2019), each distance matrix divided
by its mean over pairs and compared by the Huber loss. Only relative distances are taught, so
neither the teacher's nor the embedding's scale matters.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np
import tensorflow as tf

from jlml_tf.evaluation import metric_learning
from jlml_tf.features import lomo as lomo_lib
from jlml_tf.features import lomo_graph, retinex

TEACHER_FILE = "lomo_teacher.npz"  # in the run directory: fitted once, read back on resume


@dataclasses.dataclass
class LomoTeacher:
    matrix: np.ndarray  # (LOMO dim, r) float32: XQDA's L
    lomo: lomo_lib.LomoConfig  # LOMO at the model's input size, without Retinex

    def features(self, images: tf.Tensor) -> tf.Tensor:
        """L^T LOMO(images) for float pixels [B, H, W, 3] in 0..255 (rounded first: LOMO's
        histograms take whole pixel values, and augmentation may leave fractions)."""
        pixels = tf.round(tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0))
        return tf.matmul(lomo_graph.lomo(pixels, self.lomo), tf.constant(self.matrix))


def lomo_config(height: int, width: int) -> lomo_lib.LomoConfig:
    return lomo_lib.LomoConfig(retinex=retinex.NONE, height=height, width=width)


def fit(images: np.ndarray, labels: np.ndarray, batch_size: int = 64) -> LomoTeacher:
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
    return LomoTeacher(metric.linear_map(), cfg)


def save(teacher: LomoTeacher, path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    staging = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(staging, matrix=teacher.matrix.astype(np.float32),
             lomo=np.array(json.dumps(dataclasses.asdict(teacher.lomo))))
    os.replace(staging, path)  # atomic: a run killed while saving keeps no half file
    return path


def load(path: str | os.PathLike, height: int, width: int) -> LomoTeacher:
    """A saved teacher, refused (naming the file) if it is not for this input size."""
    with np.load(path) as stored:
        matrix = stored["matrix"]
        cfg = lomo_lib.LomoConfig.from_dict(json.loads(str(stored["lomo"])))
    if (cfg.height, cfg.width) != (height, width) or \
            matrix.shape[0] != lomo_lib.feature_dim(cfg):
        raise ValueError(f"{path}: a LOMO teacher for {cfg.height}x{cfg.width} images "
                         f"({matrix.shape[0]}-d), not for this model's {height}x{width}; "
                         "delete it or use another --run_dir")
    return LomoTeacher(matrix, cfg)


def pairwise_distances(x: tf.Tensor) -> tf.Tensor:
    """Euclidean distances between the rows of x [B, d]; the epsilon keeps sqrt's gradient
    finite on the zero diagonal."""
    x = tf.cast(x, tf.float32)
    squared = tf.reduce_sum(tf.square(x), axis=1)
    gram = tf.matmul(x, x, transpose_b=True)
    return tf.sqrt(tf.maximum(squared[:, None] + squared[None, :] - 2.0 * gram, 0.0) + 1e-12)


def relational_loss(student: tf.Tensor, teacher: tf.Tensor) -> tf.Tensor:
    """RKD's distance-wise loss: the mean Huber loss between the two batches' distance
    matrices, each divided by its mean over the pairs i != j (the diagonal is left out)."""
    size = tf.shape(student)[0]
    pairs = tf.logical_not(tf.eye(size, dtype=tf.bool))

    def normalised(x):
        d = tf.boolean_mask(pairwise_distances(x), pairs)
        return d / tf.maximum(tf.reduce_mean(d), 1e-12)

    error = tf.abs(normalised(student) - tf.stop_gradient(normalised(teacher)))
    return tf.reduce_mean(tf.where(error <= 1.0, 0.5 * tf.square(error), error - 0.5))


def neighbour_loss(student: tf.Tensor, teacher: tf.Tensor, temperature: float = 0.1) -> tf.Tensor:
    """Each image's distribution over the batch's other images, softmax(-d / (mean d *
    temperature)), of the teacher taught to the student by KL(teacher || student), averaged over
    the images: the near neighbours, which decide a rank, weigh most."""
    size = tf.shape(student)[0]
    pairs = tf.logical_not(tf.eye(size, dtype=tf.bool))

    def log_neighbours(x):
        d = pairwise_distances(x)
        scale = tf.maximum(tf.reduce_mean(tf.boolean_mask(d, pairs)), 1e-12) * temperature
        return tf.nn.log_softmax(tf.where(pairs, -d / scale, -1e9), axis=1)

    target = tf.stop_gradient(log_neighbours(teacher))
    kl = tf.reduce_sum(tf.where(pairs, tf.exp(target) * (target - log_neighbours(student)), 0.0),
                       axis=1)
    return tf.reduce_mean(kl)


LOSSES = {"distance": relational_loss, "neighbours": neighbour_loss}  # --distill_lomo_loss
