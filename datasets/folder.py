"""A data set from your own images, named like Market-1501, in train / query / gallery folders.

Layout (a folder, or a zip of it, passed as `manual_dir`):
  train/    (or bounding_box_train/)  optional: training images
  query/                              required: probe images
  gallery/  (or bounding_box_test/)   required: gallery images
Names `<pid>_c<camera>...<anything>.<jpg|jpeg|png|bmp>`, e.g. `0002_c1s1_000451_03.jpg` or
`17_c3_frame12.png`: pid is the integer before the first underscore (0 = distractor, a negative
in every gallery; -1 = junk, ignored in evaluation) and camid the number after `c` right after
it. So a Market-1501 or Market-layout CUHK03 folder can be read as it is.

Camera ids are optional: a name `<pid>_<anything>` whose second part does not start with
`c<digits>` (e.g. `0002_front.jpg`) gets camid -1 (unknown). For such images the evaluation
cannot apply the Market rule that gallery images of the query's person *from the query's
camera* are junk: every gallery image of the same person, from the same camera or not, counts
as a true match. When a person was filmed twice by the same camera (near-identical frames),
this makes matching easier than the benchmark protocols and inflates the scores; name the
files with `c<camera>` to avoid it. When no image has a camera, `same_camera_junk` is False.

Checks: names, duplicates (same name up to case and extension) and corrupt images (an error,
or skipped with a warning under `skip_corrupt=True`). There are no known totals; the observed
counts are in `ReidData.info`. Training images of pid 0 or -1 are left out of the training set
(counted in info); identities in both train and query are reported with a warning.

The cache under data_dir is keyed by the folder's location and a fingerprint of its file names,
sizes and times, so editing the folder leads to a fresh build.

Protocol "default": one trial, train / query / gallery as laid out.

load(protocol=None, data_dir=None, manual_dir=None, *, skip_corrupt=False, check_counts=True)
  -> ReidData   (check_counts is accepted for a uniform API; a folder has no known totals)
"""
from __future__ import annotations

import hashlib
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from jlml_tf.data.types import UNKNOWN_CAMERA, Trial
from jlml_tf_datasets import release as rl

PROTOCOLS = {"default": "one trial: train / query / gallery folders as given"}
FOLDER_NAMES = {"train": ("train", "bounding_box_train"), "query": ("query",),
                "gallery": ("gallery", "bounding_box_test")}
NAME_RE = re.compile(r"^(-?\d+)_(.*)\.(jpe?g|png|bmp)$", re.IGNORECASE)
CAMERA_RE = re.compile(r"^c(\d+)")
EXPECTED_NAME = ("names <pid>_c<camera>_<anything>.jpg (or .jpeg/.png/.bmp), e.g. "
                 "0002_c1s1_000451_03.jpg, or <pid>_<anything>.jpg without a camera")
INSTRUCTIONS = ("Pass manual_dir=<your folder> (or a zip of it) holding query/ and gallery/ "
                "(or bounding_box_test/) and optionally train/ (or bounding_box_train/).")


def parse_name(name: str):
    m = NAME_RE.match(name)
    if not m:
        return None
    cam = CAMERA_RE.match(m.group(2))
    return int(m.group(1)), int(cam.group(1)) if cam else UNKNOWN_CAMERA, ()


def find_folder_release(manual_dir: str | None) -> rl.Release:
    if manual_dir is None:
        raise rl.ReleaseError(f"the folder data set needs manual_dir. {INSTRUCTIONS}")
    if os.path.isfile(manual_dir) and manual_dir.lower().endswith(".zip"):
        files = rl.zip_index(manual_dir)
        for prefix in rl._zip_prefixes(files):
            candidate = rl.Release(prefix, zip_path=manual_dir, zip_files=files)
            if candidate.is_dir("query"):
                return candidate
        raise rl.ReleaseError(f"{manual_dir} holds no query/ folder. {INSTRUCTIONS}")
    if not os.path.isdir(manual_dir):
        raise rl.ReleaseError(f"image folder {manual_dir} not found. {INSTRUCTIONS}")
    return rl.Release(manual_dir)


def resolve_folders(release: rl.Release) -> dict[str, str]:
    folders = {}
    for split, names in FOLDER_NAMES.items():
        present = [n for n in names if release.is_dir(n)]
        if len(present) > 1:
            raise rl.ReleaseError(f"{release.where()} has both {present[0]}/ and {present[1]}/; "
                                  "expected one folder for the "
                                  f"{split} images")
        if present:
            folders[split] = present[0]
        elif split != "train":
            raise rl.ReleaseError(f"missing folder {release.where(names[0])} (or "
                                  f"{' or '.join(names[1:]) or names[0]}). {INSTRUCTIONS}")
    return folders


class Folder(rl.ReleaseBuilder):
    """Re-id images of your own in train/query/gallery folders with Market-1501 names."""

    name = "reid_folder"
    DATASET = "folder"
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _plan(self, manual_dir):
        release = find_folder_release(manual_dir)
        splits = {split: rl.scan_folder(release, folder, parse_name, EXPECTED_NAME)
                  for split, folder in resolve_folders(release).items()}
        return rl.Plan(release, splits, {"folders": resolve_folders(release)})


def cache_config(manual_dir: str) -> tfds.core.BuilderConfig:
    """A builder config named after the folder and a fingerprint of its contents."""
    release = find_folder_release(manual_dir)
    folders = resolve_folders(release)
    fingerprint = release.fingerprint(folders.values())
    stem = re.sub(r"[^A-Za-z0-9]+", "_", os.path.basename(os.path.normpath(manual_dir)))[:40]
    digest = hashlib.sha1(os.path.abspath(manual_dir).encode()).hexdigest()[:6]
    return tfds.core.BuilderConfig(name=f"{stem or 'folder'}_{digest}_{fingerprint}",
                                   description=f"images of {os.path.abspath(manual_dir)}")


def load(protocol: str | None = None, data_dir: str | None = None,
         manual_dir: str | None = None, *, skip_corrupt: bool = False, check_counts: bool = True):
    del check_counts  # no known totals
    protocol = rl.resolve_protocol(PROTOCOLS, protocol, "folder")
    manual_dir = rl.as_path(manual_dir)
    config = cache_config(manual_dir)
    builder = rl.prepare_release(Folder, data_dir=data_dir, manual_dir=manual_dir, config=config,
                                 check_counts=True, skip_corrupt=skip_corrupt)
    names = [s for s in ("train", "query", "gallery") if s in builder.info.splits]
    table, rows = rl.read_splits(builder, names)
    train = rows.get("train", np.zeros(0, np.int64))
    excluded = train[table.pids[train] <= 0]
    train = train[table.pids[train] > 0]
    query, gallery = rows["query"], rows["gallery"]
    overlap = np.intersect1d(table.pids[train], table.pids[query])
    if len(overlap):
        logging.warning("folder %s: %d identities are in both train and query (e.g. %s)",
                        manual_dir, len(overlap), overlap[:5].tolist())
    real_query = query[table.pids[query] > 0]
    unmatched = np.setdiff1d(table.pids[real_query], table.pids[gallery])
    info = rl.base_info(builder, PROTOCOLS[protocol])
    info.update(
        folders=dict(builder.info.metadata.get("folders", {})),
        counts={split: {"images": int(len(r)), "ids": int(len(np.unique(table.pids[r])))}
                for split, r in (("train", train), ("query", query), ("gallery", gallery))},
        excluded_train_images=int(len(excluded)),
        train_query_overlap_ids=overlap.tolist(),
        queries_without_match_ids=unmatched.tolist(),
        unknown_camera_images=int(np.sum(table.camids == UNKNOWN_CAMERA)))
    same_camera_junk = bool(np.any(table.camids != UNKNOWN_CAMERA))
    return rl.make_reid_data("folder", protocol, table, [Trial(protocol, train, query, gallery)],
                             info, same_camera_junk=same_camera_junk)
