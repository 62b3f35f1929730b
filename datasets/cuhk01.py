"""CUHK01 (Li, Zhao, Wang, ACCV 2012): 971 identities, 2 images in each of 2 camera views.

Release: the `campus/` folder of the official CUHK01 download (`CUHK01.zip`), extracted or not,
under the manual directory. Names `campus/<pid:04d><image:03d>.png`: images 001-002 are camera A
(camid 1), 003-004 camera B (camid 2); pid as in the name (0001-0971). The full release is
checked: 971 identities x 4 images = 3,884 images (`check_counts=False` for a subset).

Protocols (10 trials each; trial t uses `numpy.random.default_rng(t)`):
  - ids are split by a random permutation of the sorted identities: the first N_train are
    training identities (all 4 images each), the next N_test test identities;
  - probe: one image of camera A per test identity, drawn with the same generator;
  - gallery: camera B images of the test identities: one drawn per identity (single shot)
    or both (multi shot).
  The draws happen in this order, so single and multi shot of the same size share the trial's
  identities and probes. 871_100 and 485_486 differ only in the split sizes.

load(protocol=None, data_dir=None, manual_dir=None, *, check_counts=True, skip_corrupt=False,
     num_trials=10, num_train_ids=None, num_test_ids=None) -> ReidData
  num_trials: the first trials only; num_train_ids / num_test_ids: override the protocol's
  split sizes (for subsets).
"""
from __future__ import annotations

import re

import numpy as np

from jlml_tf.data.types import Trial
from jlml_tf_datasets import release as rl

PROTOCOLS = {
    "871_100_single_shot": "871 train / 100 test ids, probe 1 camera-A image, gallery 1 camera-B "
                           "image per id, 10 seeded trials",
    "871_100_multi_shot": "871 train / 100 test ids, probe 1 camera-A image, gallery both "
                          "camera-B images per id, 10 seeded trials",
    "485_486_single_shot": "485 train / 486 test ids, probe 1 camera-A image, gallery 1 camera-B "
                           "image per id, 10 seeded trials",
    "485_486_multi_shot": "485 train / 486 test ids, probe 1 camera-A image, gallery both "
                          "camera-B images per id, 10 seeded trials",
    rl.TRAIN_ALL: rl.TRAIN_ALL_DESCRIPTION,
}
NUM_IDS = 971
IMAGES_PER_ID = 4
NUM_IMAGES = NUM_IDS * IMAGES_PER_ID
NUM_TRIALS = 10
CAMERA_A, CAMERA_B = 1, 2
NAME_RE = re.compile(r"^(\d{4})(\d{3})\.png$", re.IGNORECASE)
EXPECTED_NAME = "names <pid:04d><image:03d>.png with image 001-004, e.g. 0001001.png"
DOWNLOAD = ("Request CUHK01 from its authors (http://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification"
            ".html) and put CUHK01.zip, or the extracted campus/ folder, in the manual directory.")


def parse_name(name: str):
    m = NAME_RE.match(name)
    if not m:
        return None
    pid, image = int(m.group(1)), int(m.group(2))
    if pid < 1 or not 1 <= image <= IMAGES_PER_ID:
        return None
    return pid, CAMERA_A if image <= 2 else CAMERA_B, (image,)


class Cuhk01(rl.ReleaseBuilder):
    """CUHK01 person re-identification: 971 identities, 2 cameras, 2 images per camera."""

    name = "reid_cuhk01"
    DATASET = "CUHK01"
    HOMEPAGE = "http://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html"
    MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD

    def _plan(self, manual_dir):
        release = rl.find_release(manual_dir, dataset="CUHK01", required=["campus"],
                                  folder_names=["CUHK01", "cuhk01"],
                                  zip_names=["CUHK01.zip", "cuhk01.zip", "campus.zip"],
                                  download=DOWNLOAD)
        records = rl.scan_folder(release, "campus", parse_name, EXPECTED_NAME)
        if self.check_counts:
            where = release.where("campus")
            rl.check_count(len(records), NUM_IMAGES, "images", where)
            rl.check_count(rl.pid_count(records), NUM_IDS, "identities", where)
            per_id: dict[int, list[str]] = {}
            for rec in records:
                per_id.setdefault(rec.pid, []).append(rec.relpath)
            for pid, files in sorted(per_id.items()):
                if len(files) != IMAGES_PER_ID:
                    raise rl.ReleaseError(
                        f"{where}: identity {pid:04d} has {len(files)} images "
                        f"({', '.join(files)}), expected {IMAGES_PER_ID} (001-004); "
                        f"{rl.CHECK_COUNTS_HINT}")
        return rl.Plan(release, {"images": records})


def protocol_sizes(protocol: str) -> tuple[int, int, bool]:
    train, test, shot, _ = protocol.split("_")
    return int(train), int(test), shot == "multi"


def load(protocol: str | None = None, data_dir: str | None = None,
         manual_dir: str | None = None, *, check_counts: bool = True, skip_corrupt: bool = False,
         num_trials: int = NUM_TRIALS, num_train_ids: int | None = None,
         num_test_ids: int | None = None):
    protocol = rl.resolve_protocol(PROTOCOLS, protocol, "cuhk01")
    if protocol == rl.TRAIN_ALL:
        builder = rl.prepare_release(Cuhk01, data_dir=data_dir, manual_dir=manual_dir,
                                     check_counts=check_counts, skip_corrupt=skip_corrupt)
        table, _ = rl.read_splits(builder, ["images"])
        return rl.make_reid_data("cuhk01", protocol, table, [rl.train_all_trial(table)],
                                 rl.base_info(builder, PROTOCOLS[protocol]))
    n_train, n_test, multi_shot = protocol_sizes(protocol)
    n_train = n_train if num_train_ids is None else int(num_train_ids)
    n_test = n_test if num_test_ids is None else int(num_test_ids)
    builder = rl.prepare_release(Cuhk01, data_dir=data_dir, manual_dir=manual_dir,
                                 check_counts=check_counts, skip_corrupt=skip_corrupt)
    table, _ = rl.read_splits(builder, ["images"])
    all_ids = np.unique(table.pids)
    trials = []
    for t in range(min(int(num_trials), NUM_TRIALS)):
        rng = np.random.default_rng(t)
        train_ids, test_ids = rl.split_ids(all_ids, n_train, n_test, rng)
        probe = rl.one_per_id(table, rl.rows_of(table, test_ids, camids=[CAMERA_A]), rng)
        gallery = rl.rows_of(table, test_ids, camids=[CAMERA_B])
        if not multi_shot:
            gallery = rl.one_per_id(table, gallery, rng)
        probe = probe[np.isin(table.pids[probe], table.pids[gallery])]
        trials.append(Trial(f"trial{t}", rl.rows_of(table, train_ids), probe, gallery))
    info = rl.base_info(builder, PROTOCOLS[protocol])
    info.update(seeds=[f"trial{t}: numpy.random.default_rng({t})" for t in range(len(trials))],
                num_train_ids=n_train, num_test_ids=n_test)
    return rl.make_reid_data("cuhk01", protocol, table, trials, info)
