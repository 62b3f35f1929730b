"""Trial evaluation from features: pooling options, metrics plumbing, trial aggregation."""
import numpy as np
import pytest

from jlml_tf.evaluation import metric_learning, metrics, protocol


def test_evaluate_from_features_hand_case():
    # 1-D features. Query pid 1 (camera 0) at 0. Gallery: pid 2 at 1, pid 1 at 2 (camera 1),
    # pid 1 at 0 (camera 0, junk), pid 1 at 4 (camera 2). Without junk: [2@1, 1@2, 1@4]
    # -> matches at ranks 2 and 3.
    r = protocol.evaluate([[0.0]], [1], [0], [[1.0], [2.0], [0.0], [4.0]], [2, 1, 1, 1],
                          [1, 1, 0, 2])
    np.testing.assert_array_equal(r["cmc"], [0, 1, 1, 1])
    assert r["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r["map_official"] == pytest.approx(((0 + 1 / 2) / 2 + (1 / 2 + 2 / 3) / 2) / 2)
    assert r["minp"] == pytest.approx(2 / 3)
    assert set(r) == {"cmc", "rank1", "rank5", "rank10", "rank20", "map_official", "map",
                      "minp", "num_queries", "num_skipped_queries"}


def test_evaluate_drops_junk_pids_like_the_matrix_path():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(10, 4)), rng.normal(size=(30, 4))
    qp, qc = rng.integers(1, 5, 10), rng.integers(0, 2, 10)
    gp, gc = rng.integers(-1, 5, 30), rng.integers(0, 3, 30)
    from_features = protocol.evaluate(q, qp, qc, g, gp, gc)
    diff = q[:, None] - g[None]
    from_matrix = metrics.evaluate_distance_matrix(np.sqrt((diff ** 2).sum(-1)), qp, qc, gp, gc)
    assert len(from_features["cmc"]) == np.sum(gp != -1)
    for key in ("map", "map_official", "minp", "num_queries"):
        assert from_features[key] == pytest.approx(from_matrix[key], rel=1e-6)


# Multi query: query pid 1 camera 0 at (0, 0); extra images of pid 1 camera 0 at (2, 0) and
# (4, 0); other extra images (pid 1 camera 1, pid 2 camera 0) must not be pooled.
MQ = (np.array([[2.0, 0.0], [4.0, 0.0], [100.0, 100.0], [-50.0, 0.0]]),
      np.array([1, 1, 1, 2]), np.array([0, 0, 1, 0]))


def test_pool_multi_query_mean_and_max():
    queries = np.array([[0.0, 0.0], [7.0, 7.0]])
    pids, cams = np.array([1, 3]), np.array([0, 0])
    mean = protocol.pool_multi_query(queries, pids, cams, *MQ, pooling="mean")
    # (0 + 2 + 4) / 3 = 2; the pid-3 query has no extra images: unchanged.
    np.testing.assert_allclose(mean, [[2.0, 0.0], [7.0, 7.0]])
    maxed = protocol.pool_multi_query(queries, pids, cams, *MQ, pooling="max")
    np.testing.assert_allclose(maxed, [[4.0, 0.0], [7.0, 7.0]])
    with pytest.raises(ValueError, match="pooling"):
        protocol.pool_multi_query(queries, pids, cams, *MQ, pooling="median")


def test_multi_query_changes_the_ranking():
    # Gallery: pid 2 at (0, 0.5), pid 1 at (2, 0), pid 3 at (4, 0), all camera 1.
    # single query (0, 0): nearest pid 2 -> miss; mean-pooled (2, 0): pid 1 -> hit;
    # max-pooled (4, 0): pid 3 -> miss.
    gallery = [[0.0, 0.5], [2.0, 0.0], [4.0, 0.0]]
    args = ([[0.0, 0.0]], [1], [0], gallery, [2, 1, 3], [1, 1, 1])
    assert protocol.evaluate(*args)["rank1"] == 0.0
    assert protocol.evaluate(*args, multi_query=MQ)["rank1"] == 1.0
    assert protocol.evaluate(*args, multi_query=MQ, multi_query_pooling="max")["rank1"] == 0.0


def test_pool_gallery_per_pid_and_camera():
    g = np.array([[1.0, 0.0], [9.0, 9.0], [5.0, 0.0], [0.0, 1.0], [0.0, 3.0], [7.0, 7.0]])
    pids = np.array([1, 0, 1, 1, 0, -1])
    cams = np.array([1, 1, 1, 2, 1, 1])
    feats, new_pids, new_cams = protocol.pool_gallery(g, pids, cams, "mean")
    # (1, cam 1) -> mean of rows 0, 2 at row 0's place; distractors and junk stay single.
    np.testing.assert_allclose(feats, [[3.0, 0.0], [9.0, 9.0], [0.0, 1.0], [0.0, 3.0],
                                       [7.0, 7.0]])
    np.testing.assert_array_equal(new_pids, [1, 0, 1, 0, -1])
    np.testing.assert_array_equal(new_cams, [1, 1, 2, 1, 1])
    feats, _, _ = protocol.pool_gallery(g, pids, cams, "max")
    np.testing.assert_allclose(feats[0], [5.0, 0.0])


def test_gallery_pooling_in_evaluate():
    # Query pid 1 at (3, 0). Gallery pid 1 camera 1 at (1, 0) and (5, 0), pid 2 at (2, 0).
    # None: distances 2, 2, 1 -> pid 2 first, match at rank 2.
    # mean: pid 1 pooled to (3, 0), distance 0 -> rank 1. max: (5, 0), distance 2 -> rank 2.
    args = ([[3.0, 0.0]], [1], [0], [[1.0, 0.0], [5.0, 0.0], [2.0, 0.0]], [1, 1, 2], [1, 1, 1])
    none = protocol.evaluate(*args)
    assert none["rank1"] == 0 and none["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert protocol.evaluate(*args, gallery_pooling="mean")["rank1"] == 1.0
    assert protocol.evaluate(*args, gallery_pooling="max")["rank1"] == 0.0


def test_metric_choices():
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(6, 3)), rng.normal(size=(9, 3))
    qp, gp = rng.integers(1, 3, 6), rng.integers(1, 3, 9)
    qc, gc = np.zeros(6), np.ones(9)
    direct = protocol.evaluate(q, qp, qc, g, gp, gc, metric="l2")
    via_object = protocol.evaluate(q, qp, qc, g, gp, gc,
                                   metric=metric_learning.fit_metric("l2"))
    assert direct["map"] == via_object["map"]
    with pytest.raises(ValueError, match="fitted"):
        protocol.evaluate(q, qp, qc, g, gp, gc, metric="kissme")
    with pytest.raises(ValueError, match="same number of rows"):
        protocol.evaluate(q, qp[:5], qc, g, gp, gc)


def test_aggregate_trials_mean_and_std():
    a = {"cmc": np.array([0.5, 1.0]), "rank1": 0.5, "map": 0.4, "num_queries": 2}
    b = {"cmc": np.array([1.0, 1.0, 1.0]), "rank1": 1.0, "map": 0.8, "num_queries": 4}
    agg = protocol.aggregate_trials([a, b])
    assert agg["num_trials"] == 2
    assert agg["mean"]["rank1"] == pytest.approx(0.75)
    assert agg["std"]["rank1"] == pytest.approx(0.25)  # population std of {0.5, 1}
    assert agg["mean"]["map"] == pytest.approx(0.6) and agg["std"]["map"] == pytest.approx(0.2)
    assert agg["mean"]["num_queries"] == 3 and agg["std"]["num_queries"] == 1
    # The shorter CMC is extended with its last value: [0.5, 1, 1].
    np.testing.assert_allclose(agg["mean"]["cmc"], [0.75, 1.0, 1.0])
    np.testing.assert_allclose(agg["std"]["cmc"], [0.25, 0.0, 0.0])
    with pytest.raises(ValueError):
        protocol.aggregate_trials([])
