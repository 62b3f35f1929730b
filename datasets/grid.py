"""GRID (QMUL underground re-id, Loy et al.): 250 paired identities and 775 distractors, 8 cameras.

Release: `underground_reid/` (from `underground_reid.zip`, extracted or not) under the manual
directory, with `probe/` (250 images, one per identity) and `gallery/` (1,025 images: one per
identity plus 775 distractors with pid 0000). Names `<pid:04d>_<camera>_<...>.jpeg`, camera
1-8 (the camid); pid as in the name. In every pair the probe is the lower camera number. The
full release is checked: 250 probe images of 250 ids, 1,025 gallery images of which 775
distractors, each identity once in probe and once in gallery (`check_counts=False` for a subset).

Splits: 10 fixed splits of 125 training / 125 test identities, from (in this order)
  - `splits=` a JSON file `[{"train_ids": [...], "test_ids": [...]}, ...]` (test_ids may be
    left out: then all other identities), for users without the official .mat;
  - the official `underground_reid/features_and_partitions.mat` (MATLAB v5): `trainIdxAll`,
    a 1x10 cell whose entries are the training identities, either directly or as a struct
    with the field `personIdx` (other fields: probeImIdx, galleryImIdx). Test identities are
    all the others. It is read when the data set is built and kept with the cache.
Protocol 125_125: train = probe and gallery images of the training identities; query = probe
images of the test identities; gallery = their gallery images plus all 775 distractors (always).

load(protocol=None, data_dir=None, manual_dir=None, *, check_counts=True, skip_corrupt=False,
     splits=None, num_trials=None) -> ReidData
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from jlml_tf.data.types import DISTRACTOR_PID, Trial
from jlml_tf_datasets import release as rl

PROTOCOLS = {
    "125_125": "10 fixed splits: 125 train / 125 test ids; query = test probe images, gallery = "
               "test gallery images + 775 distractors",
    rl.TRAIN_ALL: rl.TRAIN_ALL_DESCRIPTION + " (the 250 identities; distractors left out)",
}
NUM_IDS = 250
NUM_PROBE = 250
NUM_GALLERY = 1025
NUM_DISTRACTORS = 775
NUM_CAMERAS = 8
NUM_SPLITS = 10
SPLIT_TRAIN_IDS = 125
SPLITS_MAT = "features_and_partitions.mat"
NAME_RE = re.compile(r"^(\d{4})_(\d+)_(.+)\.jpe?g$", re.IGNORECASE)
EXPECTED_NAME = "names <pid:04d>_<camera 1-8>_<...>.jpeg, e.g. 0001_1_25004_107_32_106_221.jpeg"
DOWNLOAD = ("Download underground_reid.zip (http://personal.ie.cuhk.edu.hk/~ccloy/downloads_qmul_"
            "underground_reid.html) and put it, or the extracted underground_reid/ folder, in "
            "the manual directory.")


def parse_name(name: str):
    m = NAME_RE.match(name)
    if not m:
        return None
    pid, cam = int(m.group(1)), int(m.group(2))
    if not 1 <= cam <= NUM_CAMERAS:
        return None
    return pid, cam, ()


def _unwrap(value):
    """Peels MATLAB 1x1 cells and structs off a loadmat value."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.ravel()[0]
    return value


def read_partitions(path: str, where: str) -> list[list[int]]:
    """Training identity lists of the official features_and_partitions.mat (`trainIdxAll`)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # noqa: BLE001 - any reader failure means an unusable file
        raise rl.ReleaseError(f"cannot read {where}: {e}") from e
    if "trainIdxAll" not in mat:
        raise rl.ReleaseError(f"{where} has no field trainIdxAll (found "
                              f"{sorted(k for k in mat if not k.startswith('__'))})")
    splits = []
    for i, cell in enumerate(np.asarray(mat["trainIdxAll"], dtype=object).ravel()):
        value = _unwrap(cell)
        if isinstance(value, np.ndarray) and value.dtype.names:
            names = value.dtype.names
            field = "personIdx" if "personIdx" in names else (names[2] if len(names) > 2 else None)
            if field is None:
                raise rl.ReleaseError(f"{where}: trainIdxAll{{{i + 1}}} is a struct without "
                                      f"personIdx (fields {names})")
            value = _unwrap(value[field])
        ids = np.asarray(value, dtype=np.float64).ravel()
        if ids.size == 0 or np.any(ids != np.round(ids)):
            raise rl.ReleaseError(f"{where}: trainIdxAll{{{i + 1}}} is not a list of identities")
        splits.append(sorted(int(x) for x in ids))
    return splits


class Grid(rl.ReleaseBuilder):
    """GRID (QMUL underground re-id): 250 identity pairs + 775 distractors, 8 cameras."""

    name = "reid_grid"
    DATASET = "GRID"
    HOMEPAGE = "http://personal.ie.cuhk.edu.hk/~ccloy/downloads_qmul_underground_reid.html"
    MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD

    def _plan(self, manual_dir):
        release = rl.find_release(manual_dir, dataset="GRID", required=["probe", "gallery"],
                                  folder_names=["underground_reid", "GRID", "grid",
                                                os.path.join("grid", "underground_reid")],
                                  zip_names=["underground_reid.zip"], download=DOWNLOAD)
        probe = rl.scan_folder(release, "probe", parse_name, EXPECTED_NAME)
        gallery = rl.scan_folder(release, "gallery", parse_name, EXPECTED_NAME)
        for rec in probe:
            if rec.pid == DISTRACTOR_PID:
                raise rl.ReleaseError(f"unexpected file {release.where(rec.relpath)}: the probe "
                                      "holds no distractors (pid 0000); expected them in gallery/")
        rl.check_unique(probe, lambda r: r.pid, release, "the probe image of identity")
        rl.check_unique([r for r in gallery if r.pid != DISTRACTOR_PID], lambda r: r.pid,
                        release, "the gallery image of identity")
        if self.check_counts:
            rl.check_count(len(probe), NUM_PROBE, "probe images", release.where("probe"))
            rl.check_count(len(gallery), NUM_GALLERY, "gallery images", release.where("gallery"))
            rl.check_count(sum(r.pid == DISTRACTOR_PID for r in gallery), NUM_DISTRACTORS,
                           "distractors (pid 0000)", release.where("gallery"))
            probe_ids = {r.pid for r in probe}
            gallery_ids = {r.pid for r in gallery} - {DISTRACTOR_PID}
            if probe_ids != gallery_ids:
                odd = sorted(probe_ids ^ gallery_ids)[:5]
                raise rl.ReleaseError(f"{release.where()}: identities {odd} are in only one of "
                                      f"probe/ and gallery/; expected each of the {NUM_IDS} "
                                      f"identities in both; {rl.CHECK_COUNTS_HINT}")
        metadata = {"splits": None, "splits_source": None}
        found = rl.find_file(manual_dir, [SPLITS_MAT], release)
        if found is not None:
            where_rel, name = found
            with where_rel.local_file(name) as path:
                train_lists = read_partitions(path, where_rel.where(name))
            metadata["splits"] = [{"train_ids": ids} for ids in train_lists]
            metadata["splits_source"] = where_rel.where(name)
        return rl.Plan(release, {"probe": probe, "gallery": gallery}, metadata)


def read_splits_json(path: str) -> list[dict]:
    try:
        with open(path) as f:
            splits = json.load(f)
    except (OSError, ValueError) as e:
        raise rl.ReleaseError(f"cannot read GRID splits {path}: {e}") from e
    if not isinstance(splits, list) or not all(isinstance(s, dict) and "train_ids" in s
                                               for s in splits):
        raise rl.ReleaseError(f"{path}: expected a JSON list of {{\"train_ids\": [...], "
                              "\"test_ids\": [...]}")
    return splits


def check_splits(splits: list[dict], ids: np.ndarray, source: str,
                 check_counts: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train ids, test ids) per split; test ids default to all non-training identities."""
    known = set(int(i) for i in ids)
    out = []
    if check_counts:
        rl.check_count(len(splits), NUM_SPLITS, "splits", source)
    for i, split in enumerate(splits):
        train = sorted(int(x) for x in split["train_ids"])
        test = sorted(int(x) for x in split.get("test_ids", sorted(known - set(train))))
        for what, group in (("train_ids", train), ("test_ids", test)):
            unknown = sorted(set(group) - known)
            if unknown:
                raise rl.ReleaseError(f"{source}: split {i} {what} has identities {unknown[:5]} "
                                      "that are not in the release")
            if len(set(group)) != len(group):
                raise rl.ReleaseError(f"{source}: split {i} {what} lists an identity twice")
        both = sorted(set(train) & set(test))
        if both:
            raise rl.ReleaseError(f"{source}: split {i} has identities {both[:5]} in both "
                                  "train_ids and test_ids")
        if check_counts:
            rl.check_count(len(train), SPLIT_TRAIN_IDS, f"training ids in split {i}", source)
            rl.check_count(len(test), NUM_IDS - SPLIT_TRAIN_IDS, f"test ids in split {i}", source)
        out.append((np.asarray(train, np.int64), np.asarray(test, np.int64)))
    return out


def load(protocol: str | None = None, data_dir: str | None = None,
         manual_dir: str | None = None, *, check_counts: bool = True, skip_corrupt: bool = False,
         splits: str | None = None, num_trials: int | None = None):
    protocol = rl.resolve_protocol(PROTOCOLS, protocol, "grid")
    builder = rl.prepare_release(Grid, data_dir=data_dir, manual_dir=manual_dir,
                                 check_counts=check_counts, skip_corrupt=skip_corrupt)
    table, rows = rl.read_splits(builder, ["probe", "gallery"])
    meta = builder.info.metadata
    if protocol == rl.TRAIN_ALL:
        return rl.make_reid_data("grid", protocol, table, [rl.train_all_trial(table)],
                                 rl.base_info(builder, PROTOCOLS[protocol]))
    if splits is not None:
        split_list, source = read_splits_json(os.fspath(splits)), os.fspath(splits)
    elif meta.get("splits"):
        split_list, source = meta["splits"], meta["splits_source"]
    else:
        raise rl.ReleaseError(
            f"no GRID splits: the official release holds underground_reid/{SPLITS_MAT} (field "
            f"trainIdxAll); put it in {meta.get('release')} and delete {builder.data_dir} to "
            "rebuild, or pass splits=<a JSON list of {\"train_ids\": [...], \"test_ids\": "
            "[...]}>")
    ids = np.unique(table.pids[rows["probe"]])
    pairs = check_splits(split_list, ids, source, check_counts)
    distractors = rows["gallery"][table.pids[rows["gallery"]] == DISTRACTOR_PID]
    trials = []
    for i, (train_ids, test_ids) in enumerate(pairs[:num_trials]):
        query = rl.rows_of(table, test_ids, rows["probe"])
        gallery = np.concatenate([rl.rows_of(table, test_ids, rows["gallery"]), distractors])
        trials.append(Trial(f"split{i}", rl.rows_of(table, train_ids), query, gallery))
    info = rl.base_info(builder, PROTOCOLS[protocol])
    info.update(splits_source=source, num_distractors=int(len(distractors)))
    return rl.make_reid_data("grid", protocol, table, trials, info)
