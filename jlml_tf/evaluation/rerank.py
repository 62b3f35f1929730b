"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li, CVPR 2017), vectorised with NumPy/SciPy.

Memory: re-ranking needs the neighbours of every gallery item among queries AND gallery, so it
holds the full (q + g) x (q + g) float32 distance matrix: 2.1 GB for Market-1501 (3,368 +
19,732). That is inherent to the method; the rest is bounded: neighbour lists are (q + g) x
(k1 + 1), the encodings V are sparse (about k1 * k2 non-zeros per row, float32) instead of the
dense float16 (q + g)^2 array of the authors' code, and the Jaccard distances are accumulated a
block of queries at a time.

Steps, as in the authors' reference code (github.com/zhunzhong07/person-re-ranking, Python
version): with D the given (q + g) x (q + g) distances (Euclidean for features), the working
distance is d[i, j] = D[j, i]^2 / max_k D[k, i]^2, the SQUARED distances divided by their column
maximum and transposed (for symmetric D: each row of D^2 divided by its maximum, so exp(-d) is
scale free). N(i, k) are the k nearest items of i under d (itself included, ties to the lower
index, as in metrics.py):
  1. R(i) = {j in N(i, k1 + 1) : i in N(j, k1 + 1)}, the k-reciprocal neighbours;
  2. expansion: for each c in R(i), let H(c) be c's reciprocal set with k = round(k1 / 2)
     (Python/NumPy round half to even); if more than 2/3 of H(c) is in R(i), add H(c);
  3. V[i, j] = exp(-d[i, j]) over the expanded set, normalised to sum 1 per row;
  4. local query expansion (k2 > 1): V[i] <- mean of V[j] over j in N(i, k2);
  5. Jaccard distance d_J(i, j) = 1 - sum_k min(V[i,k], V[j,k]) / sum_k max(V[i,k], V[j,k]),
     with sum max = 2 - sum min because rows of V sum to 1;
  6. final = (1 - lambda) d_J + lambda d, for the query x gallery part (d squared, normalised).
The paper's equations read as if d were the plain distance; the reference code squares it
(its feature version computes squared Euclidean distances; its distance-matrix version squares
what it is given), and so does this module: pass plain (not squared) Euclidean distances.
tests/test_evaluation_rerank.py checks the result against a loop transcription of that code.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse

from jlml_tf.evaluation import distances as dist_lib
from jlml_tf.evaluation.metric_learning import Metric, as_metric
from jlml_tf.evaluation.metrics import argsort_rows

_ROW_BLOCK = 1024  # rows per step of the neighbour computations (bounds temporaries)
_QUERY_BLOCK = 256  # queries per step of the Jaccard accumulation


def _assemble(q_g_dist, q_q_dist, g_g_dist) -> np.ndarray:
    """The working (q + g) x (q + g) float32 matrix d of the module docstring: the transpose
    of the joint distances, squared, each row divided by its maximum."""
    q_g = np.asarray(q_g_dist, np.float32)
    q_q = np.asarray(q_q_dist, np.float32)
    g_g = np.asarray(g_g_dist, np.float32)
    nq, ng = q_g.shape
    if q_q.shape != (nq, nq) or g_g.shape != (ng, ng):
        raise ValueError(f"shapes q_g {q_g.shape}, q_q {q_q.shape}, g_g {g_g.shape} disagree")
    # The transpose of [[q_q, q_g], [q_g.T, g_g]], built directly: normalising its rows is the
    # reference's column normalisation followed by its transpose.
    dist = np.block([[q_q.T, q_g], [q_g.T, g_g.T]])
    if not np.isfinite(dist).all() or (dist < 0).any():
        raise ValueError("re-ranking needs finite, non-negative distances")
    np.square(dist, out=dist)
    row_max = dist.max(axis=1, keepdims=True)
    dist /= np.where(row_max > 0, row_max, 1.0)
    return dist


def _nearest(dist: np.ndarray, k: int) -> np.ndarray:
    """(N, k) nearest items of every row, nearest first."""
    return np.concatenate([argsort_rows(dist[s:s + _ROW_BLOCK], k)
                           for s in range(0, len(dist), _ROW_BLOCK)])


def reciprocal_mask(top: np.ndarray) -> np.ndarray:
    """mask[i, a] = i is itself among the neighbours of top[i, a] (top: (N, k) neighbours)."""
    mask = np.empty(top.shape, bool)
    for s in range(0, len(top), _ROW_BLOCK):
        rows = np.arange(s, min(s + _ROW_BLOCK, len(top)))
        mask[rows] = (top[top[rows]] == rows[:, None, None]).any(axis=2)
    return mask


def expanded_sets(top: np.ndarray, top_half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) pairs of the expanded k-reciprocal sets (steps 1-2), sorted, unique.

    top: (N, k1 + 1) neighbours; top_half: (N, round(k1 / 2) + 1) neighbours.
    """
    recip, recip_half = reciprocal_mask(top), reciprocal_mask(top_half)
    n, pairs = len(top), []
    for s in range(0, n, _ROW_BLOCK):
        rows = np.arange(s, min(s + _ROW_BLOCK, n))
        cand, cand_ok = top[rows], recip[rows]  # (b, K): R(i) = cand[cand_ok]
        half, half_ok = top_half[cand], recip_half[cand]  # (b, K, H): H(c) for each candidate
        in_r = ((half[..., None] == cand[:, None, None, :])
                & cand_ok[:, None, None, :]).any(axis=3)  # H(c) member also in R(i)?
        overlap = (in_r & half_ok).sum(axis=2)
        accept = cand_ok & (3 * overlap > 2 * half_ok.sum(axis=2))  # |H n R| > 2/3 |H|
        r1, a1 = np.nonzero(cand_ok)
        r2, a2, h2 = np.nonzero(accept[:, :, None] & half_ok)
        pairs.append(np.r_[rows[r1] * n + cand[r1, a1], rows[r2] * n + half[r2, a2, h2]])
    flat = np.unique(np.concatenate(pairs))
    return np.divmod(flat, n)


def _encode(dist: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> scipy.sparse.csr_matrix:
    """Step 3: V[i, j] = exp(-d[i, j]) on the sets, each row normalised to sum 1."""
    weights = np.exp(-dist[rows, cols].astype(np.float64))
    weights /= np.bincount(rows, weights, minlength=len(dist))[rows]
    return scipy.sparse.csr_matrix((weights.astype(np.float32), (rows, cols)),
                                   shape=dist.shape)


def _query_expansion(v: scipy.sparse.csr_matrix, neighbours: np.ndarray):
    """Step 4: V[i] <- mean of V[j] for j among the k2 nearest of i (i included)."""
    n, k2 = neighbours.shape
    average = scipy.sparse.csr_matrix(
        (np.full(n * k2, 1.0 / k2, np.float32), (np.repeat(np.arange(n), k2),
                                                  neighbours.reshape(-1))), shape=(n, n))
    return (average @ v).tocsr()


def _jaccard(v: scipy.sparse.csr_matrix, num_query: int) -> np.ndarray:
    """Step 5 for query rows x gallery columns, via the sparse columns of V: only items that
    share a non-zero column contribute, so the work is the number of such pairs."""
    n = v.shape[0]
    num_gallery = n - num_query
    cols = v.tocsc()
    col_start, col_len = cols.indptr[:-1], np.diff(cols.indptr)
    out = np.empty((num_query, num_gallery), np.float32)
    for s in range(0, num_query, _QUERY_BLOCK):
        block = v[s:min(s + _QUERY_BLOCK, num_query)]
        b = block.shape[0]
        rows = np.repeat(np.arange(b), np.diff(block.indptr))  # non-zeros (i, k, V[i, k])
        ks, v_ik = block.indices, block.data
        lengths = col_len[ks]
        # For each non-zero (i, k), all non-zeros (j, k) of column k.
        idx = (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
               + np.repeat(col_start[ks], lengths))
        j, v_jk = cols.indices[idx], cols.data[idx]
        i = np.repeat(rows, lengths)
        minimum = np.minimum(np.repeat(v_ik, lengths), v_jk)
        gallery = j >= num_query
        sums = np.bincount(i[gallery] * num_gallery + j[gallery] - num_query,
                           minimum[gallery], minlength=b * num_gallery)
        shared = sums.reshape(b, num_gallery)
        out[s:s + b] = 1.0 - shared / (2.0 - shared)
    return out


def k_reciprocal_rerank(q_g_dist, q_q_dist, g_g_dist, k1: int = 20, k2: int = 6,
                        lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked (query x gallery) float32 distances; feed them to metrics.evaluate_*.

    The inputs are distances as the reference code takes them (plain Euclidean for features):
    they are squared here, as the reference does, before the steps of the module docstring.
    """
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"need k1 >= 1, k2 >= 1, 0 <= lambda <= 1; got {k1}, {k2}, "
                         f"{lambda_value}")
    num_query = np.shape(q_g_dist)[0]
    dist = _assemble(q_g_dist, q_q_dist, g_g_dist)
    k_half = int(round(k1 / 2))
    top = _nearest(dist, min(max(k1 + 1, k2), len(dist)))
    rows, cols = expanded_sets(top[:, :k1 + 1], top[:, :k_half + 1])
    v = _encode(dist, rows, cols)
    if k2 > 1:
        v = _query_expansion(v, top[:, :k2])
    jaccard = _jaccard(v, num_query)
    final = jaccard * np.float32(1.0 - lambda_value)
    final += np.float32(lambda_value) * dist[:num_query, num_query:]
    return final


def rerank_features(query, gallery, metric="l2", k1: int = 20, k2: int = 6,
                    lambda_value: float = 0.3) -> np.ndarray:
    """k_reciprocal_rerank on the query-gallery, query-query and gallery-gallery distances of
    two feature sets, with each item's distance to itself exactly 0 (so every item is its own
    nearest neighbour, not a victim of rounding residue).

    metric: a distances.METRICS name, or a function (a, b) -> float32 distance matrix such as
    a learned metric_learning.Metric's `pairwise`.
    """
    query = dist_lib.as_features(query, "query")
    gallery = dist_lib.as_features(gallery, "gallery")
    if callable(metric):
        pairwise = metric
    else:
        if metric not in dist_lib.METRICS:
            raise ValueError(f"metric {metric!r}; expected one of {dist_lib.METRICS} or a "
                             "function of two feature matrices")
        pairwise = lambda a, b: dist_lib.pairwise_distances(a, b, metric)  # noqa: E731
    q_q = np.array(pairwise(query, query), np.float32)
    g_g = np.array(pairwise(gallery, gallery), np.float32)
    for square in (q_q, g_g):
        np.fill_diagonal(square, 0.0)
    return k_reciprocal_rerank(pairwise(query, gallery), q_q, g_g, k1, k2, lambda_value)


@dataclasses.dataclass(frozen=True)
class RerankConfig:
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def describe(self) -> str:
        return f"k-reciprocal re-ranking (k1={self.k1}, k2={self.k2}, λ={self.lambda_value})"


def rerank_distances(metric: str | Metric, query, gallery, cfg: RerankConfig) -> np.ndarray:
    """k-reciprocal re-ranked query x gallery distances under a fixed or learned metric
    (rerank.rerank_features with the metric's pairwise distances)."""
    return rerank_features(query, gallery, as_metric(metric).pairwise, cfg.k1, cfg.k2,
                           cfg.lambda_value)
