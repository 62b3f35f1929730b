"""Market-1501 ranking metrics on tiny hand-made distance matrices (open-reid test_cmc style)."""
import numpy as np
import pytest

from jlml_tf.evaluation import distances, metrics


def _evaluate(dist, qp, qc, gp, gc, **kw):
    return metrics.evaluate_distance_matrix(np.asarray(dist, np.float32), qp, qc, gp, gc, **kw)


# One query (pid 1, camera 0) against six gallery items, distances increasing with the index.
#   idx pid cam dist
#   0    1   0  0.1  junk: same pid, same camera
#   1    0   1  0.2  distractor: an ordinary negative
#   2   -1   1  0.3  junk pid: ignored
#   3    1   1  0.4  true match
#   4    2   1  0.5  negative
#   5    1   2  0.6  true match
# Ranking without junk: [1 neg, 3 match, 4 neg, 5 match] -> matches at ranks 2 and 4.
CASE = dict(dist=[[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]], qp=[1], qc=[0],
            gp=[1, 0, -1, 1, 2, 1], gc=[0, 1, 1, 1, 1, 2])


def test_junk_distractor_and_both_maps():
    r = _evaluate(**CASE)
    # CMC has length 5: the gallery without the pid -1 item; first match at rank 2.
    np.testing.assert_array_equal(r["cmc"], [0, 1, 1, 1, 1])
    assert r["rank1"] == 0 and r["rank5"] == 1 and r["rank20"] == 1
    # Non-interpolated AP: (1/2 + 2/4) / 2 = 1/2.
    assert r["map"] == pytest.approx(0.5)
    # Official trapezoid AP: match 1 at rank 2: previous precision 0/1, precision 1/2 ->
    # (0 + 1/2) / 2 = 1/4; match 2 at rank 4: previous precision 1/3, precision 2/4 ->
    # (1/3 + 1/2) / 2 = 5/12; mean (1/4 + 5/12) / 2 = 1/3. Different from the 1/2 above.
    assert r["map_official"] == pytest.approx(1 / 3)
    # INP: 2 matches, hardest at rank 4 -> 2/4.
    assert r["minp"] == pytest.approx(0.5)
    assert r["num_queries"] == 1 and r["num_skipped_queries"] == 0


def test_same_camera_rule_off():
    # Item 0 is now a match: ranking [0 m, 1 n, 3 m, 4 n, 5 m], matches at ranks 1, 3, 5.
    r = _evaluate(**CASE, same_camera_junk=False)
    np.testing.assert_array_equal(r["cmc"], [1, 1, 1, 1, 1])
    assert r["map"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)  # 34/45
    # official: rank 1: (1 + 1)/2 = 1; rank 3: (1/2 + 2/3)/2 = 7/12; rank 5: (2/4 + 3/5)/2
    # = 11/20; mean (1 + 7/12 + 11/20) / 3 = 32/45.
    assert r["map_official"] == pytest.approx(32 / 45)
    assert r["minp"] == pytest.approx(3 / 5)


def test_single_match_at_rank_two_halves_official_ap():
    r = _evaluate([[0.1, 0.2]], [1], [0], [2, 1], [1, 1])
    assert r["map"] == pytest.approx(1 / 2)
    assert r["map_official"] == pytest.approx(1 / 4)  # (0 + 1/2) / 2
    assert r["minp"] == pytest.approx(1 / 2)


def test_unknown_camera_disables_same_camera_junk():
    # Same pid, gallery camera equal to the query's only when both are -1 (unknown): a match.
    r = _evaluate([[0.1, 0.2], [0.1, 0.2]], [1, 1], [-1, 0], [1, 2], [-1, -1])
    assert r["num_queries"] == 2 and r["rank1"] == 1.0
    # With a known shared camera the same item is junk and the query has no match left.
    r = _evaluate([[0.1, 0.2]], [1], [3], [1, 2], [3, 3])
    assert r["num_queries"] == 0 and r["num_skipped_queries"] == 1


def test_queries_without_match_are_skipped_and_counted():
    # q0 pid 1: match at rank 3. q1 pid 5: nothing of pid 5 in the gallery. q2 pid 2: its
    # only pid-2 item is in its own camera (junk). q3 pid 0 (distractor): no identity to
    # find, even though gallery item 1 also has pid 0. q4 pid 2 from camera 1, with the
    # distances reversed: match at rank 1.
    dist = [[0.1, 0.2, 0.3, 0.4]] * 4 + [[0.4, 0.3, 0.2, 0.1]]
    gp, gc = [3, 0, 1, 2], [1, 1, 1, 0]
    r = _evaluate(dist, [1, 5, 2, 0, 2], [0, 0, 0, 0, 1], gp, gc)
    assert r["num_queries"] == 2 and r["num_skipped_queries"] == 3
    np.testing.assert_allclose(r["cmc"], [0.5, 0.5, 1.0, 1.0])
    assert r["map"] == pytest.approx((1 / 3 + 1) / 2)
    assert r["map_official"] == pytest.approx(((0 + 1 / 3) / 2 + 1) / 2)
    assert r["minp"] == pytest.approx((1 / 3 + 1) / 2)


def test_no_valid_query_at_all():
    r = _evaluate([[0.1, 0.2]], [7], [0], [1, 2], [1, 1])
    assert r["num_queries"] == 0 and r["num_skipped_queries"] == 1
    assert r["rank1"] == 0 and r["map"] == 0 and r["minp"] == 0


def test_ties_go_to_the_lower_gallery_index():
    # All three at the same distance: the stable order is 0, 1, 2.
    r = _evaluate([[0.5, 0.5, 0.5]], [1], [0], [2, 1, 2], [1, 1, 1])
    assert r["cmc"][0] == 0 and r["cmc"][1] == 1  # match (index 1) ranked second
    r = _evaluate([[0.5, 0.5, 0.5]], [1], [0], [1, 2, 2], [1, 1, 1])
    assert r["rank1"] == 1.0
    # A tie between a match and a closer-indexed negative, behind a strictly closer one.
    r = _evaluate([[0.7, 0.3, 0.3]], [1], [0], [1, 2, 1], [1, 1, 1])
    # order: 1 (0.3, neg), 2 (0.3, match), 0 (0.7, match) -> ranks 2, 3
    assert r["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_argsort_rows_is_a_stable_argsort():
    rng = np.random.default_rng(0)
    d = rng.integers(-3, 4, size=(20, 50)).astype(np.float32)  # many ties, some negative
    d[0, :5] = [-0.0, 0.0, -0.0, 0.0, -1.0]  # -0.0 and 0.0 are equal, hence tied
    np.testing.assert_array_equal(metrics.argsort_rows(d), np.argsort(d, 1, kind="stable"))
    np.testing.assert_array_equal(metrics.argsort_rows(d, 7),
                                  np.argsort(d, 1, kind="stable")[:, :7])


def test_negative_distances_rank_like_positive_ones():
    # A similarity turned into a distance by negation: same ranks as the shifted version.
    d = np.array([[-0.9, -0.1, -0.5, 0.3]], np.float32)
    args = ([1], [0], [2, 1, 1, 2], [1, 1, 1, 1])
    assert _evaluate(d, *args)["map"] == pytest.approx(_evaluate(d + 1, *args)["map"])
    assert _evaluate(d, *args)["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_nan_distance_rejected():
    with pytest.raises(ValueError, match="NaN"):
        _evaluate([[0.1, np.nan]], [1], [0], [1, 2], [1, 1])


def test_block_shape_checked():
    blocks = [(slice(0, 1), np.zeros((1, 3), np.float32))]
    with pytest.raises(ValueError, match="expected"):
        metrics.evaluate_blocks(blocks, [1], [0], [1, 2], [1, 1])


def _reference(dist, qp, qc, gp, gc, same_camera_junk=True):
    """Per-query loop following the Market-1501 compute_AP.m logic, for cross-checking."""
    out = []
    for i in range(len(qp)):
        same_cam = (gc == qc[i]) & (qc[i] != -1) & same_camera_junk
        good = (gp == qp[i]) & (qp[i] > 0) & ~same_cam
        junk = (gp == -1) | ((gp == qp[i]) & same_cam)
        if not good.any():
            out.append(None)
            continue
        ngood, old_recall, old_precision, ap, hits, j, precisions = good.sum(), 0, 1.0, 0, 0, 0, []
        first = last = None
        for idx in np.argsort(dist[i], kind="stable"):
            if junk[idx]:
                continue
            j += 1
            if good[idx]:
                hits += 1
                precisions.append(hits / j)
                first = first or j
                last = j
            recall, precision = hits / ngood, hits / j
            ap += (recall - old_recall) * (old_precision + precision) / 2
            old_recall, old_precision = recall, precision
            if hits == ngood:
                break
        out.append((first, ap, np.mean(precisions), ngood / last))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_matches_reference_loop(seed):
    rng = np.random.default_rng(seed)
    nq, ng = 12, 40
    qp, qc = rng.integers(-1, 6, nq), rng.integers(-1, 3, nq)
    gp, gc = rng.integers(-1, 6, ng), rng.integers(-1, 3, ng)
    dist = rng.integers(0, 6, (nq, ng)).astype(np.float32)  # integer distances: many ties
    per_query = metrics.per_query_metrics(distances.blocks_of(dist, 5), qp, qc, gp, gc)
    for i, expected in enumerate(_reference(dist, qp, qc, gp, gc)):
        if expected is None:
            assert per_query.num_matches[i] == 0
            continue
        got = (per_query.first_rank[i], per_query.ap_official[i], per_query.ap[i],
               per_query.inp[i])
        np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("block_size", [1, 2, 7, 1000])
def test_block_size_does_not_change_results(block_size):
    rng = np.random.default_rng(42)
    nq, ng = 23, 31
    qp, qc = rng.integers(0, 8, nq), rng.integers(0, 3, nq)
    gp, gc = rng.integers(-1, 8, ng), rng.integers(0, 3, ng)
    dist = rng.random((nq, ng)).astype(np.float32)
    dist[:, 3] = dist[:, 4]  # some exact ties
    whole = _evaluate(dist, qp, qc, gp, gc, block_size=nq)
    blocked = _evaluate(dist, qp, qc, gp, gc, block_size=block_size)
    assert whole.keys() == blocked.keys()
    for key in whole:
        np.testing.assert_array_equal(blocked[key], whole[key])


def test_blocks_may_arrive_in_any_order():
    rng = np.random.default_rng(7)
    dist = rng.random((9, 12)).astype(np.float32)
    qp, gp = rng.integers(1, 4, 9), rng.integers(1, 4, 12)
    qc, gc = np.zeros(9), np.ones(12)
    reversed_blocks = list(distances.blocks_of(dist, 2))[::-1]
    a = metrics.evaluate_blocks(reversed_blocks, qp, qc, gp, gc)
    b = _evaluate(dist, qp, qc, gp, gc)
    assert a["map"] == b["map"] and a["map_official"] == b["map_official"]


def test_ranks_option():
    r = _evaluate(**CASE, ranks=(1, 3, 50))
    assert r["rank1"] == 0 and r["rank3"] == 1 and r["rank50"] == 1  # capped at the gallery
