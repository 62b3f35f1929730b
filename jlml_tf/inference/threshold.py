"""A distance threshold for "no match": calibration on labelled pairs, and its file.

A search returns the nearest gallery images whatever they are; to answer "this person is not in
the gallery" it needs a distance beyond which a pair is called a non-match. The threshold is
calibrated on labelled people the model was not trained on (`evaluate --calibrate_threshold`,
`calibrate_split`): identities the run held out from training, or, when the user asks for it,
the test trial's. On the training identities themselves the threshold is too lenient: the model
has learnt to tell those people apart, so unseen people, whom it separates less well, match
more often than the target (kept as the split "train", recorded as not held out). Pairs:

  true matches   pairs of images of the same identity seen by different cameras (the pairs a
                 search must find; same-camera pairs are easier and would flatter the rate);
  false matches  pairs of images of different identities.

A pair is accepted as a match when its distance is <= the threshold. For a target false-match
rate (FMR) f over N false-match distances s_1 <= ... <= s_N, at most m = floor(f N) of them
may be accepted. The threshold is placed half-way between the largest false-match distance that
may be accepted (the largest value below s_{m+1}; 0 when there is none) and s_{m+1}, the first
that must be rejected, so the achieved FMR is the largest one <= f (exactly f when f N is whole
and there are no ties at s_{m+1}). The true-match rate (TMR) is the fraction of true-match
distances <= the threshold.

Pure NumPy; distances are float32 L2 between L2-normalised embeddings, the ones `search` uses.

File (RUN/threshold.json):
    {"format": "jlml-threshold/1", "threshold": float, "metric": "l2",
     "target_false_match_rate": f, "false_match_rate": ..., "true_match_rate": ...,
     "num_true_pairs": ..., "num_false_pairs": ..., "num_false_pairs_total": ...,
     "source": {...where it was calibrated: dataset, trial, checkpoint, model_fingerprint,
                split ("validation" | "test" | "train"), held_out, identities, images...},
     "test": {...rates on the test trial's query x gallery pairs...},
     "unseen": {"false_match_rate", "true_match_rate", "how"}: the rates on people seen
               neither in training nor in calibration}
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib

import numpy as np

from jlml_tf.data.types import identity_folds
from jlml_tf.evaluation import distances as dist_lib
from jlml_tf.inference.gallery_index import resolve_model_path

FILE_NAME = "threshold.json"
FORMAT = "jlml-threshold/1"
DEFAULT_MAX_FALSE_PAIRS = 2_000_000  # a uniform sample beyond this: a rate needs no more
_BLOCK_ROWS = 512


@dataclasses.dataclass
class Calibration:
    threshold: float
    target_false_match_rate: float
    false_match_rate: float  # achieved on the calibration pairs
    true_match_rate: float  # at the threshold, on the calibration pairs
    num_true_pairs: int
    num_false_pairs: int  # false-match distances used (a sample when there are very many)
    num_false_pairs_total: int | None = None
    metric: str = "l2"
    source: dict = dataclasses.field(default_factory=dict)
    test: dict = dataclasses.field(default_factory=dict)
    # The rates this threshold implies on people seen neither in training nor in calibration,
    # and how they were measured (see `calibrate_split`); empty in older files.
    unseen: dict = dataclasses.field(default_factory=dict)

    @property
    def held_out(self) -> bool | None:
        """True if calibrated on identities the model was not trained on; None if unknown."""
        return self.source.get("held_out")

    def to_dict(self) -> dict:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @staticmethod
    def from_dict(d: dict) -> "Calibration":
        if d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} threshold file (format {d.get('format')!r})")
        names = {f.name for f in dataclasses.fields(Calibration)}
        return Calibration(**{k: v for k, v in d.items() if k in names})


# ----------------------------------------------------------------------------------------------
# Rates and the threshold


def match_rates(threshold: float, true_distances, false_distances) -> tuple[float, float]:
    """(true-match rate, false-match rate) when pairs at distance <= threshold are accepted.

    An empty set of pairs has rate NaN (nothing to measure)."""
    t = np.asarray(true_distances, np.float64).reshape(-1)
    f = np.asarray(false_distances, np.float64).reshape(-1)
    tmr = float((t <= threshold).mean()) if t.size else math.nan
    fmr = float((f <= threshold).mean()) if f.size else math.nan
    return tmr, fmr


def threshold_at_false_match_rate(false_distances, target: float) -> float:
    """The threshold whose false-match rate is the largest one <= target (see module doc)."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target false-match rate must be in [0, 1], got {target}")
    s = np.sort(np.asarray(false_distances, np.float64).reshape(-1))
    if not s.size:
        raise ValueError("no false-match pairs (different identities) to calibrate on: the "
                         "calibration split needs at least two identities")
    if not np.isfinite(s).all():
        raise ValueError("false-match distances contain NaN or inf")
    allowed = int(math.floor(target * s.size + 1e-9))  # tolerance: 0.01 * 300 is 2.9999...
    if allowed >= s.size:
        return float(s[-1])  # everything may be accepted
    upper = s[allowed]  # the first that must be rejected
    below = s[:allowed][s[:allowed] < upper]
    if below.size:
        return float((below[-1] + upper) / 2.0)
    # Nothing may be accepted: half-way to the nearest false match (distances are >= 0).
    return float(upper / 2.0) if upper > 0 else float(np.nextafter(upper, -np.inf))


def calibrate(true_distances, false_distances, target_false_match_rate: float,
              num_false_pairs_total: int | None = None, metric: str = "l2",
              source: dict | None = None) -> Calibration:
    """Threshold at the target false-match rate, with the rates it achieves."""
    threshold = threshold_at_false_match_rate(false_distances, target_false_match_rate)
    tmr, fmr = match_rates(threshold, true_distances, false_distances)
    return Calibration(threshold=threshold, target_false_match_rate=float(target_false_match_rate),
                       false_match_rate=fmr, true_match_rate=tmr,
                       num_true_pairs=int(np.size(true_distances)),
                       num_false_pairs=int(np.size(false_distances)),
                       num_false_pairs_total=num_false_pairs_total, metric=metric,
                       source=dict(source or {}))


# ----------------------------------------------------------------------------------------------
# Pairs from labelled features


def _cross_camera(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Different cameras, or a camera not known (-1): a pair a search must find."""
    return (a != b) | (a < 0) | (b < 0)


def pair_distances(features, pids, camids, max_false_pairs: int | None = DEFAULT_MAX_FALSE_PAIRS,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """L2 distances of the labelled pairs among `features` (each unordered pair once).

    Returns (true-match distances: same pid, different (or unknown) cameras; false-match distances:
    different pids; the total number of false-match pairs). Items with pid < 0 (junk) are
    ignored, and pid 0 (distractors, unknown people) only forms false pairs with pid > 0.
    When there are more than `max_false_pairs` false pairs, a uniform random sample of about
    that many (seeded) is returned; true pairs are always all returned. Computed a block of
    rows at a time, so memory is O(block x N), not O(N^2).
    """
    x = np.ascontiguousarray(features, np.float32)
    pids = np.asarray(pids, np.int64).reshape(-1)
    camids = np.asarray(camids, np.int64).reshape(-1)
    if x.ndim != 2 or len(x) != len(pids) or len(pids) != len(camids):
        raise ValueError(f"features {x.shape}, pids {pids.shape} and camids {camids.shape} "
                         "must have the same number of rows")
    keep = pids >= 0
    x, pids, camids = x[keep], pids[keep], camids[keep]
    n = len(x)
    labelled = pids > 0
    # Total false pairs: all pairs minus same-pid pairs among pid > 0, minus pid-0 pairs.
    _, counts = np.unique(pids[labelled], return_counts=True)
    zeros = int((~labelled).sum())
    total_false = n * (n - 1) // 2 - int((counts * (counts - 1) // 2).sum()) \
        - zeros * (zeros - 1) // 2
    keep_prob = 1.0
    if max_false_pairs is not None and total_false > max_false_pairs:
        keep_prob = max_false_pairs / total_false
    rng = np.random.default_rng(seed)
    true_parts, false_parts = [], []
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n)
        # Columns j > i only: the block's rows against the items from `start + 1` on.
        cols = slice(start + 1, n)
        d = dist_lib.pairwise_distances(x[start:stop], x[cols])
        i = np.arange(start, stop)[:, None]
        j = np.arange(start + 1, n)[None, :]
        upper = j > i
        same = pids[start:stop, None] == pids[None, cols]
        both_zero = ~labelled[start:stop, None] & ~labelled[None, cols]
        true_mask = upper & same & labelled[start:stop, None] \
            & _cross_camera(camids[start:stop, None], camids[None, cols])
        false_mask = upper & ~same & ~both_zero
        true_parts.append(d[true_mask])
        values = d[false_mask]
        if keep_prob < 1.0:
            values = values[rng.random(values.size) < keep_prob]
        false_parts.append(values)
    return _concat(true_parts), _concat(false_parts), total_false


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return (np.concatenate(parts) if parts else np.zeros(0)).astype(np.float32)


def calibrate_features(features, pids, camids, target_false_match_rate: float,
                       max_false_pairs: int | None = DEFAULT_MAX_FALSE_PAIRS,
                       source: dict | None = None, seed: int = 0) -> Calibration:
    """calibrate() on the labelled pairs of L2-normalised features (pair_distances)."""
    true, false, total = pair_distances(features, pids, camids, max_false_pairs, seed)
    return calibrate(true, false, target_false_match_rate, total, "l2", source)


def cross_set_rates(threshold: float, query, query_pids, query_camids, gallery, gallery_pids,
                    gallery_camids) -> dict:
    """Rates at `threshold` on query x gallery pairs (e.g. the test split, as a held-out check).

    True pairs: same pid > 0, different cameras; false pairs: different pids (gallery
    distractors, pid 0, included); junk (pid -1) ignored. Counted a block at a time.
    """
    q = np.ascontiguousarray(query, np.float32)
    g = np.ascontiguousarray(gallery, np.float32)
    qp, qc = np.asarray(query_pids, np.int64), np.asarray(query_camids, np.int64)
    gp, gc = np.asarray(gallery_pids, np.int64), np.asarray(gallery_camids, np.int64)
    q_keep, g_keep = qp > 0, gp >= 0
    q, qp, qc = q[q_keep], qp[q_keep], qc[q_keep]
    g, gp, gc = g[g_keep], gp[g_keep], gc[g_keep]
    counts = np.zeros(4, np.int64)  # true total, true accepted, false total, false accepted
    for rows, d in dist_lib.distance_blocks(q, g, "l2", block_size=_BLOCK_ROWS):
        same = qp[rows, None] == gp[None, :]
        true_mask = same & _cross_camera(qc[rows, None], gc[None, :])
        accepted = d <= threshold
        counts += [true_mask.sum(), (accepted & true_mask).sum(), (~same).sum(),
                   (accepted & ~same).sum()]
    rate = lambda a, b: float(a / b) if b else math.nan  # noqa: E731
    return {"true_match_rate": rate(counts[1], counts[0]),
            "false_match_rate": rate(counts[3], counts[2]),
            "num_true_pairs": int(counts[0]), "num_false_pairs": int(counts[2])}


# ----------------------------------------------------------------------------------------------
# Which identities to calibrate on

# validation: identities of the run's training split that training held out (recorded by
#   training in RUN/config.json as data.validation_pids): unseen by the model, and the test
#   split stays an independent check;
# test: the test trial's query and gallery identities: unseen by the model (asked for by the
#   user); the rate on unseen people is then estimated by cross-validation over identities;
# train: the training identities themselves (the old behaviour): the model has learnt to
#   separate these people, so their false matches are rarer than unseen people's and the
#   false-match rate on unseen people ends up above the target.
SPLITS = ("validation", "test", "train")
VALIDATION_KEY = "validation_pids"  # RUN/config.json "data" entry listing held-out identities
NO_VALIDATION = (
    "no identities were held out from training in this run (RUN/config.json records no "
    f"data.{VALIDATION_KEY}): its model has seen every training identity, so a threshold "
    "calibrated on them lets unseen people match more often than the target. Calibrate on the "
    "test trial's identities, which the model has not seen, with --calibration_split=test, or "
    "on the training identities as before with --calibration_split=train; or train with "
    "--validation_ids=N to hold N training identities out")


def cross_validated_rates(features, pids, camids, target_false_match_rate: float,
                          folds: int = 2, max_false_pairs: int | None = DEFAULT_MAX_FALSE_PAIRS,
                          seed: int = 0) -> dict:
    """The rates a calibration on these identities implies on other, unseen people: for each
    fold of identities, a threshold calibrated on the other folds' pairs, and its true- and
    false-match rates on the fold's own pairs; the mean over folds. {} if there are too few
    identities (each fold needs two)."""
    features = np.asarray(features, np.float32)
    pids = np.asarray(pids, np.int64)
    camids = np.asarray(camids, np.int64)
    fold = identity_folds(pids, folds, seed)
    rows = []
    for k in range(folds):
        calib, held = (fold >= 0) & (fold != k), fold == k
        if len(np.unique(pids[calib & (pids > 0)])) < 2 or len(np.unique(
                pids[held & (pids > 0)])) < 2:
            return {}
        cal = calibrate_features(features[calib], pids[calib], camids[calib],
                                 target_false_match_rate, max_false_pairs, seed=seed)
        true, false, _ = pair_distances(features[held], pids[held], camids[held],
                                        max_false_pairs, seed)
        tmr, fmr = match_rates(cal.threshold, true, false)
        rows.append({"threshold": cal.threshold, "true_match_rate": tmr, "false_match_rate": fmr,
                     "num_true_pairs": int(true.size), "num_false_pairs": int(false.size)})
    mean = lambda key: float(np.nanmean([r[key] for r in rows]))  # noqa: E731
    return {"false_match_rate": mean("false_match_rate"),
            "true_match_rate": mean("true_match_rate"),
            "how": f"{folds}-fold cross-validation over the calibration identities: each "
                   "fold's people at a threshold calibrated on the other folds'",
            "folds": rows}


def calibrate_split(split: str, features_of, pids, camids, train, query, gallery,
                    target_false_match_rate: float, validation_pids=None,
                    max_false_pairs: int | None = DEFAULT_MAX_FALSE_PAIRS,
                    source: dict | None = None, seed: int = 0) -> Calibration:
    """The threshold of one trial, calibrated on the identities `split` names (see SPLITS).

    `features_of(rows)` gives L2-normalised features of table rows; `pids`, `camids` are the
    table's; `train`, `query`, `gallery` the trial's rows; `validation_pids` the identities
    training held out (split "validation"). Records the split in `source` ("split",
    "held_out", "identities", "images") and fills `test` (rates on the test trial's query x
    gallery pairs) and `unseen` (the rates implied on people never seen: the test trial for
    "validation" and "train", cross-validation over identities for "test")."""
    if split not in SPLITS:
        raise ValueError(f"calibration split {split!r}: expected one of {SPLITS}")
    pids, camids = np.asarray(pids, np.int64), np.asarray(camids, np.int64)
    train, query, gallery = (np.asarray(r, np.int64) for r in (train, query, gallery))
    if split == "validation":
        if validation_pids is None or not len(validation_pids):
            raise ValueError(NO_VALIDATION)
        rows = train[np.isin(pids[train], np.asarray(validation_pids, np.int64))]
        if not len(rows):
            raise ValueError(f"none of the {len(validation_pids)} held-out identities of "
                             "RUN/config.json is in this trial's training split")
    elif split == "test":
        rows = np.unique(np.concatenate([query, gallery]))
    else:
        rows = train
    features = features_of(rows)
    identities = int(len(np.unique(pids[rows][pids[rows] > 0])))
    source = {**(source or {}), "split": split, "held_out": split != "train",
              "identities": identities, "images": int(len(rows))}
    calibration = calibrate_features(features, pids[rows], camids[rows], target_false_match_rate,
                                     max_false_pairs, source, seed)
    calibration.test = cross_set_rates(calibration.threshold, features_of(query), pids[query],
                                       camids[query], features_of(gallery), pids[gallery],
                                       camids[gallery])
    if split == "test":
        calibration.test["in_sample"] = True  # the calibration saw these pairs
        calibration.unseen = cross_validated_rates(features, pids[rows], camids[rows],
                                                   target_false_match_rate, 2, max_false_pairs,
                                                   seed)
    else:
        calibration.unseen = {
            "false_match_rate": calibration.test["false_match_rate"],
            "true_match_rate": calibration.test["true_match_rate"],
            "how": "the test trial's query x gallery pairs, people neither the model nor the "
                   "calibration has seen"}
    return calibration


def describe(calibration: Calibration) -> str:
    """One line on where a threshold comes from and what it implies for unseen people."""
    c, src = calibration, calibration.source
    where = src.get("dataset", "?") + (f"/{src['trial']}" if src.get("trial") else "")
    split = src.get("split")
    n = f"{src['identities']} " if src.get("identities") else ""
    who = {"validation": f"{n}identities held out from training",
           "test": f"the {n}identities of the test trial (unseen in training)",
           "train": f"the {n}training identities (seen in training)"}.get(
               split, "identities not recorded")
    text = (f"calibrated on {who} of {where} for a false-match rate of "
            f"{100 * c.target_false_match_rate:.2f}%")
    if c.unseen.get("false_match_rate") is not None and not math.isnan(
            c.unseen["false_match_rate"]):
        text += (f"; on unseen people it lets {100 * c.unseen['false_match_rate']:.2f}% of "
                 f"non-matching pairs through and finds {100 * c.unseen['true_match_rate']:.1f}%"
                 " of true matches")
    return text


# ----------------------------------------------------------------------------------------------
# The file


def save(calibration: Calibration, path: str | os.PathLike) -> pathlib.Path:
    """Writes the threshold file (atomically). A directory path gets threshold.json inside."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(calibration.to_dict(), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def load(path: str | os.PathLike) -> Calibration:
    """Reads a threshold file, or the threshold.json in a directory."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    try:
        return Calibration.from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: cannot read a threshold file ({e})") from e


def find(model_path: str | os.PathLike) -> pathlib.Path | None:
    """The threshold file stored with a model, or None when there is none.

    - a run directory, or a checkpoint RUN/checkpoints/ckpt-N: RUN/threshold.json;
    - a SavedModel version folder EXPORT/<name>/<v>: its assets.extra/threshold.json (where
      the export puts it), else EXPORT/<name>_v<v>/threshold.json beside the other files of
      that version;
    - a TF Serving base path EXPORT/<name>: the same for its newest version (the one served,
      embedded and searched with);
    - a .tflite file EXPORT/<name>_v<v>/tflite/x.tflite: its folder, or the one above.
    """
    p = resolve_model_path(model_path)
    if p.is_dir():
        candidates = [p / FILE_NAME]
        if (p / "saved_model.pb").is_file() or p.name.isdigit():
            candidates.insert(0, p / "assets.extra" / FILE_NAME)
            if p.name.isdigit():
                candidates += [p.parent.parent / f"{p.parent.name}_v{p.name}" / FILE_NAME,
                               p.parent / FILE_NAME]
    elif p.parent.name == "checkpoints":  # RUN/checkpoints/ckpt-N
        candidates = [p.parent.parent / FILE_NAME]
    else:  # a .tflite file: its folder, or the export folder above (EXPORT/tflite/x.tflite)
        candidates = [p.parent / FILE_NAME, p.parent.parent / FILE_NAME]
    for c in candidates:
        if c.is_file():
            return c
    return None
