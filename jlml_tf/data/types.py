"""The in-memory form every data set builder produces and every consumer reads.

A data set is one `ImageTable` (all its images, encoded) and a list of `Trial`s, each naming
rows of the table for training, query and gallery. Identity conventions follow Market-1501:
pid 0 is a distractor (a negative in every gallery), pid -1 is junk (ignored). camid -1 means
the camera is unknown, which turns same-camera filtering off for that image.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

DISTRACTOR_PID = 0
JUNK_PID = -1
UNKNOWN_CAMERA = -1


@dataclasses.dataclass
class ImageTable:
    images: np.ndarray  # object array of encoded JPEG/PNG bytes
    pids: np.ndarray  # int64 identity as in the release
    camids: np.ndarray  # int64 camera id, UNKNOWN_CAMERA if not known
    filenames: np.ndarray  # str, path relative to the release root (for errors and pictures)

    def __post_init__(self):
        self.images = np.asarray(self.images, dtype=object)
        self.pids = np.asarray(self.pids, dtype=np.int64)
        self.camids = np.asarray(self.camids, dtype=np.int64)
        self.filenames = np.asarray(self.filenames, dtype=str)
        n = len(self.images)
        for name in ("pids", "camids", "filenames"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ImageTable.{name} has {len(getattr(self, name))} rows, "
                                 f"images has {n}")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, rows: np.ndarray) -> "ImageTable":
        rows = np.asarray(rows, dtype=np.int64)
        return ImageTable(self.images[rows], self.pids[rows], self.camids[rows],
                          self.filenames[rows])

    @staticmethod
    def concatenate(tables: list["ImageTable"]) -> "ImageTable":
        return ImageTable(*(np.concatenate([getattr(t, f) for t in tables])
                            for f in ("images", "pids", "camids", "filenames")))


@dataclasses.dataclass
class Trial:
    """One train/test split. All fields are int64 row indices into the data set's table.

    `multi_query` holds the extra query images (Market-1501 `gt_bbox`) whose features are
    pooled per (pid, camera) with each query for the multi-query protocol; empty if none.
    """

    name: str
    train: np.ndarray
    query: np.ndarray
    gallery: np.ndarray
    multi_query: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self):
        for f in ("train", "query", "gallery", "multi_query"):
            setattr(self, f, np.asarray(getattr(self, f), dtype=np.int64))


@dataclasses.dataclass
class ReidData:
    """A prepared data set under one protocol: the images and the protocol's trials."""

    name: str  # e.g. "cuhk01"
    protocol: str  # e.g. "485_486_single_shot"
    table: ImageTable
    trials: list[Trial]
    same_camera_junk: bool = True  # Market rule: same pid and same camera in gallery is junk
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def train_labels(self, trial: Trial) -> tuple[np.ndarray, int]:
        """Training labels 0..C-1 for `trial.train` (pids sorted), and C."""
        return relabel(self.table.pids[trial.train])


def relabel(pids: np.ndarray) -> tuple[np.ndarray, int]:
    """Maps arbitrary identity values to 0..C-1 (sorted by pid), returns (labels, C)."""
    unique, labels = np.unique(np.asarray(pids), return_inverse=True)
    return labels.astype(np.int64), len(unique)


def _draw_identities(pids: np.ndarray, count: int, key: list[int]) -> np.ndarray:
    """`count` of the distinct `pids`, drawn with default_rng(key), sorted."""
    return np.sort(np.random.default_rng(key).choice(pids, count, replace=False))


def _train_filtered(data: ReidData, trial: Trial, pids: np.ndarray, keep: bool) -> Trial:
    """The trial with only (keep) or without (not keep) the training images of `pids`."""
    inside = np.isin(data.table.pids[trial.train], pids)
    return dataclasses.replace(trial, train=trial.train[inside if keep else ~inside])


def hold_out_identities(data: ReidData, trial: Trial, count: int, seed: int
                        ) -> tuple[Trial, list[int]]:
    """`count` identities of the trial's training split, drawn with default_rng([seed, 1]), taken
    out of training: (the trial without them, their pids sorted). They stay people the model
    never saw, e.g. to calibrate a no-match threshold on."""
    if count <= 0:
        return trial, []
    pids = np.unique(data.table.pids[trial.train])
    if count >= len(pids):
        raise ValueError(f"cannot hold out {count} of the {len(pids)} training identities of "
                         f"{data.name}/{trial.name}; at least one must stay for training")
    held = _draw_identities(pids, count, [seed, 1])
    return _train_filtered(data, trial, held, keep=False), [int(p) for p in held]


def keep_identity_fraction(data: ReidData, trial: Trial, fraction: float, seed: int) -> Trial:
    """The trial with only round(fraction x its training identities) kept (at least one), drawn
    with default_rng([seed, 2]): data-scaling curves at a fixed number of images seen."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"identity fraction {fraction} not in (0, 1]")
    if fraction == 1.0:
        return trial
    pids = np.unique(data.table.pids[trial.train])
    count = max(1, int(round(fraction * len(pids))))
    return _train_filtered(data, trial, _draw_identities(pids, count, [seed, 2]), keep=True)


def repeat_training(trial: Trial, times: int) -> Trial:
    """The trial with every training image listed `times` times: joined with larger data sets
    (--extra_train), a small target then fills `times` times its share of each epoch."""
    if times < 1:
        raise ValueError(f"training images repeated {times} times: expected at least 1")
    return trial if times == 1 else dataclasses.replace(trial, train=np.tile(trial.train, times))


def union_for_training(datasets: list[tuple[ReidData, Trial]]) -> tuple[ImageTable, np.ndarray, int]:
    """Training images of several data sets with disjoint identity labels.

    Returns (table of the training images, labels 0..C-1, C). The table's camera ids are
    renumbered 0..K-1 over the (data set, camera) pairs, so cameras of two data sets never
    share an id (an unknown camera is one camera of its data set).
    """
    tables, labels, offset, camera_offset = [], [], 0, 0
    for data, trial in datasets:
        lab, count = relabel(data.table.pids[trial.train])
        table = data.table.subset(trial.train)
        cams, num_cams = relabel(table.camids)
        tables.append(ImageTable(table.images, table.pids, cams + camera_offset,
                                 table.filenames))
        labels.append(lab + offset)
        offset += count
        camera_offset += num_cams
    return ImageTable.concatenate(tables), np.concatenate(labels), offset


def identity_folds(pids, folds: int = 2, seed: int = 0) -> np.ndarray:
    """A fold index per item, all images of one identity in one fold (identities shuffled,
    seeded, dealt round-robin); distractors (pid 0, each a different unknown person) are
    dealt per image; junk (pid < 0) gets -1."""
    pids = np.asarray(pids, np.int64).reshape(-1)
    rng = np.random.default_rng(seed)
    out = np.full(len(pids), -1, np.int64)
    people = rng.permutation(np.unique(pids[pids > 0]))
    fold_of = {int(p): i % folds for i, p in enumerate(people)}
    for i, p in enumerate(pids):
        if p > 0:
            out[i] = fold_of[int(p)]
    zeros = np.flatnonzero(pids == 0)
    out[zeros] = rng.permutation(np.arange(len(zeros)) % folds) if len(zeros) else out[zeros]
    return out
