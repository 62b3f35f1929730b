"""k-reciprocal re-ranking: a hand-computed case, the expansion rule, a loop reference."""
import numpy as np
import pytest

from jlml_tf.evaluation import metrics, rerank

# Hand case: 3 queries + 5 gallery items in three clusters; distance 0 to itself, 1 inside a
# cluster, 10 across clusters. Joint indices: queries q0..q2 = 0..2, gallery g0..g4 = 3..7.
#   A = {q0, g0, g1} = {0, 3, 4},  B = {q1, g2, g3} = {1, 5, 6},  C = {q2, g4} = {2, 7}.
# Every row's maximum is 10, so the normalised distances are 0, 0.1 and 1.
CLUSTER = np.array([0, 1, 2, 0, 0, 1, 1, 2])
JOINT = np.where(CLUSTER[:, None] == CLUSTER[None, :], 1.0, 10.0)
np.fill_diagonal(JOINT, 0.0)
Q_G, Q_Q, G_G = JOINT[:3, 3:], JOINT[:3, :3], JOINT[3:, 3:]
A = np.exp(-0.1)  # weight exp(-d) of a cluster mate; the item itself weighs exp(0) = 1


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
    np.testing.assert_allclose(got, 0.7 * jaccard + 0.3 * Q_G / 10, atol=1e-6)
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


def _reference(q_g, q_q, g_g, k1, k2, lam):
    """Straight loops over the published algorithm (Zhong et al. 2017), for cross-checking."""
    d = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64)
    d = d / d.max(axis=1, keepdims=True)
    n, nq = len(d), len(q_g)
    order = np.argsort(d, axis=1, kind="stable")

    def recip(i, k):
        return [j for j in order[i, :k + 1] if i in order[j, :k + 1]]

    v = np.zeros((n, n))
    for i in range(n):
        r = recip(i, k1)
        expanded = set(r)
        for c in r:
            h = recip(c, int(round(k1 / 2)))
            if len(set(h) & set(r)) > 2 / 3 * len(h):
                expanded |= set(h)
        cols = sorted(expanded)
        w = np.exp(-d[i, cols])
        v[i, cols] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[order[i, :k2]].mean(axis=0) for i in range(n)])
    jac = np.array([[1 - np.minimum(v[i], v[j]).sum() / np.maximum(v[i], v[j]).sum()
                     for j in range(nq, n)] for i in range(nq)])
    return (1 - lam) * jac + lam * d[:nq, nq:]


@pytest.mark.parametrize("k1,k2", [(5, 3), (6, 1), (8, 4), (20, 6)])
def test_matches_loop_reference(k1, k2):
    rng = np.random.default_rng(k1)
    x = rng.normal(size=(34, 3))
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    q_g, q_q, g_g = d[:8, 8:], d[:8, :8], d[8:, 8:]
    got = rerank.k_reciprocal_rerank(q_g, q_q, g_g, k1, k2, 0.3)
    np.testing.assert_allclose(got, _reference(q_g, q_q, g_g, k1, k2, 0.3), atol=1e-5)


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
