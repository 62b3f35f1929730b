"""KISSME and XQDA: pair statistics, PSD projection, and a synthetic case where they must win."""
import numpy as np
import pytest
import scipy.linalg

from jlml_tf.evaluation import distances, metric_learning, protocol


@pytest.mark.parametrize("cross_camera", [False, True])
def test_pair_covariances_match_brute_force(cross_camera):
    rng = np.random.default_rng(0)
    x, pids, cams = rng.normal(size=(14, 3)), rng.integers(0, 4, 14), rng.integers(0, 3, 14)
    same, n_same, diff, n_diff = np.zeros((3, 3)), 0, np.zeros((3, 3)), 0
    for i in range(14):
        for j in range(14):
            if i == j or (cross_camera and cams[i] == cams[j]):
                continue
            outer = np.outer(x[i] - x[j], x[i] - x[j])
            if pids[i] == pids[j]:
                same, n_same = same + outer, n_same + 1
            else:
                diff, n_diff = diff + outer, n_diff + 1
    got = metric_learning.pair_covariances(x, pids, cams, cross_camera)
    np.testing.assert_allclose(got[0], same / n_same, atol=1e-12)
    np.testing.assert_allclose(got[2], diff / n_diff, atol=1e-12)
    assert (got[1], got[3]) == (n_same, n_diff)


def _synthetic(rng, num_ids, first_pid, dim=12):
    """Identity lives in 2 dimensions (small noise); 10 nuisance dimensions carry large noise
    that is the same for every identity: L2 is swamped by it, a learned metric ignores it."""
    centres = np.zeros((num_ids, dim))
    centres[:, :2] = rng.normal(size=(num_ids, 2))
    scale = np.r_[0.15, 0.15, np.ones(dim - 2)]
    return lambda: centres + rng.normal(size=(num_ids, dim)) * scale, \
        np.arange(first_pid, first_pid + num_ids)


@pytest.mark.parametrize("name", ["kissme", "xqda"])
def test_learned_metric_beats_l2_on_unseen_identities(name):
    rng = np.random.default_rng(1)
    draw, train_pids = _synthetic(rng, 200, 1)
    train = np.concatenate([draw() for _ in range(4)])
    draw, test_pids = _synthetic(rng, 100, 1000)  # disjoint identities, as in re-id
    query, gallery = draw(), draw()
    args = (query, test_pids, np.zeros(100), gallery, test_pids, np.ones(100))
    l2 = protocol.evaluate(*args, metric="l2")
    learned = metric_learning.fit_metric(name, train, np.tile(train_pids, 4),
                                         np.zeros(len(train)))
    r = protocol.evaluate(*args, metric=learned)
    assert r["rank1"] > l2["rank1"] + 0.2, (r["rank1"], l2["rank1"])
    assert r["map"] > l2["map"] + 0.2


def test_kissme_matrix_is_psd_and_pca_option():
    rng = np.random.default_rng(2)
    x, pids = rng.normal(size=(80, 6)), rng.integers(0, 10, 80)
    m = metric_learning.fit_kissme(x, pids)
    assert np.linalg.eigvalsh(m.matrix).min() >= -1e-9
    reduced = metric_learning.fit_kissme(x, pids, pca_dim=3)
    assert reduced.projection.shape == (6, 3) and reduced.matrix.shape == (3, 3)
    assert reduced.pairwise(x[:4], x[4:9]).shape == (4, 5)


def test_xqda_keeps_directions_with_eigenvalue_above_one():
    rng = np.random.default_rng(3)
    draw, pids = _synthetic(rng, 100, 1, dim=6)
    x, labels = np.concatenate([draw() for _ in range(3)]), np.tile(pids, 3)
    m = metric_learning.fit_xqda(x, labels, regularisation=0.0)
    sigma_i, _, sigma_e, _ = metric_learning.pair_covariances(x, labels)
    values = np.sort(scipy.linalg.eigvalsh(sigma_e, sigma_i))[::-1]
    # The 2 identity dimensions vary far more across classes than within; the 4 nuisance
    # ones equally (ratio ~1, sampling noise decides which side of 1 they fall).
    assert values[1] > 10 and values[2] < 1.5
    assert m.projection.shape == (6, int(np.sum(values > 1)))
    # Those two directions carry the projection's first two columns.
    top = m.projection[:, :2] / np.linalg.norm(m.projection[:, :2], axis=0)
    assert np.linalg.norm(top[:2], axis=0).min() > 0.9
    assert np.linalg.eigvalsh(m.matrix).min() > 0  # I - diag(1/lambda) with lambda > 1
    fixed = metric_learning.fit_xqda(x, labels, dim=4)
    assert fixed.projection.shape == (6, 4)


@pytest.mark.parametrize("name", ["kissme", "xqda"])
def test_learned_metric_is_squared_l2_after_its_linear_map(name):
    rng = np.random.default_rng(5)
    draw, pids = _synthetic(rng, 60, 1, dim=8)
    x, labels = np.concatenate([draw() for _ in range(3)]), np.tile(pids, 3)
    metric = metric_learning.fit_metric(name, x, labels)
    q, g = draw(), draw()
    lin = metric.linear_map()
    assert lin.shape[0] == 8 and lin.shape[1] <= 8
    np.testing.assert_allclose(distances.pairwise_distances(q @ lin, g @ lin, "sqeuclidean"),
                               metric.pairwise(q, g), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["kissme", "xqda"])
def test_mapped_metric_is_l2_between_mapped_features_on_the_sphere(name):
    rng = np.random.default_rng(6)
    draw, pids = _synthetic(rng, 60, 1, dim=8)
    x, labels = np.concatenate([draw() for _ in range(3)]), np.tile(pids, 3)
    learned = metric_learning.fit_metric(name, x, labels)
    lin = learned.linear_map()
    mapped = metric_learning.fit_metric(f"{name}_map", x, labels)
    assert mapped.name == f"{name}_map" and mapped.matrix is None
    radius = mapped.sphere_radius
    assert radius == pytest.approx(10 * np.linalg.norm(x @ lin, axis=1).max(), rel=1e-5)
    q, g = draw(), draw()
    np.testing.assert_allclose(
        mapped.pairwise(q, g),
        distances.pairwise_distances(metric_learning.onto_sphere(q @ lin, radius),
                                     metric_learning.onto_sphere(g @ lin, radius), "l2"),
        rtol=1e-4, atol=1e-5)
    # R times the distance is the learned one, stretched by at most 1 / sqrt(1 - rho^2)
    # (in float64: float32's Gram-matrix distances blur the nearest pairs at this scale)
    lin = lin.astype(np.float64)
    plain = np.linalg.norm((q @ lin)[:, None] - (g @ lin)[None], axis=-1)
    on_q, on_g = (metric_learning.onto_sphere(v @ lin, radius).astype(np.float64) for v in (q, g))
    lifted = np.linalg.norm(on_q[:, None] - on_g[None], axis=-1)
    rho = max(np.linalg.norm(q @ lin, axis=1).max(), np.linalg.norm(g @ lin, axis=1).max()) / radius
    assert 0 < rho < 0.5
    stretch = lifted * radius / plain
    assert stretch.min() > 1 - 1e-5 and stretch.max() < 1 / np.sqrt(1 - rho ** 2) + 1e-5
    assert stretch.max() > 1 + 1e-4  # the sphere's dimension does move distances a little
    np.testing.assert_array_equal(lifted.argmin(1), plain.argmin(1))


def test_onto_sphere_gives_unit_rows_and_brings_rows_beyond_the_radius_back():
    y = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]], np.float32)
    on = metric_learning.onto_sphere(y, radius=1.0)
    assert on.shape == (3, 3)
    np.testing.assert_allclose(np.linalg.norm(on, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(on[0], [0.6, 0.8, 0.0], rtol=1e-6)  # |y| = 5 > R: direction kept
    np.testing.assert_allclose(on[1], [0.3, 0.4, np.sqrt(0.75)], rtol=1e-6)
    np.testing.assert_allclose(on[2], [0.0, 0.0, 1.0])
    assert metric_learning.sphere_radius(y) == pytest.approx(10 * 5.0)


def test_mapped_metric_says_which_metric_to_use_when_there_is_no_map():
    # two identities with the same two images: same-identity pairs differ more than others,
    # so no XQDA direction has eigenvalue > 1 and the one kept is not a squared L2
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="use --metric=xqda$"):
        metric_learning.fit_metric("xqda_map", x, [1, 1, 2, 2])


def test_linear_map_refuses_an_indefinite_or_fixed_metric():
    indefinite = metric_learning.Metric("m", matrix=np.diag([1.0, -0.5]))
    with pytest.raises(ValueError, match="eigenvalue"):
        indefinite.linear_map()
    with pytest.raises(ValueError, match="not learned"):
        metric_learning.fit_metric("l2").linear_map()
    lin = metric_learning.Metric("m", matrix=np.diag([4.0, 0.0])).linear_map()
    assert lin.shape == (2, 1) and (lin @ lin.T).tolist() == [[4.0, 0.0], [0.0, 0.0]]


def test_l2_generic_path_equals_direct():
    rng = np.random.default_rng(4)
    q, g = rng.normal(size=(7, 5)), rng.normal(size=(11, 5))
    identity = metric_learning.Metric("identity", matrix=np.eye(5))
    np.testing.assert_allclose(identity.pairwise(q, g),
                               distances.pairwise_distances(q, g, "sqeuclidean"),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.sqrt(identity.pairwise(q, g)),
                               metric_learning.fit_metric("l2").pairwise(q, g),
                               rtol=1e-4, atol=1e-4)


def test_fit_metric_errors():
    with pytest.raises(ValueError, match="unknown metric"):
        metric_learning.fit_metric("lmnn", np.ones((4, 2)), [1, 1, 2, 2])
    with pytest.raises(ValueError, match="training features"):
        metric_learning.fit_metric("xqda")
    with pytest.raises(ValueError, match="camera"):
        metric_learning.pair_covariances(np.ones((4, 2)), [1, 1, 2, 2], [0, -1, 0, 1], True)
