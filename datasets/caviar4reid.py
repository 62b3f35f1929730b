"""CAVIAR4REID (Cheng, Cristani, Stoppa, Bazzani, Murino, BMVC 2011): 1,220 images of 72 people.

Release: `CAVIAR4REID/caviarRAW/` (from `CAVIAR4REID.zip`, extracted or not) under the manual
directory. Names `caviarRAW/<pid:04d><image:03d>.jpg`, e.g. `0001001.jpg`, pid 0001-0072 as in
the name. 50 identities have 20 images: 001-010 from one camera (camid 1), 011-020 from the
other (camid 2). The other 22 have 10 images (001-010) from a single camera, which camera is not
known: their camid is -1 (unknown; more generally, an identity without images 011-020 has camid
-1). Image sizes vary (about 17x39 to 72x144). The full release is checked: 1,220 images, 72
identities, each with exactly images 001-010 or 001-020 (which makes 50 of them two-camera
identities; `check_counts=False` for a subset).

Byte-identical files: the release holds one pair of byte-identical images of one person. They
are kept (different names, the same person, so both are valid samples) and listed in
`ReidData.info["identical_images"]`. Byte-identical images of *different* people would be a
labelling error: a ReleaseError naming both files (unless check_counts=False).

Protocols (identities split by `numpy.random.default_rng(t)` for trial t, permuting the sorted
two-camera identities):
  - 25_25_multi_shot (the default): the 50 two-camera identities, 10 trials of 25 train / 25
    test identities. Train: all 20 images of each training identity. Query: every camera-1
    image of the test identities (10 each, each one its own query); gallery: every camera-2
    image of the test identities (10 each, multi shot; a
    query scores the rank of its first true match).
  - train_all: training data only, for `--extra_train=caviar4reid:train_all:<manual_dir>`: one
    trial whose train rows are all 1,220 images of the 72 identities; query and gallery are
    empty, so it cannot be evaluated on (as `--dataset` it has nothing to test).

load(protocol=None, data_dir=None, manual_dir=None, *, check_counts=True, skip_corrupt=False,
     num_trials=10, num_train_ids=None, num_test_ids=None) -> ReidData
  num_trials: the first trials only; num_train_ids / num_test_ids: override 25 / 25 (subsets).
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

from jlml_tf.data.types import UNKNOWN_CAMERA, Trial
from jlml_tf_datasets import release as rl

PROTOCOLS = {
    "25_25_multi_shot": "50 two-camera ids: 25 train / 25 test, queries = every camera-1 image, "
                        "gallery = every camera-2 image of the test ids, 10 seeded trials",
    rl.TRAIN_ALL: "training only (for --extra_train): all 1,220 images of the 72 ids, one trial "
                 "with empty query and gallery",
}
NUM_IMAGES = 1220
NUM_IDS = 72
NUM_TWO_CAMERA_IDS = 50
IMAGES_PER_CAMERA = 10
NUM_TRIALS = 10
SPLIT_IDS = 25
CAMERA_1, CAMERA_2 = 1, 2
FOLDER = "caviarRAW"
NAME_RE = re.compile(r"^(\d{4})(\d{3})\.jpg$", re.IGNORECASE)
EXPECTED_NAME = ("names <pid:04d><image:03d>.jpg with pid from 0001 and image 001-020, e.g. "
                 "0001001.jpg")
DOWNLOAD = ("Download CAVIAR4REID.zip (http://www.lorisbazzani.info/caviar4reid.html) and put "
            "it, or the extracted CAVIAR4REID/ folder (with caviarRAW/), in the manual directory.")


def parse_name(name: str):
    """(pid, camid by image number, (image,)); the camid of one-camera identities is fixed later."""
    m = NAME_RE.match(name)
    if not m:
        return None
    pid, image = int(m.group(1)), int(m.group(2))
    if pid < 1 or not 1 <= image <= 2 * IMAGES_PER_CAMERA:
        return None
    return pid, CAMERA_1 if image <= IMAGES_PER_CAMERA else CAMERA_2, (image,)


def _images_by_id(records) -> dict[int, list[rl.Record]]:
    per_id: dict[int, list[rl.Record]] = {}
    for rec in records:
        per_id.setdefault(rec.pid, []).append(rec)
    return per_id


def _identical_groups(release: rl.Release, records) -> list[list[rl.Record]]:
    """Groups (2 or more) of records whose files are byte-identical, in file order."""
    by_digest: dict[str, list[rl.Record]] = {}
    for rec in records:
        by_digest.setdefault(hashlib.sha256(release.read(rec.relpath)).hexdigest(), []).append(rec)
    return sorted((g for g in by_digest.values() if len(g) > 1), key=lambda g: g[0].relpath)


class Caviar4reid(rl.ReleaseBuilder):
    """CAVIAR4REID: 72 identities, 50 of them in two cameras, 10 images per camera."""

    name = "reid_caviar4reid"
    DATASET = "CAVIAR4REID"
    HOMEPAGE = "http://www.lorisbazzani.info/caviar4reid.html"
    MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD

    def _plan(self, manual_dir):
        release = rl.find_release(
            manual_dir, dataset="CAVIAR4REID", required=[FOLDER],
            folder_names=["CAVIAR4REID", "caviar4reid", "caviar4reid/CAVIAR4REID"],
            zip_names=["CAVIAR4REID.zip", "caviar4reid.zip"], download=DOWNLOAD)
        records = rl.scan_folder(release, FOLDER, parse_name, EXPECTED_NAME)
        per_id = _images_by_id(records)
        if self.check_counts:
            self._check_counts(release, records, per_id)
        # An identity without camera-2 images (011-020) was seen by one camera: which one is
        # not known.
        one_camera = {pid for pid, recs in per_id.items()
                      if all(r.camid == CAMERA_1 for r in recs)}
        records = [rl.Record(r.relpath, r.pid, UNKNOWN_CAMERA, r.fields) if r.pid in one_camera
                   else r for r in records]
        identical = _identical_groups(release, records)
        for group in identical:
            if len({r.pid for r in group}) > 1 and self.check_counts:
                files = ", ".join(release.where(r.relpath) for r in group)
                raise rl.ReleaseError(
                    f"identical files {files}: the same image labelled as different people "
                    f"({', '.join(f'{r.pid:04d}' for r in group)}); expected each person's "
                    f"images to be their own; {rl.CHECK_COUNTS_HINT}")
        metadata = {"identical_images": [[r.relpath for r in g] for g in identical],
                    "one_camera_ids": sorted(one_camera)}
        return rl.Plan(release, {"images": records}, metadata)

    @staticmethod
    def _check_counts(release, records, per_id) -> None:
        where = release.where(FOLDER)
        rl.check_count(len(records), NUM_IMAGES, "images", where)
        rl.check_count(len(per_id), NUM_IDS, "identities", where)
        for pid, recs in sorted(per_id.items()):
            present = {r.fields[0] for r in recs}
            last = 2 * IMAGES_PER_CAMERA if max(present) > IMAGES_PER_CAMERA else IMAGES_PER_CAMERA
            missing = [f"{pid:04d}{i:03d}.jpg" for i in range(1, last + 1) if i not in present]
            if missing:
                raise rl.ReleaseError(
                    f"{where}: identity {pid:04d} has {len(recs)} images, missing "
                    f"{', '.join(missing)}; expected images 001-010 (one camera) or 001-020 "
                    f"(both cameras); {rl.CHECK_COUNTS_HINT}")
        # 1,220 images of 72 identities with 10 or 20 each: 50 have 20 (both cameras).


def load(protocol: str | None = None, data_dir: str | None = None,
         manual_dir: str | None = None, *, check_counts: bool = True, skip_corrupt: bool = False,
         num_trials: int = NUM_TRIALS, num_train_ids: int | None = None,
         num_test_ids: int | None = None):
    protocol = rl.resolve_protocol(PROTOCOLS, protocol, "caviar4reid")
    builder = rl.prepare_release(Caviar4reid, data_dir=data_dir, manual_dir=rl.as_path(manual_dir),
                                 check_counts=check_counts, skip_corrupt=skip_corrupt)
    table, _ = rl.read_splits(builder, ["images"])
    meta = builder.info.metadata
    info = rl.base_info(builder, PROTOCOLS[protocol])
    info.update(identical_images=[list(g) for g in meta.get("identical_images", [])],
                num_ids=int(len(np.unique(table.pids))),
                one_camera_ids=[int(p) for p in meta.get("one_camera_ids", [])])
    if protocol == rl.TRAIN_ALL:
        empty = np.zeros(0, np.int64)
        trials = [Trial("all", np.arange(len(table), dtype=np.int64), empty, empty)]
        return rl.make_reid_data("caviar4reid", protocol, table, trials, info)

    n_train = SPLIT_IDS if num_train_ids is None else int(num_train_ids)
    n_test = SPLIT_IDS if num_test_ids is None else int(num_test_ids)
    both = np.intersect1d(table.pids[table.camids == CAMERA_1], table.pids[table.camids == CAMERA_2])
    trials = []
    for t in range(min(int(num_trials), NUM_TRIALS)):
        rng = np.random.default_rng(t)
        train_ids, test_ids = rl.split_ids(both, n_train, n_test, rng)
        query = rl.rows_of(table, test_ids, camids=[CAMERA_1])
        gallery = rl.rows_of(table, test_ids, camids=[CAMERA_2])
        trials.append(Trial(f"trial{t}", rl.rows_of(table, train_ids), query, gallery))
    info.update(seeds=[f"trial{t}: numpy.random.default_rng({t})" for t in range(len(trials))],
                num_train_ids=n_train, num_test_ids=n_test, num_two_camera_ids=int(len(both)))
    return rl.make_reid_data("caviar4reid", protocol, table, trials, info)
