"""Query x gallery distances, computed a block of query rows at a time.

A Market-scale problem (3,368 x 19,732) fits in memory, but larger ones (20,000 x 20,000 is
1.6 GB in float32, 3.2 GB in float64) need not: every function here yields float32 blocks of
`block_size` query rows, and the ranking code in `metrics.py` consumes them one at a time, so
peak memory is one block of distances plus the ranking's sort keys and flags (13 bytes per
block element in all), never the full matrix.

Metrics:
  "l2"          Euclidean distance ||x - y||
  "sqeuclidean" squared Euclidean ||x - y||^2 (same ranking as "l2", one sqrt cheaper)
  "cosine"      1 - cos(x, y)
  Mahalanobis   (x - y)^T M (x - y) for a learned symmetric M (`mahalanobis_blocks`), used by the
                metric learners in `metric_learning.py`.

All are evaluated as |x|^2 + |y|^2 - 2 x.y with one float32 matrix product per block (the
expensive part, done by BLAS), then clamped at 0 because rounding can make the difference of
nearly equal terms slightly negative.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

METRICS = ("l2", "sqeuclidean", "cosine")

# Default block budget: 32 MB of float32 distances per block (527 rows at Market-1501's 15,913
# gallery items; ~105 MB working set with the sort keys). Measured at that size, one BLAS
# thread: 1.73 / 1.57 / 1.51 / 1.52 CPU s for blocks of 128 / 256 / 527 / 1024 rows, so
# larger blocks would only cost memory.
DEFAULT_BLOCK_BYTES = 32 * 2**20

DistanceBlocks = Iterator[tuple[slice, np.ndarray]]


def default_block_size(num_gallery: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Number of query rows whose float32 distances to `num_gallery` items fit in block_bytes."""
    return max(1, block_bytes // (4 * max(1, num_gallery)))


def as_features(x, name: str = "features") -> np.ndarray:
    """2-D C-contiguous float32 view, or copy if needed, of a feature matrix."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (num_items, dim), got shape {x.shape}")
    return x


def _check_finite(squared_norms: np.ndarray, name: str) -> None:
    # A NaN/inf feature makes its squared norm NaN/inf: one check per row instead of a scan
    # (and a bool temporary) over every feature value.
    if not np.isfinite(squared_norms).all():
        raise ValueError(f"{name} features contain NaN or inf (or values too large for float32)")


def l2_normalise(x: np.ndarray, name: str = "features") -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    _check_finite(norms, name)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)  # zero vectors stay zero


def _check_pair(query: np.ndarray, gallery: np.ndarray) -> None:
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query dim {query.shape[1]} != gallery dim {gallery.shape[1]}")


def _gram_blocks(query: np.ndarray, gallery: np.ndarray, query_sq: np.ndarray,
                 gallery_sq: np.ndarray, block_size: int, sqrt: bool) -> DistanceBlocks:
    """Yields |q|^2 + |g|^2 - 2 q.g, where q, g are already transformed by the metric."""
    gallery_t = gallery.T  # a transposed view: BLAS reads it as is, no 4*G*dim byte copy
    for start in range(0, len(query), block_size):
        rows = slice(start, min(start + block_size, len(query)))
        block = query[rows] @ gallery_t
        block *= np.float32(-2.0)
        block += query_sq[rows, None]
        block += gallery_sq[None, :]
        np.maximum(block, np.float32(0.0), out=block)
        if sqrt:
            np.sqrt(block, out=block)
        yield rows, block
        del block  # let the consumer's release free it before the next block is allocated


def distance_blocks(query, gallery, metric: str = "l2",
                    block_size: int | None = None) -> DistanceBlocks:
    """Yields (query_rows, float32 distances of those rows to every gallery item).

    query_rows is a slice into the query set; blocks come in query order and cover it once.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS} or pass a "
                         "fitted metric_learning.Metric")
    query, gallery = as_features(query, "query"), as_features(gallery, "gallery")
    _check_pair(query, gallery)
    block_size = block_size or default_block_size(len(gallery))
    if metric == "cosine":
        # 1 - cos = |a - b|^2 / 2 for unit vectors a, b: reuse the Gram path, halve at the end.
        query, gallery = l2_normalise(query, "query"), l2_normalise(gallery, "gallery")
        for rows, block in _gram_blocks(query, gallery, np.ones(len(query), np.float32),
                                        np.ones(len(gallery), np.float32), block_size, False):
            block *= np.float32(0.5)
            yield rows, block
            del block
        return
    query_sq = np.einsum("ij,ij->i", query, query)
    gallery_sq = np.einsum("ij,ij->i", gallery, gallery)
    _check_finite(query_sq, "query")
    _check_finite(gallery_sq, "gallery")
    yield from _gram_blocks(query, gallery, query_sq, gallery_sq, block_size,
                            sqrt=(metric == "l2"))


def mahalanobis_blocks(query, gallery, matrix, projection=None,
                       block_size: int | None = None) -> DistanceBlocks:
    """Yields blocks of (x - y)^T M (x - y), after an optional linear projection x -> x W.

    M (`matrix`, k x k) must be symmetric; it need not be positive semi-definite (negative
    values are then clamped to 0, like rounding errors). `projection` W is (dim x k).
    """
    query, gallery = as_features(query, "query"), as_features(gallery, "gallery")
    _check_pair(query, gallery)
    matrix = np.asarray(matrix, dtype=np.float64)
    if projection is not None:
        projection = np.asarray(projection, dtype=np.float32)
        query, gallery = query @ projection, gallery @ projection
    if matrix.shape != (query.shape[1], query.shape[1]):
        raise ValueError(f"Mahalanobis matrix has shape {matrix.shape}, features have dim "
                         f"{query.shape[1]}")
    if not np.allclose(matrix, matrix.T, rtol=1e-5, atol=1e-8 * np.abs(matrix).max()):
        raise ValueError("the Mahalanobis matrix must be symmetric")
    # x^T M y = (x M) . y: transform the query side once; squared norms in float64 because
    # they are O(dim) sums that later cancel against the cross term.
    query_m = query.astype(np.float64) @ matrix
    query_sq = np.einsum("ij,ij->i", query_m, query).astype(np.float32)
    gallery_sq = np.einsum("ij,ij->i", gallery.astype(np.float64) @ matrix,
                           gallery).astype(np.float32)
    _check_finite(query_sq, "query")
    _check_finite(gallery_sq, "gallery")
    block_size = block_size or default_block_size(len(gallery))
    yield from _gram_blocks(query_m.astype(np.float32), gallery, query_sq, gallery_sq,
                            block_size, sqrt=False)


def pairwise_distances(query, gallery, metric: str = "l2") -> np.ndarray:
    """The full float32 distance matrix (for small problems and tests)."""
    query = as_features(query, "query")
    out = np.empty((len(query), len(as_features(gallery, "gallery"))), np.float32)
    for rows, block in distance_blocks(query, gallery, metric):
        out[rows] = block
    return out


def blocks_of(distmat, block_size: int | None = None) -> DistanceBlocks:
    """Cuts an existing (query x gallery) distance matrix into the same (rows, block) stream."""
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distance matrix must be 2-D, got shape {distmat.shape}")
    block_size = block_size or default_block_size(distmat.shape[1])
    for start in range(0, len(distmat), block_size):
        rows = slice(start, min(start + block_size, len(distmat)))
        yield rows, distmat[rows]
