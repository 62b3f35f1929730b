"""k-reciprocal re-ranking: a golden case against a loop transcription of the authors'
reference code, a hand-computed case, the expansion rule."""
import math

import numpy as np
import pytest

from jlml_tf.evaluation import metric_learning, metrics, rerank

# Hand case: 3 queries + 5 gallery items in three clusters; distance 0 to itself, 1 inside a
# cluster, 10 across clusters. Joint indices: queries q0..q2 = 0..2, gallery g0..g4 = 3..7.
#   A = {q0, g0, g1} = {0, 3, 4},  B = {q1, g2, g3} = {1, 5, 6},  C = {q2, g4} = {2, 7}.
# As in the reference code the distances are squared (0, 1, 100) and divided by the maximum
# (100): the working distances are 0, 0.01 and 1.
CLUSTER = np.array([0, 1, 2, 0, 0, 1, 1, 2])
JOINT = np.where(CLUSTER[:, None] == CLUSTER[None, :], 1.0, 10.0)
np.fill_diagonal(JOINT, 0.0)
Q_G, Q_Q, G_G = JOINT[:3, 3:], JOINT[:3, :3], JOINT[3:, 3:]
A = np.exp(-0.01)  # weight exp(-d) of a cluster mate; the item itself weighs exp(0) = 1


def reference_rerank(q_g, q_q, g_g, k1, k2, lambda_value, power=2):
    """The authors' reference re-ranking (the Python version that takes q_g, q_q and g_g
    distance matrices), transcribed step by step with plain loops, in float64:

      original = D ** 2; original /= its column maxima; original = original.T
      initial_rank[i] = items by increasing original[i]
      R(i, k) = [c in initial_rank[i][:k+1] if i in initial_rank[c][:k+1]]
      expansion: add R(c, round(k1/2)) for c in R(i, k1) when more than 2/3 of it is in R(i, k1)
      V[i, expanded] = exp(-original[i, expanded]) / their sum
      if k2 != 1: V[i] = mean of V over initial_rank[i][:k2]
      jaccard[i, j] = 1 - m / (2 - m), m = sum over columns of min(V[i], V[j])
      final = jaccard * (1 - lambda) + original * lambda, query rows x gallery columns

    `power=1` is the same without squaring (what this project computed before), only to show
    that the fixed case below tells the two apart. Ties, which the reference leaves to
    np.argsort, do not occur in the cases it is used on.
    """
    nq, ng = np.shape(q_g)
    n = nq + ng

    def joint(i, j):
        if i < nq and j < nq:
            return float(q_q[i][j])
        if i < nq:
            return float(q_g[i][j - nq])
        if j < nq:
            return float(q_g[j][i - nq])
        return float(g_g[i - nq][j - nq])

    original = [[0.0] * n for _ in range(n)]
    for i in range(n):
        column_max = max(joint(k, i) ** power for k in range(n))
        for j in range(n):
            original[i][j] = joint(j, i) ** power / column_max  # normalised, then transposed
    initial_rank = [sorted(range(n), key=lambda j: original[i][j]) for i in range(n)]

    def reciprocal(i, k):
        return [c for c in initial_rank[i][:k + 1] if i in initial_rank[c][:k + 1]]

    v = [[0.0] * n for _ in range(n)]
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = list(r)
        for c in r:
            h = reciprocal(c, int(np.around(k1 / 2)))
            if len(set(h) & set(r)) > 2 / 3 * len(h):
                expanded += h
        expanded = sorted(set(expanded))
        total = sum(math.exp(-original[i][j]) for j in expanded)
        for j in expanded:
            v[i][j] = math.exp(-original[i][j]) / total
    if k2 != 1:
        v = [[sum(v[j][c] for j in initial_rank[i][:k2]) / k2 for c in range(n)]
             for i in range(n)]
    final = np.zeros((nq, ng))
    for i in range(nq):
        for j in range(nq, n):
            m = sum(min(v[i][c], v[j][c]) for c in range(n))
            final[i, j - nq] = (1 - m / (2 - m)) * (1 - lambda_value) \
                + original[i][j] * lambda_value
    return final


def _euclidean(a, b):
    return np.array([[math.dist(x, y) for y in b] for x in a])


# Golden case: fixed features, 4 queries and 12 gallery items in 3-D. No two distances from one
# item are within 5e-3 of each other (so the neighbour order is the same in float32 and
# float64), and with k1 = 6 or 7 the expansion adds items to many sets.
GOLDEN_QUERY = np.array([[1.05, 1.78, -2.55], [-0.14, 1.01, 1.35], [0.65, 1.5, 0.29],
                         [0.55, 0.18, -1.07]])
GOLDEN_GALLERY = np.array([
    [-0.85, 0.38, -0.58], [1.27, 1.29, 1.8], [-0.03, 1.38, -0.91], [-0.82, 0.08, 0.28],
    [-1.6, -1.73, 0.36], [-0.86, 1.21, 0.39], [0.31, 0.21, 0.9], [-0.15, 1.09, -0.53],
    [-0.22, -0.68, 0.6], [0.04, -0.86, 2.0], [-0.36, -0.12, 0.39], [1.75, -0.15, 0.7]])


def _golden_distances():
    q, g = GOLDEN_QUERY, GOLDEN_GALLERY
    return _euclidean(q, g), _euclidean(q, q), _euclidean(g, g)


def test_golden_case_is_unambiguous_and_expands():
    q_g, q_q, g_g = _golden_distances()
    joint = np.block([[q_q, q_g], [q_g.T, g_g]])
    assert np.diff(np.sort(joint, axis=1), axis=1).min() > 5e-3  # no near ties
    for k1 in (6, 7):
        top = metrics.argsort_rows(joint, k1 + 1)
        rows, _ = rerank.expanded_sets(top, top[:, :round(k1 / 2) + 1])
        assert len(rows) > rerank.reciprocal_mask(top).sum() + 10
    # Squaring matters here: without it the reference's output differs by far more than the
    # tolerance of the golden test.
    squared = reference_rerank(q_g, q_q, g_g, 6, 3, 0.3)
    plain = reference_rerank(q_g, q_q, g_g, 6, 3, 0.3, power=1)
    assert np.abs(squared - plain).max() > 0.05


@pytest.mark.parametrize("k1,k2,lambda_value", [(6, 3, 0.3), (7, 1, 0.3), (6, 6, 0.0),
                                                (7, 4, 1.0), (20, 6, 0.3)])
def test_golden_case_matches_the_reference(k1, k2, lambda_value):
    q_g, q_q, g_g = _golden_distances()
    expected = reference_rerank(q_g, q_q, g_g, k1, k2, lambda_value)
    got = rerank.k_reciprocal_rerank(q_g, q_q, g_g, k1, k2, lambda_value)
    np.testing.assert_allclose(got, expected, atol=2e-6)
    from_features = rerank.rerank_features(GOLDEN_QUERY, GOLDEN_GALLERY, "l2", k1, k2,
                                           lambda_value)
    np.testing.assert_allclose(from_features, expected, atol=2e-6)


def test_both_entry_points_give_the_same_distances():
    """rerank.rerank_distances (what the evaluate and search commands call) on features."""
    cfg = rerank.RerankConfig(k1=6, k2=3, lambda_value=0.3)
    q_g, q_q, g_g = _golden_distances()
    expected = reference_rerank(q_g, q_q, g_g, 6, 3, 0.3)
    got = rerank.rerank_distances("l2", GOLDEN_QUERY, GOLDEN_GALLERY, cfg)
    np.testing.assert_allclose(got, expected, atol=2e-6)
    # A learned metric goes through its own pairwise distances (squared as any other).
    metric = metric_learning.Metric("m", matrix=np.diag([1.0, 4.0, 0.25]))
    m_q_g, m_q_q, m_g_g = (metric.pairwise(a, b) for a, b in [
        (GOLDEN_QUERY, GOLDEN_GALLERY), (GOLDEN_QUERY, GOLDEN_QUERY),
        (GOLDEN_GALLERY, GOLDEN_GALLERY)])
    for square in (m_q_q, m_g_g):
        np.fill_diagonal(square, 0.0)
    np.testing.assert_allclose(rerank.rerank_distances(metric, GOLDEN_QUERY, GOLDEN_GALLERY,
                                                         cfg),
                               reference_rerank(m_q_g, m_q_q, m_g_g, 6, 3, 0.3), atol=2e-6)


def test_asymmetric_input_is_normalised_by_columns_then_transposed():
    # The reference divides by column maxima and transposes; a slightly asymmetric q_q (as
    # rounding can leave) must follow it, not a row normalisation.
    q_g, q_q, g_g = _golden_distances()
    q_q = q_q.copy()
    q_q[0, 1] *= 1.3
    np.testing.assert_allclose(rerank.k_reciprocal_rerank(q_g, q_q, g_g, 6, 3, 0.3),
                               reference_rerank(q_g, q_q, g_g, 6, 3, 0.3), atol=2e-6)


def test_hand_case_k1_2_k2_1():
    # k1 = 2: N(i, 3) = i, then its nearest two, ties to the lower index:
    #   A and B members: their own cluster; q2: [2, 7, 0] (0 wins the tie at 10); g4: [7, 2, 0].
    # Reciprocal: A and B members get their cluster; C: 0 is not reciprocal (N(0, 3) = A),
    # so R(2) = R(7) = {2, 7}.
    # round(k1/2) = 1, N(i, 2): 0:[0,3] 3:[3,0] 4:[4,0] 1:[1,5] 5:[5,1] 6:[6,1] 2:[2,7] 7:[7,2]
    # H(c) have at most 2 members, so "> 2/3 of H(c) in R(i)" needs all of H(c) in R(i):
    # the expansion adds nothing; each set is the item's cluster.
    # V rows: 3-clusters (1, A, A) / (1 + 2A) (1 at the item itself); C: (1, A) / (1 + A).
    # Jaccard, same 3-cluster (q0-g0, q0-g1, q1-g2, q1-g3): min per column is A, A, A:
    #   m = 3A / (1 + 2A), 1 - m / (2 - m) = 1 - 3A / (2 + A) = (2 - 2A) / (2 + A).
    # Same 2-cluster (q2-g4): m = 2A / (1 + A), 1 - m / (2 - m) = 1 - A.
    # Different clusters: no shared column, Jaccard 1.
    j3, j2 = (2 - 2 * A) / (2 + A), 1 - A
    jaccard = np.array([[j3, j3, 1, 1, 1],
                        [1, 1, j3, j3, 1],
                        [1, 1, 1, 1, j2]])
    got = rerank.k_reciprocal_rerank(Q_G, Q_Q, G_G, k1=2, k2=1, lambda_value=0.3)
    np.testing.assert_allclose(got, 0.7 * jaccard + 0.3 * Q_G ** 2 / 100, atol=1e-6)
    np.testing.assert_allclose(rerank.k_reciprocal_rerank(Q_G, Q_Q, G_G, 2, 1, 0.0), jaccard,
                               atol=1e-6)


def test_hand_case_query_expansion_k2_2():
    # Same sets; V'[i] = mean of V over N(i, 2) (columns in order of the cluster's indices):
    #   V'[q0] = (V[0] + V[3]) / 2 = ((1+A)/2, (1+A)/2, A) / (1+2A) = V'[g0]   -> Jaccard 0
    #   V'[g1] = (V[4] + V[0]) / 2 = ((1+A)/2, A, (1+A)/2) / (1+2A)
    #   q0-g1: m = ((1+A)/2 + A + A) / (1+2A) = (1+5A) / (2(1+2A)), Jaccard 1 - m/(2-m).
    #   B is the same with q1, g2, g3. C: V'[q2] = V'[g4] = (1/2, 1/2)  -> Jaccard 0.
    m = (1 + 5 * A) / (2 * (1 + 2 * A))
    jm = 1 - m / (2 - m)
    jaccard = np.array([[0, jm, 1, 1, 1],
                        [1, 1, 0, jm, 1],
                        [1, 1, 1, 1, 0]])
    got = rerank.k_reciprocal_rerank(Q_G, Q_Q, G_G, k1=2, k2=2, lambda_value=0.0)
    np.testing.assert_allclose(got, jaccard, atol=1e-6)


def test_expansion_rule_on_given_neighbour_lists():
    # Hand-made neighbour lists (self first), with the half lists equal to the full ones.
    top = np.array([[0, 1, 2, 3], [1, 0, 2, 4], [2, 0, 1, 3],
                    [3, 0, 2, 5], [4, 1, 5, 0], [5, 3, 4, 0]])
    # Reciprocal sets: R0 = {0,1,2,3}, R1 = {0,1,2,4}, R2 = {0,1,2,3}, R3 = {0,2,3,5},
    #   R4 = {1,4,5} (0 lacks 4), R5 = {3,4,5} (0 lacks 5).
    # i = 0: H(1) = R1 shares {0,1,2}, 3 > 2/3 * 4 -> add 4; H(3) = R3 shares {0,2,3} -> add 5.
    # i = 1: H(0) = H(2) share {0,1,2} -> add 3; H(4) = {1,4,5} shares 2, not > 2 -> no.
    # i = 3: H(0) and H(2) share {0,2,3} -> add 1; H(5) = {3,4,5} shares {3,5}: exactly 2/3.
    # i = 4: H(1) shares {1,4}: 2 of 4, no; H(5) shares {4,5}: exactly 2/3 of 3, not more.
    # i = 5: H(3) shares {3,5}, H(4) shares {4,5}: neither.
    expected = [{0, 1, 2, 3, 4, 5}, {0, 1, 2, 3, 4}, {0, 1, 2, 3, 4, 5}, {0, 1, 2, 3, 5},
                {1, 4, 5}, {3, 4, 5}]
    np.testing.assert_array_equal(rerank.reciprocal_mask(top)[4], [True, True, True, False])
    rows, cols = rerank.expanded_sets(top, top)
    assert [set(cols[rows == i]) for i in range(6)] == expected


@pytest.mark.parametrize("k1,k2", [(5, 3), (6, 1), (8, 4), (20, 6)])
def test_matches_the_reference_on_random_features(k1, k2):
    rng = np.random.default_rng(k1)
    x = rng.normal(size=(34, 3))
    d = _euclidean(x, x)
    q_g, q_q, g_g = d[:8, 8:], d[:8, :8], d[8:, 8:]
    got = rerank.k_reciprocal_rerank(q_g, q_q, g_g, k1, k2, 0.3)
    np.testing.assert_allclose(got, reference_rerank(q_g, q_q, g_g, k1, k2, 0.3), atol=1e-5)


def test_random_case_exercises_the_expansion():
    # Guards the reference comparison above: the expansion must add items somewhere.
    rng = np.random.default_rng(6)
    x = rng.normal(size=(34, 3))
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    top = metrics.argsort_rows(d, 7)
    rows, _ = rerank.expanded_sets(top, top[:, :4])
    assert len(rows) > rerank.reciprocal_mask(top).sum()


def test_separable_clusters_keep_perfect_rank1():
    # 12 identities far apart (centres ~100 apart, spread 1): 1 query + 4 gallery images each.
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 8)) * 100
    pids = np.arange(1, 13)
    query = centres + rng.normal(size=(12, 8))
    gallery = np.repeat(centres, 4, axis=0) + rng.normal(size=(48, 8))
    reranked = rerank.rerank_features(query, gallery)
    r = metrics.evaluate_distance_matrix(reranked, pids, np.zeros(12), np.repeat(pids, 4),
                                         np.ones(48))
    assert r["rank1"] == 1.0 and r["map"] == pytest.approx(1.0)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k1"):
        rerank.k_reciprocal_rerank(Q_G, Q_Q, G_G, k1=0)
    with pytest.raises(ValueError, match="shapes"):
        rerank.k_reciprocal_rerank(Q_G, Q_Q[:2, :2], G_G)
    with pytest.raises(ValueError, match="non-negative"):
        rerank.k_reciprocal_rerank(-Q_G, Q_Q, G_G)
    with pytest.raises(ValueError, match="metric 'manhattan'"):
        rerank.rerank_features(GOLDEN_QUERY, GOLDEN_GALLERY, "manhattan")
