"""Evaluation of one trial from features, and aggregation over trials.

`evaluate` = optional multi-query pooling of the queries + optional pooling of a multi-shot
gallery + blocked distances (distances.py or a learned metric) + Market-1501 ranking metrics
(metrics.py). Gallery items with pid -1 are dropped before any distance is computed: they are
junk for every query, so this changes no number and saves their distances.

All rates are fractions in [0, 1]; report.py turns them into percentages.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from jlml_tf.evaluation import distances as dist_lib
from jlml_tf.evaluation import metrics
from jlml_tf.evaluation import rerank as rerank_lib
from jlml_tf.evaluation.metric_learning import LEARNED_METRICS, Metric, as_metric

POOLINGS = ("mean", "max")


def _check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def _group_ids(*columns: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense ids 0..n-1 of the distinct rows of the given equal-length integer columns."""
    keys = np.stack([np.asarray(c, np.int64) for c in columns], axis=1)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return inverse, int(inverse.max()) + 1 if len(inverse) else 0


def _group_reduce(features: np.ndarray, groups: np.ndarray, num_groups: int,
                  pooling: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-group sum ("mean") or max ("max") of the feature rows, and the group sizes.

    Groups without members get 0 (sum) or -inf (max), neutral for the later combination.
    """
    counts = np.bincount(groups, minlength=num_groups)
    out = np.full((num_groups, features.shape[1]), 0.0 if pooling == "mean" else -np.inf,
                  np.float32)
    if len(groups):
        order = np.argsort(groups, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(groups[order]) != 0])
        reduce = np.add if pooling == "mean" else np.maximum
        out[groups[order][starts]] = reduce.reduceat(features[order], starts, axis=0)
    return out, counts


def pool_multi_query(query_features, query_pids, query_camids, mq_features, mq_pids,
                     mq_camids, pooling: str = "mean") -> np.ndarray:
    """Each query's feature pooled with those of all multi-query images of its pid and camera.

    The pool is the query itself plus every multi-query image with the same (pid, camid)
    values (Market-1501 multi-query: the `gt_bbox` images of that person in that camera).
    A query with no such image keeps its own feature.
    """
    _check_pooling(pooling)
    q = dist_lib.as_features(query_features, "query_features")
    mq = dist_lib.as_features(mq_features, "multi_query features")
    if mq.shape[1] != q.shape[1]:
        raise ValueError(f"multi-query dim {mq.shape[1]} != query dim {q.shape[1]}")
    groups, num_groups = _group_ids(np.r_[np.asarray(query_pids), np.asarray(mq_pids)],
                                    np.r_[np.asarray(query_camids), np.asarray(mq_camids)])
    q_groups, mq_groups = groups[:len(q)], groups[len(q):]
    pooled, counts = _group_reduce(mq, mq_groups, num_groups, pooling)
    if pooling == "max":
        return np.maximum(pooled[q_groups], q)
    return (pooled[q_groups] + q) / (counts[q_groups, None] + 1).astype(np.float32)


def pool_gallery(gallery_features, gallery_pids, gallery_camids,
                 pooling: str = "mean") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multi-shot gallery -> one item per (pid, camera), by mean or max of its features.

    Distractors (pid 0) and junk (pid -1) are not one person each, so they stay unpooled.
    The pooled item takes the place of its group's first image (gallery order is kept, which
    matters only for the tie rule). Returns (features, pids, camids).
    """
    _check_pooling(pooling)
    g = dist_lib.as_features(gallery_features, "gallery_features")
    pids = np.asarray(gallery_pids, np.int64)
    camids = np.asarray(gallery_camids, np.int64)
    singleton = np.where(pids > 0, -1, np.arange(len(pids)))  # own group for pid <= 0
    groups, num_groups = _group_ids(pids, camids, singleton)
    pooled, counts = _group_reduce(g, groups, num_groups, pooling)
    if pooling == "mean":
        pooled /= counts[:, None].astype(np.float32)
    first = np.full(num_groups, len(pids))
    np.minimum.at(first, groups, np.arange(len(pids)))
    order = np.argsort(first, kind="stable")  # groups in order of their first image
    return pooled[order], pids[first[order]], camids[first[order]]


def _distance_blocks(metric, query, gallery, block_size):
    if isinstance(metric, str):
        if metric in LEARNED_METRICS:
            raise ValueError(f"metric {metric!r} must be fitted on training data first: pass "
                             "metric_learning.fit_metric(...) instead of the name")
        return dist_lib.distance_blocks(query, gallery, metric, block_size)
    return metric.distance_blocks(query, gallery, block_size=block_size)


@dataclasses.dataclass
class _Prepared:
    """A trial's features ready for ranking: queries pooled, junk gallery columns dropped."""

    query: np.ndarray
    query_pids: np.ndarray
    query_camids: np.ndarray
    gallery: np.ndarray
    gallery_pids: np.ndarray
    gallery_camids: np.ndarray
    gallery_keep: np.ndarray  # bool mask over the (pooled) gallery: not pid -1


def _prepare(query_features, query_pids, query_camids, gallery_features, gallery_pids,
             gallery_camids, multi_query, multi_query_pooling, gallery_pooling) -> _Prepared:
    q = dist_lib.as_features(query_features, "query_features")
    qp, qc = np.asarray(query_pids, np.int64), np.asarray(query_camids, np.int64)
    g = dist_lib.as_features(gallery_features, "gallery_features")
    gp, gc = np.asarray(gallery_pids, np.int64), np.asarray(gallery_camids, np.int64)
    if not len(qp) == len(qc) == len(q) or not len(gp) == len(gc) == len(g):
        raise ValueError("features, pids and camids must have the same number of rows")
    if multi_query is not None:
        q = pool_multi_query(q, qp, qc, *multi_query, pooling=multi_query_pooling)
    if gallery_pooling is not None:
        g, gp, gc = pool_gallery(g, gp, gc, gallery_pooling)
    keep = gp != metrics.JUNK_PID
    if not keep.all():  # (indexing would copy the gallery even when nothing is dropped)
        g, gp, gc = g[keep], gp[keep], gc[keep]
    return _Prepared(q, qp, qc, g, gp, gc, keep)


def evaluate(query_features, query_pids, query_camids, gallery_features, gallery_pids,
             gallery_camids, metric="l2", same_camera_junk: bool = True,
             multi_query: tuple | None = None, multi_query_pooling: str = "mean",
             gallery_pooling: str | None = None, block_size: int | None = None,
             ranks=metrics.DEFAULT_RANKS) -> dict:
    """Ranks the gallery for every query and returns the Market-1501 metrics.

    metric: "l2", "sqeuclidean", "cosine", or a fitted metric_learning.Metric (any object with
        distance_blocks(query, gallery, block_size=...)).
    multi_query: (features, pids, camids) of the extra query images, pooled per query with
        `multi_query_pooling` ("mean" or "max"); None for single query.
    gallery_pooling: None keeps every gallery image (a multi-shot gallery then scores the rank
        of the first true match), "mean"/"max" pool the gallery per (pid, camera) first.
    Returns {"cmc", "rank1", "rank5", "rank10", "rank20", "map_official", "map", "minp",
    "num_queries", "num_skipped_queries"}; see metrics.py for the definitions.
    """
    t = _prepare(query_features, query_pids, query_camids, gallery_features, gallery_pids,
                 gallery_camids, multi_query, multi_query_pooling, gallery_pooling)
    blocks = _distance_blocks(metric, t.query, t.gallery, block_size)
    return metrics.evaluate_blocks(blocks, t.query_pids, t.query_camids, t.gallery_pids,
                                   t.gallery_camids, same_camera_junk, ranks)


@dataclasses.dataclass
class FeatureEvaluation:
    """What `evaluate_features` found: the metrics and what a picture of the rankings needs."""

    results: dict  # as `evaluate` returns
    per_query: metrics.QueryMetrics
    gallery_keep: np.ndarray  # bool mask of the gallery items ranked (pid -1 junk dropped)
    query_distances: Callable[[np.ndarray], np.ndarray]  # query indices -> rows of distances
    distances: np.ndarray | None = None  # the full (query x kept gallery) matrix, re-ranking only


def evaluate_features(query, query_pids, query_camids, gallery, gallery_pids, gallery_camids,
                      metric: str | Metric = "l2", same_camera_junk: bool = True,
                      rerank: rerank_lib.RerankConfig | None = None,
                      multi_query: tuple | None = None,
                      multi_query_pooling: str = "mean") -> FeatureEvaluation:
    """`evaluate` (the same pooling, junk removal, distances and metrics), optionally re-ranked,
    keeping the per-query metrics. With re-ranking the re-ranked matrix replaces the distances;
    multi-query pooling happens first, so the neighbour graph is built on the pooled queries."""
    metric = as_metric(metric)
    t = _prepare(query, query_pids, query_camids, gallery, gallery_pids, gallery_camids,
                 multi_query, multi_query_pooling, None)
    distances = None
    if rerank is not None:
        distances = rerank_lib.rerank_distances(metric, t.query, t.gallery, rerank)
        blocks = dist_lib.blocks_of(distances)
        rows_of = lambda idx: distances[np.asarray(idx)]  # noqa: E731
    else:
        blocks = metric.distance_blocks(t.query, t.gallery)
        rows_of = lambda idx: metric.pairwise(t.query[np.asarray(idx)], t.gallery)  # noqa: E731
    per_query = metrics.per_query_metrics(blocks, t.query_pids, t.query_camids, t.gallery_pids,
                                          t.gallery_camids, same_camera_junk)
    return FeatureEvaluation(metrics.summarise(per_query), per_query, t.gallery_keep, rows_of,
                             distances)


def worst_and_best(per_query: metrics.QueryMetrics, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the `count` worst queries (lowest AP, then latest first match) and the
    `count` best (highest AP, then earliest first match), disjoint; skipped queries excluded."""
    valid = np.flatnonzero(per_query.valid)
    order = valid[np.lexsort((-per_query.first_rank[valid], per_query.ap[valid]))]  # worst first
    n_worst = min(count, len(order))
    n_best = min(count, len(order) - n_worst)
    return order[:n_worst], order[::-1][:n_best]


def _pad_cmc(curves: Sequence[np.ndarray]) -> np.ndarray:
    """Stacks CMC curves of different gallery sizes, extending each with its last value
    (a CMC is cumulative: beyond the gallery size it stays where it ended)."""
    length = max(len(c) for c in curves)
    return np.stack([np.pad(np.asarray(c, np.float64), (0, length - len(c)), mode="edge")
                     if len(c) else np.zeros(length) for c in curves])


def aggregate_trials(results: Sequence[dict]) -> dict:
    """Mean and (population, ddof=0) standard deviation over trials of every scalar and of
    the CMC curve. Returns {"num_trials", "mean": {...}, "std": {...}}."""
    if not results:
        raise ValueError("no trial results to aggregate")
    mean, std = {}, {}
    for key in results[0]:
        if key == "cmc":
            curves = _pad_cmc([r["cmc"] for r in results])
            mean[key], std[key] = curves.mean(axis=0), curves.std(axis=0)
        else:
            values = np.array([r[key] for r in results], np.float64)
            mean[key], std[key] = float(values.mean()), float(values.std())
    return {"num_trials": len(results), "mean": mean, "std": std}
