"""VIPeR (Gray, Brennan, Tao, PETS 2007): 632 identities, one image in each of 2 cameras.

Release: `VIPeR/` (from `VIPeR.v1.0.zip`, extracted or not) under the manual directory, with
`cam_a/` and `cam_b/`, 632 BMP images each (48x128). Names `<number:03d>_<angle>.bmp`, e.g.
`cam_a/000_45.bmp` and `cam_b/000_45.bmp`: the number identifies the person in both cameras
(numbers run 000-873 with gaps), the angle is the viewpoint in degrees. pid = number + 1, so
that `000` does not become the distractor pid 0; camid 1 = cam_a, 2 = cam_b. The full release
is checked: 632 images per camera, each identity exactly once in each camera
(`check_counts=False` for a subset).

Images are stored as PNG, converted losslessly from the BMPs at build time (same pixels): most
release BMPs carry 2 bytes after their pixel data, which TensorFlow's BMP decoder rejects
("Input size should match (header_size + row_size * abs_height) but they differ by 2"), so the
table holds bytes that `tf.io.decode_image`, `jlml_tf.data.pipeline.decode_and_resize` and the
export's `serving_bytes` signature all read. Builder version 1.1.0 (1.0.0 stored the BMPs).

Protocol 316_316: 10 trials, trial t uses `numpy.random.default_rng(t)` to permute the sorted
identities; the first 316 are training identities (both images), the next 316 test
identities: probe = their cam_a images, gallery = their cam_b images (single shot).

load(protocol=None, data_dir=None, manual_dir=None, *, check_counts=True, skip_corrupt=False,
     num_trials=10, num_train_ids=None, num_test_ids=None) -> ReidData
"""
from __future__ import annotations

import re

import numpy as np
import tensorflow_datasets as tfds

from jlml_tf.data.types import Trial
from jlml_tf_datasets import release as rl

PROTOCOLS = {
    "316_316": "316 train / 316 test ids, probe cam_a, gallery cam_b, 10 seeded trials",
    rl.TRAIN_ALL: rl.TRAIN_ALL_DESCRIPTION,
}
NUM_IDS = 632
NUM_TRIALS = 10
CAM_A, CAM_B = 1, 2
NAME_RE = re.compile(r"^(\d{3})_(\d{1,3})\.bmp$", re.IGNORECASE)
EXPECTED_NAME = "names <number:03d>_<angle>.bmp, e.g. 000_45.bmp"
DOWNLOAD = ("Download VIPeR.v1.0.zip (https://vision.soe.ucsc.edu/node/178) and put it, or the "
            "extracted VIPeR/ folder (with cam_a/ and cam_b/), in the manual directory.")


def _parser(camid: int):
    def parse(name: str):
        m = NAME_RE.match(name)
        if not m:
            return None
        return int(m.group(1)) + 1, camid, (int(m.group(2)),)
    return parse


def bmp_to_png(data: bytes) -> bytes:
    """Encoded image bytes (the release BMPs) -> RGB PNG bytes with the same pixels."""
    return data if data[:8] == b"\x89PNG\r\n\x1a\n" else rl.to_rgb_png(data)


class Viper(rl.ReleaseBuilder):
    """VIPeR: 632 identities, one image each in cam_a and cam_b."""

    name = "reid_viper"
    DATASET = "VIPeR"
    HOMEPAGE = "https://vision.soe.ucsc.edu/node/178"
    MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First version (the release BMPs stored as they are).",
        "1.1.0": "Images stored as lossless PNG: TensorFlow's BMP decoder rejects the release "
                 "BMPs that carry 2 bytes after their pixel data.",
    }

    def _generate_examples(self, plan, records, converted):
        # The base class has already checked every image (corrupt ones raise or are skipped).
        for key, example in super()._generate_examples(plan, records, converted):
            example["image"] = bmp_to_png(example["image"])
            yield key, example

    def _plan(self, manual_dir):
        release = rl.find_release(manual_dir, dataset="VIPeR", required=["cam_a", "cam_b"],
                                  folder_names=["VIPeR", "viper", "VIPeR.v1.0"],
                                  zip_names=["VIPeR.v1.0.zip", "VIPeR.zip"], download=DOWNLOAD)
        cams = {}
        for folder, camid in (("cam_a", CAM_A), ("cam_b", CAM_B)):
            cams[folder] = rl.scan_folder(release, folder, _parser(camid), EXPECTED_NAME)
            rl.check_unique(cams[folder], lambda r: f"{r.pid - 1:03d}", release,
                            f"the {folder} image of person")
        if self.check_counts:
            for folder, records in cams.items():
                rl.check_count(len(records), NUM_IDS, "images", release.where(folder))
            a_ids = {r.pid for r in cams["cam_a"]}
            b_ids = {r.pid for r in cams["cam_b"]}
            if a_ids != b_ids:
                odd = sorted(f"{p - 1:03d}" for p in a_ids ^ b_ids)[:5]
                raise rl.ReleaseError(f"{release.where()}: persons {odd} are in only one of "
                                      "cam_a/ and cam_b/; expected every person in both; "
                                      f"{rl.CHECK_COUNTS_HINT}")
        return rl.Plan(release, {"images": cams["cam_a"] + cams["cam_b"]})


def load(protocol: str | None = None, data_dir: str | None = None,
         manual_dir: str | None = None, *, check_counts: bool = True, skip_corrupt: bool = False,
         num_trials: int = NUM_TRIALS, num_train_ids: int | None = None,
         num_test_ids: int | None = None):
    protocol = rl.resolve_protocol(PROTOCOLS, protocol, "viper")
    n_train = 316 if num_train_ids is None else int(num_train_ids)
    n_test = 316 if num_test_ids is None else int(num_test_ids)
    builder = rl.prepare_release(Viper, data_dir=data_dir, manual_dir=manual_dir,
                                 check_counts=check_counts, skip_corrupt=skip_corrupt)
    table, _ = rl.read_splits(builder, ["images"])
    if protocol == rl.TRAIN_ALL:
        return rl.make_reid_data("viper", protocol, table, [rl.train_all_trial(table)],
                                 rl.base_info(builder, PROTOCOLS[protocol]))
    trials = []
    for t in range(min(int(num_trials), NUM_TRIALS)):
        rng = np.random.default_rng(t)
        train_ids, test_ids = rl.split_ids(np.unique(table.pids), n_train, n_test, rng)
        query = rl.rows_of(table, test_ids, camids=[CAM_A])
        gallery = rl.rows_of(table, test_ids, camids=[CAM_B])
        query = query[np.isin(table.pids[query], table.pids[gallery])]
        trials.append(Trial(f"trial{t}", rl.rows_of(table, train_ids), query, gallery))
    info = rl.base_info(builder, PROTOCOLS[protocol])
    info.update(seeds=[f"trial{t}: numpy.random.default_rng({t})" for t in range(len(trials))],
                num_train_ids=n_train, num_test_ids=n_test)
    return rl.make_reid_data("viper", protocol, table, trials, info)
