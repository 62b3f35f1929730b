"""Per-query ranking metrics with the Market-1501 rules, consumed block by block.

Rules (identity conventions of jlml_tf/data/types.py):
  * a gallery item is a true match of a query when it has the query's pid (pid > 0);
  * junk, removed from the ranking as if absent:
      - gallery pid -1 (for every query),
      - gallery items with the query's pid AND the query's camera, when `same_camera_junk` and
        both cameras are known (camid != -1) -- the Market-1501 rule: finding the same person
        in the same camera is too easy to count;
  * gallery pid 0 (distractor) is an ordinary negative;
  * a query with no true match left after junk removal (including queries with pid 0 or -1,
    which have no identity to find) is skipped: it counts in num_skipped_queries only.

Ranking and ties: each row is ordered by (distance, gallery index), so equal distances are
broken in favour of the lower gallery index (a stable sort by distance). Distances are
compared in float32, the precision they are computed in: values equal in float32 are ties.

Metrics, with r_k the 1-based rank (after junk removal) of the k-th true match, n matches:
  CMC(r)       fraction of queries whose first match has rank <= r (full curve, length = gallery
               size without pid -1 items);
  AP           non-interpolated (open-reid, torchreid, fast-reid, sklearn's
               average_precision_score): mean_k k / r_k;
  AP official  the Market-1501 MATLAB code (compute_AP.m), which integrates precision over recall
               with the trapezoid rule. Its loop over the junk-free ranking does
                   ap += (recall - old_recall) * (old_precision + precision) / 2
               with old_precision starting at 1 and old_recall at 0, and stops at the last match.
               Recall only changes at a match, so only matches contribute:
                   AP_off = mean_k ( p_prev_k + k / r_k ) / 2,
                   p_prev_k = (k - 1) / (r_k - 1)  (precision one position above the match),
                   p_prev_k = 1 when r_k = 1       (the initial old_precision).
               Since p_prev_k <= k / r_k, it is never above AP, and equals it only when all
               matches are ranked first (r_k = k); a match right below a negative earns only
               half credit for the step, e.g. a single match at rank 2 gives AP 1/2 but
               AP_off (0 + 1/2) / 2 = 1/4.
  INP          Ye et al. 2021 (mINP): n / r_n, the precision at the hardest (last) match.

Implementation: per block of query rows, one sort of 64-bit keys (float32 distance bits high,
gallery index and two flag bits low) orders the whole block; the flags mark the few same-pid
items, so after the sort everything is done on those sparse entries, never per gallery item.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Iterable

import numpy as np

from jlml_tf.data.types import JUNK_PID, UNKNOWN_CAMERA
from jlml_tf.evaluation import distances as dist_lib

DEFAULT_RANKS = (1, 5, 10, 20)
RANK_KEYS = tuple(f"rank{k}" for k in DEFAULT_RANKS)
# Every rate a protocol evaluation reports (fractions), in table order, with its column title.
RATE_TITLES = {**{k: f"R{k[4:]}" for k in RANK_KEYS},
               "map_official": "mAP (official)", "map": "mAP", "minp": "mINP"}

_MATCH = 1  # flag bit: same pid as the query
_JUNK = 2  # flag bit: same pid and same camera (only set together with _MATCH)
# Word order of a uint64 seen as two uint32: which one is the high (most significant) half.
_HI, _LO = (1, 0) if sys.byteorder == "little" else (0, 1)
_LSB = 0 if sys.byteorder == "little" else 7  # the byte holding the flag bits
_MAX_GALLERY = 2**30  # the gallery index must fit in 30 bits beside the 2 flag bits


@dataclasses.dataclass
class QueryMetrics:
    """Per-query results; entries of skipped queries are 0 and `valid` is False."""

    first_rank: np.ndarray  # int64, 1-based rank of the first true match after junk removal
    ap_official: np.ndarray  # float64
    ap: np.ndarray  # float64
    inp: np.ndarray  # float64
    num_matches: np.ndarray  # int64, true matches after junk removal
    num_gallery: int  # gallery size without pid -1 items: the CMC length

    @property
    def valid(self) -> np.ndarray:
        return self.num_matches > 0


def _as_labels(x, name: str, length: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    if length is not None and len(x) != length:
        raise ValueError(f"{name} has {len(x)} entries, expected {length}")
    return x


def match_pairs(query_pids, query_camids, gallery_pids, gallery_camids,
                same_camera_junk: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (query, gallery) index pairs with the same positive pid, sorted by query then gallery.

    Returns (query_index, gallery_index, flags) with flags _MATCH or _MATCH | _JUNK. Computed
    from the labels alone via a pid-sorted gallery, so it costs O(pairs), not O(Q x G).
    """
    order = np.argsort(gallery_pids, kind="stable")
    sorted_pids = gallery_pids[order]
    start = np.searchsorted(sorted_pids, query_pids, side="left")
    stop = np.searchsorted(sorted_pids, query_pids, side="right")
    counts = np.where(query_pids > 0, stop - start, 0)
    q_idx = np.repeat(np.arange(len(query_pids)), counts)
    # Position of each pair inside its query's run of same-pid gallery items.
    offsets = np.arange(len(q_idx)) - np.repeat(np.cumsum(counts) - counts, counts)
    g_idx = order[start[q_idx] + offsets]  # ascending within a query: the sort was stable
    flags = np.full(len(q_idx), _MATCH, np.uint32)
    if same_camera_junk:
        qc, gc = query_camids[q_idx], gallery_camids[g_idx]
        same_cam = (qc == gc) & (qc != UNKNOWN_CAMERA)
        flags[same_cam] |= _JUNK
    return q_idx, g_idx, flags


def _write_sort_keys(block: np.ndarray, keys: np.ndarray, low_words: np.ndarray) -> None:
    """keys[i, j] = (monotone uint32 of float32 block[i, j]) << 32 | low_words[j]."""
    b, g = block.shape
    high = keys.view(np.float32).reshape(b, g, 2)[:, :, _HI]
    minimum = block.min() if block.size else 0.0
    if np.isnan(minimum):
        raise ValueError("distances contain NaN")
    np.add(block, np.float32(0.0), out=high, casting="same_kind")  # + 0 turns -0.0 into +0.0
    if minimum < 0:
        # Map the float order onto unsigned order: flip all bits of negatives, set the sign
        # bit of non-negatives. Non-negative floats already compare correctly as unsigned.
        bits = high.view(np.uint32)
        negative = (bits >> np.uint32(31)).astype(bool)
        np.bitwise_xor(bits, np.uint32(0xFFFFFFFF), out=bits, where=negative)
        np.bitwise_or(bits, np.uint32(0x80000000), out=bits, where=~negative)
    keys.view(np.uint32).reshape(b, g, 2)[:, :, _LO] = low_words


def argsort_rows(block, k: int | None = None) -> np.ndarray:
    """Column indices of each row sorted by (distance, index): the ranking's tie rule.

    With k, only the k nearest per row (in order), found by partitioning, not a full sort.
    """
    block = np.asarray(block)
    b, g = block.shape
    if g >= 2**32:
        raise ValueError(f"{g} columns exceed the 2**32 limit of the sort keys")
    keys = np.empty((b, g), np.uint64)
    _write_sort_keys(block, keys, np.arange(g, dtype=np.uint32))
    if k is not None and k < 1:
        raise ValueError(f"k must be positive, got {k}")
    if k is not None and k < g:
        keys = np.partition(keys, k - 1, axis=1)[:, :k]  # keys are unique: no tie ambiguity
    keys.sort(axis=1)
    return keys.view(np.uint32).reshape(len(keys), -1, 2)[:, :, _LO].astype(np.int64)


def _segment_cumsum(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum restarting at each new value of the (sorted) `rows`."""
    total = np.cumsum(values)
    first = np.searchsorted(rows, rows, side="left")
    return total - total[first] + values[first]


def _block_metrics(rows: np.ndarray, positions: np.ndarray, flags: np.ndarray, num_rows: int):
    """Metrics of one block from the sorted positions of its same-pid entries (row-major)."""
    junk = (flags & _JUNK) != 0
    junk_above = _segment_cumsum(junk.astype(np.int64), rows) - junk
    good = ~junk
    rows, rank = rows[good], (positions + 1 - junk_above)[good]  # 1-based, junk removed
    k = _segment_cumsum(np.ones(len(rows), np.int64), rows)  # k-th true match of its row
    num_matches = np.bincount(rows, minlength=num_rows)
    precision = k / rank
    previous = np.where(rank > 1, (k - 1) / np.maximum(rank - 1, 1), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.bincount(rows, precision, minlength=num_rows) / num_matches
        ap_official = np.bincount(rows, (previous + precision) / 2, minlength=num_rows) \
            / num_matches
    first_rank = np.zeros(num_rows, np.int64)
    first_rank[rows[k == 1]] = rank[k == 1]
    last = k == num_matches[rows]
    inp = np.zeros(num_rows)
    inp[rows[last]] = k[last] / rank[last]
    return (first_rank, np.nan_to_num(ap_official), np.nan_to_num(ap), inp, num_matches)


def per_query_metrics(blocks: Iterable[tuple[slice, np.ndarray]], query_pids, query_camids,
                      gallery_pids, gallery_camids,
                      same_camera_junk: bool = True) -> QueryMetrics:
    """Ranks every query and returns its metrics, reading distances block by block.

    `blocks` yields (query_rows, distances) with distances of shape (rows, num_gallery), as
    from distances.distance_blocks or distances.blocks_of; blocks may come in any order.
    """
    qp = _as_labels(query_pids, "query_pids")
    qc = _as_labels(query_camids, "query_camids", len(qp))
    gp = _as_labels(gallery_pids, "gallery_pids")
    gc = _as_labels(gallery_camids, "gallery_camids", len(gp))
    keep = gp != JUNK_PID  # pid -1 is junk for every query: drop those columns once
    drop = not keep.all()
    if drop:
        gp, gc = gp[keep], gc[keep]
    num_gallery = len(gp)
    if num_gallery >= _MAX_GALLERY:
        raise ValueError(f"gallery of {num_gallery} items exceeds the {_MAX_GALLERY} limit")
    q_idx, g_idx, pair_flags = match_pairs(qp, qc, gp, gc, same_camera_junk)
    low_words = np.arange(num_gallery, dtype=np.uint32) << np.uint32(2)
    out = QueryMetrics(np.zeros(len(qp), np.int64), np.zeros(len(qp)), np.zeros(len(qp)),
                       np.zeros(len(qp)), np.zeros(len(qp), np.int64), num_gallery)
    keys = flag_buf = None
    for rows, block in blocks:
        b = rows.stop - rows.start
        if block.shape != (b, len(keep)):
            raise ValueError(f"distance block for rows {rows.start}:{rows.stop} has shape "
                             f"{block.shape}, expected {(b, len(keep))}")
        if drop:
            block = block[:, keep]
        if keys is None or len(keys) < b:  # buffers reused across blocks: no page faults
            keys = np.empty((b, num_gallery), np.uint64)
            flag_buf = np.empty((b, num_gallery), np.uint8)
        key_block, f = keys[:b], flag_buf[:b]
        _write_sort_keys(block, key_block, low_words)
        del block  # with the producer's del, at most one distance block is alive at a time
        lo, hi = np.searchsorted(q_idx, [rows.start, rows.stop])
        key_block.view(np.uint32).reshape(b, num_gallery, 2)[:, :, _LO][
            q_idx[lo:hi] - rows.start, g_idx[lo:hi]] |= pair_flags[lo:hi]
        key_block.sort(axis=1)
        # Only the lowest byte of each key holds the flags: read that, 1 byte per item.
        np.bitwise_and(key_block.view(np.uint8).reshape(b, num_gallery, 8)[:, :, _LSB],
                       np.uint8(_MATCH | _JUNK), out=f)
        flat = np.flatnonzero(f)
        block_rows, positions = np.divmod(flat, num_gallery)
        results = _block_metrics(block_rows, positions, f.reshape(-1)[flat], b)
        for name, value in zip(("first_rank", "ap_official", "ap", "inp", "num_matches"),
                               results):
            getattr(out, name)[rows] = value
    return out


def summarise(per_query: QueryMetrics, ranks=DEFAULT_RANKS) -> dict:
    """CMC, mAPs and mINP over the queries that have a true match (fractions in [0, 1])."""
    valid = per_query.valid
    n = int(valid.sum())
    hist = np.bincount(per_query.first_rank[valid] - 1, minlength=per_query.num_gallery)
    cmc = np.cumsum(hist[:per_query.num_gallery]) / max(n, 1)
    result = {"cmc": cmc}
    for r in ranks:
        result[f"rank{r}"] = float(cmc[min(r, len(cmc)) - 1]) if len(cmc) else 0.0
    mean = (lambda x: float(x[valid].mean())) if n else (lambda x: 0.0)
    result.update(map_official=mean(per_query.ap_official), map=mean(per_query.ap),
                  minp=mean(per_query.inp), num_queries=n,
                  num_skipped_queries=int(len(valid) - n))
    return result


def evaluate_blocks(blocks, query_pids, query_camids, gallery_pids, gallery_camids,
                    same_camera_junk: bool = True, ranks=DEFAULT_RANKS) -> dict:
    """summarise(per_query_metrics(...)): the result dict of one query/gallery evaluation."""
    return summarise(per_query_metrics(blocks, query_pids, query_camids, gallery_pids,
                                       gallery_camids, same_camera_junk), ranks)


def evaluate_distance_matrix(distmat, query_pids, query_camids, gallery_pids, gallery_camids,
                             same_camera_junk: bool = True, ranks=DEFAULT_RANKS,
                             block_size: int | None = None) -> dict:
    """evaluate_blocks on a full (query x gallery) matrix, cut into blocks of query rows."""
    return evaluate_blocks(dist_lib.blocks_of(distmat, block_size), query_pids, query_camids,
                           gallery_pids, gallery_camids, same_camera_junk, ranks)
