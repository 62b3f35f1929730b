"""Blocked distances: exact small cases, block coverage, Mahalanobis, bounded memory."""
import tracemalloc

import numpy as np
import pytest

from jlml_tf.evaluation import distances, metrics


def _naive(q, g, metric):
    q, g = np.asarray(q, np.float64), np.asarray(g, np.float64)
    diff = q[:, None, :] - g[None, :, :]
    if metric == "sqeuclidean":
        return (diff ** 2).sum(-1)
    if metric == "l2":
        return np.sqrt((diff ** 2).sum(-1))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    return 1.0 - qn @ gn.T


def test_hand_computed_values():
    q = [[0.0, 0.0], [1.0, 0.0]]
    g = [[3.0, 4.0], [0.0, 1.0], [-2.0, 0.0]]
    # |(3,4)| = 5, |(0,1)| = 1, |(-2,0)| = 2; from (1,0): |(2,4)|^2 = 20, |(-1,1)|^2 = 2, 9.
    np.testing.assert_allclose(distances.pairwise_distances(q, g, "l2"),
                               [[5, 1, 2], [np.sqrt(20), np.sqrt(2), 3]], rtol=1e-6)
    np.testing.assert_allclose(distances.pairwise_distances(q, g, "sqeuclidean"),
                               [[25, 1, 4], [20, 2, 9]], rtol=1e-6)
    # cos((1,0), .) = 3/5, 0, -1  ->  1 - cos = 0.4, 1, 2
    np.testing.assert_allclose(distances.pairwise_distances(q[1:], g, "cosine"),
                               [[0.4, 1.0, 2.0]], atol=1e-6)


@pytest.mark.parametrize("metric", ["l2", "sqeuclidean", "cosine"])
def test_matches_naive_float64(metric):
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(13, 7)), rng.normal(size=(29, 7))
    got = distances.pairwise_distances(q, g, metric)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _naive(q, g, metric), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("block_size", [1, 4, 13, 1000])
def test_blocks_cover_every_row_once(block_size):
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(13, 5)), rng.normal(size=(8, 5))
    seen, full = [], distances.pairwise_distances(q, g)
    for rows, block in distances.distance_blocks(q, g, "l2", block_size):
        assert block.shape == (rows.stop - rows.start, 8) and block.dtype == np.float32
        assert rows.stop - rows.start <= block_size
        # to rounding: BLAS may take other kernels for other row counts (a few ulp on an AMD EPYC)
        np.testing.assert_allclose(block, full[rows], rtol=1e-6, atol=1e-6)
        seen.extend(range(rows.start, rows.stop))
    assert seen == list(range(13))


def test_distances_never_negative():
    # Identical rows: |q|^2 + |g|^2 - 2 q.g rounds to about +-1e-7 in float32; clamped to 0.
    x = np.random.default_rng(2).normal(size=(50, 64)) * 10
    assert distances.pairwise_distances(x, x, "sqeuclidean").min() >= 0.0


def test_mahalanobis_identity_is_squared_euclidean():
    rng = np.random.default_rng(3)
    q, g = rng.normal(size=(6, 4)), rng.normal(size=(9, 4))
    got = np.concatenate([b for _, b in distances.mahalanobis_blocks(q, g, np.eye(4),
                                                                     block_size=4)])
    np.testing.assert_allclose(got, distances.pairwise_distances(q, g, "sqeuclidean"),
                               rtol=1e-5, atol=1e-5)


def test_mahalanobis_matches_definition_with_projection():
    rng = np.random.default_rng(4)
    q, g = rng.normal(size=(5, 6)), rng.normal(size=(7, 6))
    w = rng.normal(size=(6, 3))
    a = rng.normal(size=(3, 3))
    m = a @ a.T + np.diag([1.0, -0.2, 0.1])  # symmetric, need not be PSD
    diff = (q[:, None, :] - g[None, :, :]) @ w
    expected = np.maximum(np.einsum("qgi,ij,qgj->qg", diff, m, diff), 0)
    got = np.concatenate([b for _, b in distances.mahalanobis_blocks(q, g, m, w)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="symmetric"):
        list(distances.mahalanobis_blocks(np.ones((2, 2)), np.ones((2, 2)), [[1, 1], [0, 1]]))
    with pytest.raises(ValueError, match="unknown metric"):
        list(distances.distance_blocks(np.ones((2, 2)), np.ones((2, 2)), "manhattan"))
    with pytest.raises(ValueError, match="query features contain NaN"):
        list(distances.distance_blocks([[np.nan, 0.0]], np.ones((2, 2))))
    with pytest.raises(ValueError, match="gallery features contain NaN or inf"):
        list(distances.distance_blocks(np.ones((2, 2)), [[1.0, np.inf]], "cosine"))
    with pytest.raises(ValueError, match="gallery features contain NaN"):
        list(distances.mahalanobis_blocks(np.ones((1, 2)), [[1.0, np.nan]], np.eye(2)))
    with pytest.raises(ValueError, match="dim"):
        list(distances.distance_blocks(np.ones((2, 3)), np.ones((2, 2))))


def test_blocked_evaluation_never_holds_the_full_matrix():
    # 2,000 x 2,000 float32 would be 16 MB (32 MB in float64); with 64-row blocks the
    # distances, sort keys and flags of one block are ~2 MB.
    rng = np.random.default_rng(5)
    n = 2000
    q = rng.normal(size=(n, 8)).astype(np.float32)
    g = rng.normal(size=(n, 8)).astype(np.float32)
    pids = rng.integers(1, 300, n)
    tracemalloc.start()
    try:
        metrics.evaluate_blocks(distances.distance_blocks(q, g, "l2", block_size=64), pids,
                                np.zeros(n), pids, np.ones(n))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * n * n / 4, f"peak {peak / 2**20:.1f} MB"


def test_default_block_size_bounds_block_bytes():
    # a 20,000-item gallery: blocks of 419 rows = 33.5 MB of float32, never 20,000 rows
    rows = distances.default_block_size(20_000)
    assert rows * 20_000 * 4 <= distances.DEFAULT_BLOCK_BYTES
    assert rows >= 1 and distances.default_block_size(10**9) == 1
