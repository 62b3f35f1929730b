"""CUHK03 (Li, Zhao, Xiao, Wang, CVPR 2014): 1,467 identities from 5 camera pairs.

Release: `cuhk03_release/cuhk-03.mat` (from `cuhk03_release.zip`, extracted or not) under the
manual directory. The file is MATLAB v7.3, i.e. HDF5, read with h5py:
  - `labeled` and `detected`: 5x1 cells (one per camera pair) of object references, each to an
    (ids x 10) cell of references to uint8 images; HDF5 keeps MATLAB arrays transposed, so a
    stored (3, W, H) image is read as (H, W, 3) and a stored (10, ids) cell as (ids, 10).
    Columns 1-5 are view 1 (the pair's first camera), 6-10 view 2. An empty cell (a tiny
    dataset such as shape (2,) of zeros, marked MATLAB_empty) is a missing image.
  - `testsets`: 20 references to (100 x 2) arrays of (pair, id within the pair), 1-based.
Images are stored PNG-encoded as `<labeled|detected>/<pair>_<id:03d>_<view>_<image:02d>.png`
(the names the new-protocol files use). pid = identities of the earlier pairs + id within the
pair (1..1467), so labelled and detected boxes of one person share the pid; camid =
2 * (pair - 1) + view (1..10). Checked on the full release: 5 pairs, 1,467 identities,
14,096 labelled and 14,097 detected images, 20 test sets of 100 identities (`check_counts=False`
for a subset); always checked: cell shapes, image shapes (3 channels), test set references.

The new protocol (Zhong et al., CVPR 2017) needs `cuhk03_new_protocol_config_labeled.mat` /
`_detected.mat` (MATLAB v5: `filelist`, `labels`, `camId`, `train_idx`, `query_idx`,
`gallery_idx`, 1-based) beside cuhk-03.mat or loose in the manual directory; they are read at
build time if present, else when the protocol is loaded.

A CUHK03 conversion to the Market-1501 folder layout (`bounding_box_train/`, `query/`,
`bounding_box_test/`, names `<pid:04d>_c<camera>...`), such as `cuhk03_pair1_market` or
`cuhk03-np/labeled`, is the protocol market_layout (also readable by the folder data set). It
has no known totals; names, duplicates, corrupt images and train/query identity overlap are
checked.

Protocols:
  - classic_labeled / classic_detected: 20 trials, one per test set: train = all images of the
    1,367 other identities; for each of the 100 test identities one view-1 image is the query
    and one view-2 image the gallery (single shot), drawn with `numpy.random.default_rng(t)` for
    trial t (queries first, then gallery). `classic_query="all"` makes every view-1 image of a
    test identity a query instead. A test identity without view-2 images has no query.
  - new_labeled / new_detected: 767 train / 700 test identities, one trial, Market rules.
  - market_layout: one trial from the Market-layout folders, Market rules.

load(protocol=None, data_dir=None, manual_dir=None, *, check_counts=True, skip_corrupt=False,
     classic_query="one", num_trials=None) -> ReidData
"""
from __future__ import annotations

import contextlib
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from jlml_tf.data.types import DISTRACTOR_PID, JUNK_PID, Trial
from jlml_tf_datasets import release as rl

PROTOCOLS = {
    "classic_labeled": "labelled boxes, 20 test sets: 1,367 train / 100 test ids, single shot "
                       "(one view-1 query, one view-2 gallery image per id)",
    "classic_detected": "detected boxes, 20 test sets: 1,367 train / 100 test ids, single shot",
    "new_labeled": "labelled boxes, new protocol 767 train / 700 test ids, Market rules",
    "new_detected": "detected boxes, new protocol 767 train / 700 test ids, Market rules",
    "market_layout": "a CUHK03 conversion in the Market-1501 folder layout, one trial",
}
MAT_NAME = "cuhk-03.mat"
SOURCES = ("labeled", "detected")
NUM_PAIRS = 5
NUM_IDS = 1467
NUM_IMAGES = {"labeled": 14096, "detected": 14097}
NUM_TESTSETS = 20
TEST_IDS = 100
NEW_TRAIN_IDS, NEW_TEST_IDS = 767, 700
COLUMNS = 10
NEW_CONFIG = "cuhk03_new_protocol_config_{}.mat"
FILE_RE = re.compile(r"^(\d)_(\d{3})_([12])_(\d{2})\.png$")
MARKET_RE = re.compile(r"^(-1|\d+)_c(\d+).*\.(jpe?g|png)$", re.IGNORECASE)
MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
EXPECTED_MARKET_NAME = ("Market-1501 style names <pid:04d>_c<camera>..., e.g. "
                        "0001_c1s1_000000_00.jpg")
DOWNLOAD = ("Request cuhk03_release.zip from the CUHK03 authors (http://www.ee.cuhk.edu.hk/~xgwang/"
            "CUHK_identification.html) and put it, or the extracted cuhk03_release/ folder with "
            "cuhk-03.mat, in the manual directory. For the new protocol also put "
            "cuhk03_new_protocol_config_labeled.mat and cuhk03_new_protocol_config_detected.mat "
            "(https://github.com/zhunzhong07/person-re-ranking, evaluation/data/CUHK03) there.")
MARKET_DOWNLOAD = ("Put the Market-layout CUHK03 folder (bounding_box_train/, query/, "
                   "bounding_box_test/), e.g. cuhk03_pair1_market/, in the manual directory or "
                   "pass it as manual_dir.")


def image_name(source: str, pair: int, index: int, column: int) -> str:
    """Table file name of the image in `column` (0-9) of identity `index` (1-based) of `pair`."""
    view = 1 if column < 5 else 2
    return f"{source}/{pair}_{index:03d}_{view}_{column + 1:02d}.png"


def camid_of(pair: int, view: int) -> int:
    return 2 * (pair - 1) + view


def view_of(camids: np.ndarray) -> np.ndarray:
    return (np.asarray(camids) - 1) % 2 + 1


# --------------------------------------------------------------------------------------------
# cuhk-03.mat
# --------------------------------------------------------------------------------------------

def _is_empty(ds) -> bool:
    """A MATLAB empty cell: flagged MATLAB_empty, zero-sized, or a short vector of zeros (how
    v7.3 files store the dimensions of []). Anything else that is not (3, W, H) is corrupt."""
    if np.any(ds.attrs.get("MATLAB_empty", 0)) or ds.size == 0:
        return True
    return ds.ndim == 1 and ds.size <= 3 and not np.any(ds[()])


def _refs(f, name: str, where: str) -> np.ndarray:
    if name not in f:
        raise rl.ReleaseError(f"{where} has no variable {name!r} (found {sorted(f.keys())}); "
                              "expected the official cuhk-03.mat")
    refs = np.asarray(f[name][()], dtype=object).ravel()
    if not all(_is_ref(r) for r in refs):
        raise rl.ReleaseError(f"{where}: {name} is not a cell array of references")
    return refs


def _is_ref(value) -> bool:
    import h5py

    return isinstance(value, h5py.Reference) and bool(value)


def open_mat(path: str, where: str):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise rl.ReleaseError(f"cannot read {where} as a MATLAB v7.3 (HDF5) file: {e}. "
                              f"Download it again. {DOWNLOAD}") from e


def read_cells(f, source: str, where: str) -> list[np.ndarray]:
    """Per camera pair, the (ids x 10) object array of image references."""
    cells = []
    for p, ref in enumerate(_refs(f, source, where), start=1):
        cell = np.asarray(f[ref][()], dtype=object).T
        if cell.ndim != 2 or cell.shape[1] != COLUMNS:
            raise rl.ReleaseError(f"{where}: {source}{{{p}}} has shape {cell.shape[::-1]} as "
                                  f"stored; expected (10, ids) (MATLAB ids x 10)")
        cells.append(cell)
    return cells


def scan_mat(f, source: str, where: str, skip_corrupt: bool):
    """(records, pair sizes, missing cells, skipped names) of one source of cuhk-03.mat."""
    cells = read_cells(f, source, where)
    records, skipped, missing, offset = [], [], 0, 0
    for p, cell in enumerate(cells, start=1):
        for i in range(cell.shape[0]):
            count = 0
            for c in range(COLUMNS):
                name = image_name(source, p, i + 1, c)
                if not _is_ref(cell[i, c]):
                    raise rl.ReleaseError(f"{where}: {source}{{{p}}}({i + 1},{c + 1}) is not an "
                                          "image reference")
                ds = f[cell[i, c]]
                if _is_empty(ds):
                    missing += 1
                    continue
                problem = None
                if ds.ndim != 3 or ds.shape[0] != 3 or min(ds.shape) < 1:
                    problem = (f"stored shape {ds.shape} is not (3, width, height), i.e. not an "
                               "RGB image")
                elif ds.dtype != np.uint8:
                    problem = f"dtype {ds.dtype} is not uint8"
                if problem:
                    full = f"{where}:{source}{{{p}}}({i + 1},{c + 1}) ({name})"
                    if not skip_corrupt:
                        raise rl.ReleaseError(rl.corrupt_message(full, problem))
                    logging.warning("skipping corrupt image %s: %s", full, problem)
                    skipped.append(name)
                    continue
                view = 1 if c < 5 else 2
                records.append(rl.Record(name, offset + i + 1, camid_of(p, view), (p, i, c)))
                count += 1
            if count == 0 and not any(s.startswith(f"{source}/{p}_{i + 1:03d}_") for s in skipped):
                raise rl.ReleaseError(f"{where}: {source} identity {i + 1} of pair {p} has no "
                                      "images; expected at least one")
        offset += cell.shape[0]
    return records, [c.shape[0] for c in cells], missing, skipped


def read_testsets(f, where: str, sizes: list[int], check_counts: bool) -> list[list[int]]:
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    testsets = []
    for t, ref in enumerate(_refs(f, "testsets", where)):
        arr = np.asarray(f[ref][()]).T
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise rl.ReleaseError(f"{where}: testsets{{{t + 1}}} has shape {arr.shape}; "
                                  "expected (ids x 2) of (pair, id)")
        pids = []
        for pair, index in np.rint(arr).astype(int):
            if not 1 <= pair <= len(sizes) or not 1 <= index <= sizes[pair - 1]:
                raise rl.ReleaseError(f"{where}: testsets{{{t + 1}}} names pair {pair} id "
                                      f"{index}, which is not in the release")
            pids.append(int(offsets[pair - 1] + index))
        if len(set(pids)) != len(pids):
            raise rl.ReleaseError(f"{where}: testsets{{{t + 1}}} lists an identity twice")
        if check_counts:
            rl.check_count(len(pids), TEST_IDS, f"identities in testsets{{{t + 1}}}", where)
        testsets.append(sorted(pids))
    if check_counts:
        rl.check_count(len(testsets), NUM_TESTSETS, "test sets (testsets)", where)
    return testsets


# --------------------------------------------------------------------------------------------
# New protocol configuration
# --------------------------------------------------------------------------------------------

def _mat_string(value) -> str:
    while isinstance(value, np.ndarray):
        if value.size == 0:
            return ""
        value = value.ravel()[0]
    return str(value)


def read_new_protocol(path: str, where: str, source: str, available: set[str],
                      check_counts: bool) -> dict[str, list[str]]:
    """{train, query, gallery: table file names} of a new-protocol config, checked."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # noqa: BLE001 - any reader failure means an unusable file
        raise rl.ReleaseError(f"cannot read {where}: {e}") from e
    keys = ("filelist", "labels", "camId", "train_idx", "query_idx", "gallery_idx")
    missing = [k for k in keys if k not in mat]
    if missing:
        raise rl.ReleaseError(f"{where} lacks {', '.join(missing)}; expected the fields "
                              f"{', '.join(keys)}")
    files = [_mat_string(x) for x in np.asarray(mat["filelist"], dtype=object).ravel()]
    labels = np.asarray(mat["labels"]).ravel().astype(np.int64)
    cams = np.asarray(mat["camId"]).ravel().astype(np.int64)
    if not len(files) == len(labels) == len(cams):
        raise rl.ReleaseError(f"{where}: filelist, labels and camId differ in length "
                              f"({len(files)}, {len(labels)}, {len(cams)})")
    label_of_person: dict[tuple[int, int], int] = {}
    person_of_label: dict[int, tuple[int, int]] = {}
    names, name_labels = [], []
    for name, label, cam in zip(files, labels, cams):
        m = FILE_RE.match(name)
        if not m:
            raise rl.ReleaseError(f"{where}: filelist entry {name!r} is not "
                                  "<pair>_<id:03d>_<view>_<image:02d>.png")
        person, view = (int(m.group(1)), int(m.group(2))), int(m.group(3))
        if view != cam:
            raise rl.ReleaseError(f"{where}: {name} has camId {cam}, expected its view {view}")
        if label_of_person.setdefault(person, int(label)) != label or \
                person_of_label.setdefault(int(label), person) != person:
            raise rl.ReleaseError(f"{where}: label {label} of {name} does not match the other "
                                  "images of that person")
        full = f"{source}/{name}"
        if full not in available:
            raise rl.ReleaseError(f"{where}: {name} is not an image of the {source} boxes in "
                                  "cuhk-03.mat (an empty cell, or another release)")
        names.append(full)
        name_labels.append(int(label))
    out, ids = {}, {}
    for split in ("train", "query", "gallery"):
        idx = np.asarray(mat[f"{split}_idx"]).ravel().astype(np.int64) - 1
        if idx.size and (idx.min() < 0 or idx.max() >= len(names)):
            raise rl.ReleaseError(f"{where}: {split}_idx points outside filelist (1-based, "
                                  f"1..{len(names)})")
        out[split] = [names[i] for i in idx]
        ids[split] = {name_labels[i] for i in idx}
    overlap = ids["train"] & (ids["query"] | ids["gallery"])
    if overlap:
        raise rl.ReleaseError(f"{where}: labels {sorted(overlap)[:5]} are both training and "
                              "test identities")
    if check_counts:
        rl.check_count(len(ids["train"]), NEW_TRAIN_IDS, "training identities", where)
        rl.check_count(len(ids["query"]), NEW_TEST_IDS, "query identities", where)
        rl.check_count(len(ids["gallery"]), NEW_TEST_IDS, "gallery identities", where)
    return out


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------

class Cuhk03(rl.ReleaseBuilder):
    """CUHK03: labelled and detected boxes of 1,467 identities from 5 camera pairs."""

    name = "reid_cuhk03"
    DATASET = "CUHK03"
    HOMEPAGE = "http://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html"
    MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="labeled", description="labelled boxes of cuhk-03.mat"),
        tfds.core.BuilderConfig(name="detected", description="detected boxes of cuhk-03.mat"),
        tfds.core.BuilderConfig(name="market_layout",
                                   description="a CUHK03 conversion in the Market-1501 layout"),
    ]

    def _plan(self, manual_dir):
        if self.builder_config.name == "market_layout":
            return self._plan_market_layout(manual_dir)
        source = self.builder_config.name
        release = rl.find_release(manual_dir, dataset="CUHK03", required=[MAT_NAME],
                                  folder_names=["cuhk03_release", "cuhk03", "CUHK03"],
                                  zip_names=["cuhk03_release.zip"], download=DOWNLOAD)
        where = release.where(MAT_NAME)
        stack = contextlib.ExitStack()
        try:
            path = stack.enter_context(release.local_file(MAT_NAME))
            with open_mat(path, where) as f:
                records, sizes, missing, skipped = scan_mat(f, source, where, self.skip_corrupt)
                if self.check_counts:
                    rl.check_count(len(sizes), NUM_PAIRS, "camera pairs", where)
                    rl.check_count(sum(sizes), NUM_IDS, f"{source} identities", where)
                    rl.check_count(len(records) + len(skipped), NUM_IMAGES[source],
                                   f"{source} images", where)
                testsets = read_testsets(f, where, sizes, self.check_counts)
            metadata = {"source": source, "pair_sizes": sizes, "testsets": testsets,
                        "missing_cells": missing, "skipped_files": skipped,
                        "new_protocol": None, "new_protocol_source": None}
            found = rl.find_file(manual_dir, [NEW_CONFIG.format(source)], release)
            if found is not None:
                cfg_release, cfg_name = found
                with cfg_release.local_file(cfg_name) as cfg_path:
                    metadata["new_protocol"] = read_new_protocol(
                        cfg_path, cfg_release.where(cfg_name), source,
                        {r.relpath for r in records}, self.check_counts)
                metadata["new_protocol_source"] = cfg_release.where(cfg_name)
        except BaseException:
            stack.close()
            raise

        def reader(recs):
            try:
                with open_mat(path, where) as f:
                    cells = read_cells(f, source, where)
                    for rec in recs:
                        p, i, c = rec.fields
                        try:
                            image = np.asarray(f[cells[p - 1][i, c]][()]).T
                        except Exception as e:  # noqa: BLE001 - unreadable HDF5 data
                            problem = f"cannot be read ({type(e).__name__}: {e})"
                            full = f"{where}:{source}{{{p}}}({i + 1},{c + 1}) ({rec.relpath})"
                            if not self.skip_corrupt:
                                raise rl.ReleaseError(rl.corrupt_message(full, problem)) from e
                            logging.warning("skipping corrupt image %s: %s", full, problem)
                            self.info.metadata["skipped_files"] = sorted(
                                list(self.info.metadata["skipped_files"]) + [rec.relpath])
                            continue
                        yield rec, rl.encode_png(image)
            finally:
                stack.close()

        return rl.Plan(release, {"images": records}, metadata, reader=reader)

    def _plan_market_layout(self, manual_dir):
        release = rl.find_release(
            manual_dir, dataset="CUHK03 (Market layout)", required=list(MARKET_FOLDERS.values()),
            folder_names=["cuhk03_pair1_market", "cuhk03_market", os.path.join("cuhk03-np",
                                                                               "labeled")],
            zip_names=["cuhk03_pair1_market.zip"], download=MARKET_DOWNLOAD)

        def parse(name):
            m = MARKET_RE.match(name)
            return None if not m else (int(m.group(1)), int(m.group(2)), ())

        splits = {split: rl.scan_folder(release, folder, parse, EXPECTED_MARKET_NAME)
                  for split, folder in MARKET_FOLDERS.items()}
        overlap = sorted({r.pid for r in splits["train"]} & {r.pid for r in splits["query"]})
        if overlap:
            raise rl.ReleaseError(f"{release.where()}: identities {overlap[:5]} are in both "
                                  "bounding_box_train/ and query/; expected disjoint identities")
        for rec in splits["train"] + splits["query"]:
            if rec.pid in (DISTRACTOR_PID, JUNK_PID):
                raise rl.ReleaseError(f"unexpected file {release.where(rec.relpath)}: "
                                      "distractors and junk belong to bounding_box_test/ only")
        return rl.Plan(release, splits)


# --------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------

def _new_protocol_lists(builder, source: str, manual_dir: str | None, data_dir: str | None,
                        table, check_counts: bool) -> tuple[dict[str, list[str]], str]:
    meta = builder.info.metadata
    if meta.get("new_protocol"):
        return meta["new_protocol"], meta["new_protocol_source"]
    manual = manual_dir or rl.default_manual_dir(data_dir)
    release_root = meta.get("release")
    candidates = [manual]
    if release_root and not str(release_root).endswith(".zip") and ".zip:" not in str(
            release_root):
        candidates.insert(0, release_root)
    name = NEW_CONFIG.format(source)
    for folder in candidates:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return read_new_protocol(path, path, source, set(table.filenames.tolist()),
                                     check_counts), path
    raise rl.ReleaseError(
        f"the CUHK03 new protocol needs {name}: put it at {os.path.join(manual, name)} (from "
        "https://github.com/zhunzhong07/person-re-ranking, evaluation/data/CUHK03)")


def load(protocol: str | None = None, data_dir: str | None = None,
         manual_dir: str | None = None, *, check_counts: bool = True, skip_corrupt: bool = False,
         classic_query: str = "one", num_trials: int | None = None):
    protocol = rl.resolve_protocol(PROTOCOLS, protocol, "cuhk03")
    if classic_query not in ("one", "all"):
        raise ValueError(f"classic_query must be 'one' or 'all', not {classic_query!r}")
    manual_dir = rl.as_path(manual_dir)
    config = "market_layout" if protocol == "market_layout" else protocol.split("_", 1)[1]
    builder = rl.prepare_release(Cuhk03, data_dir=data_dir, manual_dir=manual_dir, config=config,
                                 check_counts=check_counts, skip_corrupt=skip_corrupt)
    info = rl.base_info(builder, PROTOCOLS[protocol])
    meta = builder.info.metadata
    if protocol == "market_layout":
        table, rows = rl.read_splits(builder, ["train", "query", "gallery"])
        info["counts"] = {s: {"images": int(len(r)), "ids": int(len(np.unique(table.pids[r])))}
                          for s, r in rows.items()}
        trial = Trial(protocol, rows["train"], rows["query"], rows["gallery"])
        return rl.make_reid_data("cuhk03", protocol, table, [trial], info)
    table, _ = rl.read_splits(builder, ["images"])
    info.update(pair_sizes=list(meta["pair_sizes"]), missing_cells=int(meta["missing_cells"]))
    if protocol.startswith("new_"):
        lists, source = _new_protocol_lists(builder, config, manual_dir, data_dir, table,
                                            check_counts)
        row_of = {name: i for i, name in enumerate(table.filenames.tolist())}
        skipped = set(meta.get("skipped_files", []))
        picked = {}
        for split, names in lists.items():
            lost = [n for n in names if n in skipped]
            if lost:
                logging.warning("CUHK03 %s: %d %s images were skipped as corrupt", protocol,
                                len(lost), split)
            picked[split] = np.asarray([row_of[n] for n in names if n not in skipped], np.int64)
        info["new_protocol_source"] = source
        trial = Trial("new", picked["train"], picked["query"], picked["gallery"])
        return rl.make_reid_data("cuhk03", protocol, table, [trial], info)
    view = view_of(table.camids)
    trials = []
    for t, test_ids in enumerate(list(meta["testsets"])[:num_trials]):
        rng = np.random.default_rng(t)
        test = np.isin(table.pids, np.asarray(test_ids, np.int64))
        view1 = np.flatnonzero(test & (view == 1))
        view2 = np.flatnonzero(test & (view == 2))
        query = rl.one_per_id(table, view1, rng) if classic_query == "one" else view1
        gallery = rl.one_per_id(table, view2, rng)
        query = query[np.isin(table.pids[query], table.pids[gallery])]
        trials.append(Trial(f"testset{t}", np.flatnonzero(~test), query, gallery))
    info.update(classic_query=classic_query,
                seeds=[f"testset{t}: numpy.random.default_rng({t})" for t in range(len(trials))])
    return rl.make_reid_data("cuhk03", protocol, table, trials, info)

