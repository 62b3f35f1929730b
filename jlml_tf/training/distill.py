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

Cross-fitted teachers (`train --distill_lomo_folds=K`, K >= 2): XQDA fitted on its own training
pairs ranks them perfectly (VIPeR splits 1-2, benchmarks/teacher_ranks.py), so its top match
only repeats the labels. The split's identities are dealt into K folds and map k is fitted
without fold k; an image's row of the teacher's distances (its distances to the batch's other
images, which is what the neighbours loss teaches it) comes from the map that never saw its
identity, as the teacher's distances to a test image would. Images of --extra_train sets,
which no map saw, take map 0's. On VIPeR split 1 this did worse (R1) than the teacher fitted
on all identities, and not better than none (docs/cpu_recipe.md section 40), probably because
the held-out maps' wrong neighbours are taught against the labels.
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

from jlml_tf.data.types import identity_folds
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
    # XQDA's L, (LOMO dim, r_k) float32, per fold: map k fitted without fold k's identities;
    # a single map is fitted on all of them
    matrices: list[np.ndarray]
    lomo: lomo_lib.LomoConfig  # LOMO at the model's input size, without Retinex
    source: str = ""  # fingerprint() of the images and labels it was fitted on
    # the fold of each training label 0..n-1 (cross-fitted teachers only)
    label_folds: np.ndarray | None = None

    def __post_init__(self):
        if isinstance(self.matrices, np.ndarray) or not len(self.matrices):
            raise ValueError("a LOMO teacher takes a non-empty list of maps")
        self.matrices = [np.asarray(m, np.float32) for m in self.matrices]
        if len(self.matrices) > 1 and self.label_folds is None:
            raise ValueError(f"{len(self.matrices)} maps need the fold of each label")
        # tensors captured by the traced step rather than copied into every trace
        self._matrices = [tf.constant(m) for m in self.matrices]
        if len(self.matrices) > 1:
            # one more entry, map 0, for labels beyond the split's
            self._label_folds = tf.constant(np.append(self.label_folds, 0), tf.int32)

    @property
    def folds(self) -> int:
        return len(self.matrices)

    def _lomo(self, images: tf.Tensor) -> tf.Tensor:
        # rounded first: LOMO's histograms take whole pixel values, augmentation leaves fractions
        pixels = tf.round(tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0))
        return lomo_graph.lomo(pixels, self.lomo)

    def features(self, images: tf.Tensor) -> list:
        """L_k^T LOMO(images), one [B, r_k] tensor per map, for float pixels [B, H, W, 3] in
        0..255."""
        x = self._lomo(images)
        return [tf.matmul(x, m) for m in self._matrices]

    def distances(self, images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """The teacher's [B, B] distances, each map's divided by its mean over the pairs; row i
        from the map that did not see label i's identity."""
        per_map = [normalised_distances(f) for f in self.features(images)]
        if len(per_map) == 1:
            return per_map[0]
        last = len(self.label_folds)  # the extra entry
        fold = tf.gather(self._label_folds, tf.minimum(tf.cast(labels, tf.int32), last))
        rows = tf.range(tf.shape(fold)[0])
        return tf.gather_nd(tf.stack(per_map), tf.stack([fold, rows], axis=1))


def lomo_config(height: int, width: int) -> lomo_lib.LomoConfig:
    return lomo_lib.LomoConfig(retinex=retinex.NONE, height=height, width=width)


def fingerprint(filenames, labels) -> str:
    """A digest of the (file name, label) pairs a teacher is fitted on, so a resumed run
    cannot pick up another split's or another hold-out's teacher."""
    pairs = sorted(zip((str(f) for f in filenames), (int(v) for v in labels)))
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def deal_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """The fold of each label value 0..max(labels), by types.identity_folds (the identities
    shuffled by `seed` and dealt round-robin); labels shifted by one, as it deals pid 0, a
    distractor, per image."""
    labels = np.asarray(labels)
    label_folds = np.zeros(int(labels.max()) + 1, np.int32)
    label_folds[labels] = identity_folds(labels + 1, folds, seed)
    return label_folds


def fit(images: np.ndarray, labels: np.ndarray, batch_size: int = 64, source: str = "",
        folds: int = 1, seed: int = 0) -> LomoTeacher:
    """XQDA's map fitted on the LOMO of uint8 images [N, H, W, 3] with identity labels [N]
    (0..n-1); with `folds` >= 2, one map per fold of deal_folds(labels, folds, seed)."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"expected images [N, H, W, 3] and N labels, got {images.shape} and "
                         f"{labels.shape}")
    identities = len(np.unique(labels))
    # each map is fitted on the identities outside its fold, the largest fold left out
    fewest = identities - math.ceil(identities / folds) if folds > 1 else identities
    if not 1 <= folds <= identities or fewest < 2:
        raise ValueError(f"the LOMO teacher needs two identities in every map to fit XQDA, and "
                         f"one in every fold: {identities} identities in {folds} fold(s)")
    cfg = lomo_config(*images.shape[1:3])
    features = np.concatenate([lomo_graph.lomo(images[i:i + batch_size], cfg).numpy()
                               for i in range(0, len(images), batch_size)])
    if folds == 1:
        return LomoTeacher([metric_learning.fit_xqda(features, labels).linear_map()], cfg, source)
    label_folds = deal_folds(labels, folds, seed)
    held_in = [label_folds[labels] != k for k in range(folds)]
    matrices = [metric_learning.fit_xqda(features[keep], labels[keep]).linear_map()
                for keep in held_in]
    return LomoTeacher(matrices, cfg, source, label_folds)


def save(teacher: LomoTeacher, path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    # per process: workers of one multi-worker run share the directory
    staging = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    maps = {f"matrix_{k}": m for k, m in enumerate(teacher.matrices)}
    if teacher.label_folds is not None:
        maps["label_folds"] = np.asarray(teacher.label_folds, np.int32)
    np.savez(staging, **maps, lomo=np.array(json.dumps(teacher.lomo.to_dict())),
             source=np.array(teacher.source))
    os.replace(staging, path)  # atomic: a run killed while saving keeps no half file
    return path


def load(path: str | os.PathLike, height: int, width: int, source: str,
         folds: int = 1) -> LomoTeacher:
    """A saved teacher, refused (naming the file) unless it is LOMO at this input size fitted
    on the images and labels `source` fingerprints, in `folds` maps."""
    with np.load(path) as stored:
        # "matrix": a single map, saved before teachers had folds
        names = ["matrix"] if "matrix" in stored else \
            sorted((k for k in stored if k.startswith("matrix_")), key=lambda k: int(k[7:]))
        matrices = [stored[k] for k in names]
        label_folds = stored["label_folds"] if "label_folds" in stored else None
        cfg = lomo_lib.LomoConfig.from_dict(json.loads(str(stored["lomo"])))
        stored_source = str(stored["source"]) if "source" in stored else ""
    dims = {m.shape[0] for m in matrices}
    problem = None
    if cfg != lomo_config(height, width) or dims != {lomo_lib.feature_dim(cfg)}:
        sizes = "/".join(map(str, dims))
        problem = f"LOMO {cfg.height}x{cfg.width} ({sizes}-d), not this model's {height}x{width}"
    elif stored_source != source:
        problem = "fitted on other training images or labels than this run's"
    elif len(matrices) != folds:
        problem = f"{len(matrices)} fold(s), not this run's {folds}"
    elif folds > 1 and (label_folds is None or not set(label_folds.tolist()) <= set(range(folds))):
        problem = f"{folds} folds without the fold of each label in 0..{folds - 1}"
    if problem:
        raise ValueError(f"{path}: a LOMO teacher for {problem}; delete it or use another "
                         "--run_dir")
    return LomoTeacher(matrices, cfg, source, label_folds)


def _pairs(size) -> tf.Tensor:
    return tf.logical_not(tf.eye(size, dtype=tf.bool))


def normalised_distances(x: tf.Tensor) -> tf.Tensor:
    """The [B, B] distances between the rows of x divided by their mean over the pairs
    i != j (static shapes, no masking)."""
    d = losses.pairwise_distances(x)
    size = tf.cast(tf.shape(d)[0], tf.float32)
    mean = tf.reduce_sum(tf.where(_pairs(tf.shape(d)[0]), d, 0.0)) / (size * (size - 1.0))
    return d / tf.maximum(mean, 1e-12)


def relational_loss(student: tf.Tensor, teacher: tf.Tensor) -> tf.Tensor:
    """RKD's distance-wise loss: the mean Huber loss between the student's distance matrix
    (between the rows of `student`, divided by its mean over the pairs i != j) and the
    teacher's normalised distances [B, B]; the diagonal is left out."""
    pairs = _pairs(tf.shape(student)[0])
    # a cross-fitted teacher's rows come from different maps: each pair takes their mean
    teacher = 0.5 * (teacher + tf.transpose(teacher))
    error = tf.abs(normalised_distances(student) - tf.stop_gradient(teacher))
    huber = tf.where(error <= 1.0, 0.5 * tf.square(error), error - 0.5)
    return tf.reduce_sum(tf.where(pairs, huber, 0.0)) / tf.reduce_sum(tf.cast(pairs, tf.float32))


def neighbour_loss(student: tf.Tensor, teacher: tf.Tensor,
                   temperature: float = NEIGHBOUR_TEMPERATURE) -> tf.Tensor:
    """Each image's distribution over the batch's other images, softmax(-d / (mean d *
    temperature)), of the teacher (normalised distances [B, B]) taught to the student (the rows
    of `student`) by KL(teacher || student), averaged over the images: the near neighbours,
    which decide a rank, weigh most."""
    pairs = _pairs(tf.shape(student)[0])

    def log_neighbours(distances):
        # -1e9, not -inf, on the diagonal: its probability is exactly 0 and the difference of
        # two such log-probabilities stays finite (-inf would give 0 * nan in the KL)
        logits = -distances / temperature
        return tf.nn.log_softmax(tf.where(pairs, logits, -1e9), axis=1)

    target = tf.stop_gradient(log_neighbours(teacher))
    student_log = log_neighbours(normalised_distances(student))
    kl = tf.reduce_sum(tf.where(pairs, tf.exp(target) * (target - student_log), 0.0),
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
    """The LOSSES term `name` as a function of (student embeddings, the teacher's normalised
    distances), with the neighbours loss's temperature bound; ValueError for a temperature the
    loss cannot take."""
    problem = temperature_problem(name, temperature)
    if problem:
        raise ValueError(f"distillation temperature {temperature}: {problem}")
    if has_temperature(name):
        return functools.partial(neighbour_loss, temperature=temperature)
    return LOSSES[name]
