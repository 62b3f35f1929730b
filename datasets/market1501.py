"""Market-1501 (Zheng et al., ICCV 2015): 1,501 identities, 6 cameras, DPM-detected boxes.

Release: `Market-1501-v15.09.15.zip`, or the folder extracted from it, under the manual
directory, with `bounding_box_train/` (12,936 images, 751 ids), `query/` (3,368 images, 750
ids), `bounding_box_test/` (19,732 gallery images) and `gt_bbox/` (25,259 hand-drawn boxes, used
by the multi-query protocol). Names `<pid>_c<camera>s<sequence>_<frame:06d>_<box:02d>.jpg`,
e.g. `0002_c1s1_000451_03.jpg`; pid `0000` = distractor (a negative in every gallery), pid `-1`
(`-1_c1s1_...`) = junk (ignored in evaluation); camid = camera (1-6). Thumbs.db files of the
original zip are ignored. The full release is checked: the counts above and 750 real
identities in bounding_box_test (`check_counts=False` for a subset; then gt_bbox/ may be
missing, which only the multi-query protocol needs).

Always checked: file names, duplicates, training identities disjoint from query identities,
no junk or distractor in bounding_box_train/ and query/.

Protocols (one trial each; the evaluation rule that same-pid same-camera gallery images are
junk holds, `same_camera_junk=True`):
  - single_query: train = bounding_box_train, query = query, gallery = bounding_box_test;
  - multi_query: the same plus `Trial.multi_query` = the gt_bbox images that share a query's
    pid and camera (whose features are pooled with the query's; gt_bbox images of other
    (pid, camera) pairs are left out of the table).

load(protocol=None, data_dir=None, manual_dir=None, *, check_counts=True, skip_corrupt=False)
  -> ReidData
"""
from __future__ import annotations

import re

import numpy as np

from jlml_tf.data.types import DISTRACTOR_PID, JUNK_PID, Trial
from jlml_tf_datasets import release as rl

PROTOCOLS = {
    "single_query": "751 train ids; 3,368 queries against 19,732 gallery images (Market rules)",
    "multi_query": "as single_query, query features pooled over gt_bbox images of the same pid "
                   "and camera",
}
FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test",
           "gt_bbox": "gt_bbox"}
COUNTS = {"train": (12936, 751), "query": (3368, 750), "gallery": (19732, 750),
          "gt_bbox": (25259, 1501)}
NAME_RE = re.compile(r"^(-1|\d{4})_c([1-6])s(\d)_(\d{6})_(\d{2})\.jpg$")
EXPECTED_NAME = ("Market-1501 names <pid:04d or -1>_c<camera 1-6>s<sequence>_<frame:06d>_<box:02d>"
                 ".jpg, e.g. 0002_c1s1_000451_03.jpg")
DOWNLOAD = ("Download Market-1501-v15.09.15.zip (https://zheng-lab-anu.github.io/Project/"
            "project_reid.html) and put it, or the folder extracted from it, in the manual "
            "directory.")


def parse_name(name: str):
    m = NAME_RE.match(name)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), (int(m.group(3)), int(m.group(4)), int(m.group(5)))


class Market1501(rl.ReleaseBuilder):
    """Market-1501: 751 training and 750 test identities seen by 6 cameras."""

    name = "reid_market1501"
    DATASET = "Market-1501"
    HOMEPAGE = "https://zheng-lab-anu.github.io/Project/project_reid.html"
    MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD

    def _plan(self, manual_dir):
        release = rl.find_release(
            manual_dir, dataset="Market-1501",
            required=[FOLDERS["train"], FOLDERS["query"], FOLDERS["gallery"]],
            folder_names=["Market-1501-v15.09.15", "Market-1501", "market1501", "Market1501"],
            zip_names=["Market-1501-v15.09.15.zip", "Market-1501.zip"], download=DOWNLOAD)
        splits = {}
        for split, folder in FOLDERS.items():
            if split == "gt_bbox" and not release.is_dir(folder) and not self.check_counts:
                continue
            splits[split] = rl.scan_folder(release, folder, parse_name, EXPECTED_NAME)
        for split in ("train", "query"):
            for rec in splits[split]:
                if rec.pid in (DISTRACTOR_PID, JUNK_PID):
                    raise rl.ReleaseError(
                        f"unexpected file {release.where(rec.relpath)}: distractors (0000) and "
                        f"junk (-1) belong to {FOLDERS['gallery']}/ only")
        overlap = sorted({r.pid for r in splits["train"]} & {r.pid for r in splits["query"]})
        if overlap:
            raise rl.ReleaseError(f"{release.where()}: identities {overlap[:5]} are in both "
                                  f"{FOLDERS['train']}/ and query/; expected disjoint identities")
        if self.check_counts:
            for split, (images, ids) in COUNTS.items():
                where = release.where(FOLDERS[split])
                rl.check_count(len(splits[split]), images, "images", where)
                rl.check_count(rl.pid_count(splits[split]), ids, "identities", where)
        return rl.Plan(release, splits)


def load(protocol: str | None = None, data_dir: str | None = None,
         manual_dir: str | None = None, *, check_counts: bool = True, skip_corrupt: bool = False):
    protocol = rl.resolve_protocol(PROTOCOLS, protocol, "market1501")
    builder = rl.prepare_release(Market1501, data_dir=data_dir, manual_dir=manual_dir,
                                 check_counts=check_counts, skip_corrupt=skip_corrupt)
    multi = protocol == "multi_query"
    names = ["train", "query", "gallery"]
    if multi:
        if "gt_bbox" not in builder.info.splits:
            raise rl.ReleaseError(f"the prepared Market-1501 at {builder.data_dir} has no gt_bbox "
                                  "images (built from a release without gt_bbox/); the "
                                  "multi_query protocol needs them")
        names.append("gt_bbox")
    table, rows = rl.read_splits(builder, names)
    trial = Trial(protocol, rows["train"], rows["query"], rows["gallery"])
    info = rl.base_info(builder, PROTOCOLS[protocol])
    if multi:
        wanted = {(int(p), int(c)) for p, c in zip(table.pids[rows["query"]],
                                                   table.camids[rows["query"]])}
        gt = rows["gt_bbox"]
        keep = np.asarray([(int(p), int(c)) in wanted
                           for p, c in zip(table.pids[gt], table.camids[gt])], dtype=bool)
        gt = gt[keep]
        base_rows = np.concatenate([rows["train"], rows["query"], rows["gallery"]])
        table = table.subset(np.concatenate([base_rows, gt]))
        n_train, n_query = len(rows["train"]), len(rows["query"])
        start = len(base_rows)
        trial = Trial(protocol, np.arange(n_train), np.arange(n_train, n_train + n_query),
                      np.arange(n_train + n_query, start), np.arange(start, start + len(gt)))
        info["multi_query_images"] = int(len(gt))
    return rl.make_reid_data("market1501", protocol, table, [trial], info)
