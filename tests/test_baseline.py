"""python -m jlml_tf.baseline (LOMO + XQDA), its feature cache, and XQDA against known answers."""
import json
import types

import numpy as np
import pytest

from jlml_tf import baseline
from jlml_tf.data.types import ImageTable
from jlml_tf.evaluation import metric_learning
from jlml_tf.features import cache, lomo

# ----------------------------------------------------------------------------------------------
# XQDA


def test_xqda_closed_form_on_a_one_dimensional_problem():
    """P identities at 0..P-1, seen in two views offset by -a and +a. Cross-view pairs: same
    identity differences are +-2a (Sigma_I = 4a^2); different identities p != q give
    p - q +- 2a (Sigma_E = P(P+1)/6 + 4a^2). One direction, eigenvalue Sigma_E / Sigma_I > 1,
    so d(x, y) = (x - y)^2 (1 / (Sigma_I + lambda) - 1 / Sigma_E)."""
    num_ids, a, lam = 10, 0.3, 1e-3
    centres = np.arange(num_ids, dtype=np.float64)
    x = np.r_[centres - a, centres + a][:, None]
    pids, views = np.r_[np.arange(num_ids), np.arange(num_ids)], np.repeat([0, 1], num_ids)
    metric = metric_learning.fit_xqda(x, pids, views, regularisation=lam, cross_camera=True)
    sigma_i, sigma_e = 4 * a ** 2, num_ids * (num_ids + 1) / 6 + 4 * a ** 2
    expected = 1 / (sigma_i + lam) - 1 / sigma_e
    q, g = np.array([[0.0], [2.0]]), np.array([[1.0], [5.0], [-1.5]])
    np.testing.assert_allclose(metric.pairwise(q, g), (q - g.T) ** 2 * expected, rtol=1e-5)


def _paper_xqda_distances(x, pids, views, q, g, lam=1e-3):
    """XQDA written out from the paper: cross-view pairs enumerated one by one, Sigma_I + lam I,
    eigenvectors of inv(Sigma_I) Sigma_E with eigenvalue > 1, M in that subspace."""
    same, diff = [], []
    for i in range(len(x)):
        for j in range(len(x)):
            if views[i] != views[j]:
                (same if pids[i] == pids[j] else diff).append(x[i] - x[j])
    same, diff = np.array(same), np.array(diff)
    sigma_i = same.T @ same / len(same) + lam * np.eye(x.shape[1])
    sigma_e = diff.T @ diff / len(diff)
    values, vectors = np.linalg.eig(np.linalg.solve(sigma_i, sigma_e))
    values, vectors = values.real, vectors.real
    w = vectors[:, values > 1]
    m = np.linalg.inv(w.T @ sigma_i @ w) - np.linalg.inv(w.T @ sigma_e @ w)
    delta = q[:, None, :] - g[None, :, :]
    proj = delta @ w
    return np.einsum("qgk,kl,qgl->qg", proj, m, proj)


def _two_view_problem(rng, num_ids=25, dim=6):
    centres = np.zeros((num_ids, dim))
    centres[:, :2] = rng.normal(size=(num_ids, 2))
    scale = np.r_[0.2, 0.2, np.ones(dim - 2) * 0.5]
    x = np.concatenate([centres + rng.normal(size=centres.shape) * scale for _ in range(2)])
    pids = np.tile(np.arange(num_ids), 2)
    views = np.repeat([1, 2], num_ids)
    return x, pids, views


def test_xqda_matches_the_papers_formulas_written_out():
    rng = np.random.default_rng(0)
    x, pids, views = _two_view_problem(rng)
    q, g = rng.normal(size=(4, 6)), rng.normal(size=(5, 6))
    metric = metric_learning.fit_xqda(x, pids, views, cross_camera=True)
    expected = _paper_xqda_distances(x, pids, views, q, g)
    np.testing.assert_allclose(metric.pairwise(q, g), expected, rtol=1e-4, atol=1e-6)


def test_xqda_in_the_span_of_the_training_data_equals_the_full_space():
    """More dimensions than training images (LOMO's case): the Gram-matrix subspace gives the
    same distances as the full d x d problem, with an absolute 0.001 ridge in both."""
    rng = np.random.default_rng(1)
    x, pids, views = _two_view_problem(rng, num_ids=12, dim=40)
    x = np.abs(x)  # positive, not centred, like histograms
    q, g = np.abs(rng.normal(size=(3, 40))), np.abs(rng.normal(size=(6, 40)))
    full = metric_learning.fit_xqda(x, pids, views, cross_camera=True, subspace=False)
    span = metric_learning.fit_xqda(x, pids, views, cross_camera=True)  # 24 images < 40 dims
    assert full.projection.shape == span.projection.shape
    np.testing.assert_allclose(span.pairwise(q, g), full.pairwise(q, g), rtol=1e-3, atol=1e-4)


def test_xqda_regulariser_is_absolute():
    """0.001 is added as it is (the paper), not scaled with the features: scaling the data
    changes which directions survive when the ridge dominates."""
    rng = np.random.default_rng(2)
    x, pids, views = _two_view_problem(rng)
    sigma_i, _, _, _ = metric_learning.pair_covariances(x * 1e-3, pids, views, True)
    small = metric_learning.fit_xqda(x * 1e-3, pids, views, cross_camera=True)
    unit = metric_learning.fit_xqda(x, pids, views, cross_camera=True)
    assert np.trace(sigma_i) / len(sigma_i) < 1e-5  # far below the ridge
    assert unit.matrix.shape[0] >= 2 and small.matrix.shape[0] < unit.matrix.shape[0]


# ----------------------------------------------------------------------------------------------
# Views, trials, cache


def test_training_views_folder_then_camera():
    table = ImageTable(images=[b""] * 4, pids=[1, 1, 2, 2], camids=[3, 5, 3, 6],
                       filenames=["probe/a.jpg", "gallery/b.jpg", "probe/c.jpg", "gallery/d.jpg"])
    views, kind = baseline.training_views(table, np.arange(4))
    assert kind == "folder" and views.tolist() == [1, 0, 1, 0]
    one_folder = ImageTable(images=[b""] * 3, pids=[1, 1, 2], camids=[1, 2, 1],
                            filenames=["campus/1.png", "campus/2.png", "campus/3.png"])
    views, kind = baseline.training_views(one_folder, np.arange(3))
    assert kind == "camera" and views.tolist() == [1, 2, 1]
    unknown = ImageTable(images=[b""] * 2, pids=[1, 1], camids=[-1, 1], filenames=["a", "b"])
    with pytest.raises(baseline.UsageError, match="xqda_pairs=all"):
        baseline.training_views(unknown, np.arange(2))


def test_select_trials():
    assert baseline.select_trials(["all"], 3) == [0, 1, 2]
    assert baseline.select_trials(["2", "0"], 3) == [2, 0]
    with pytest.raises(baseline.UsageError, match="out of range"):
        baseline.select_trials(["3"], 3)
    with pytest.raises(baseline.UsageError, match="indices"):
        baseline.select_trials(["first"], 3)


def test_swapping_query_and_gallery():
    from jlml_tf.data.types import ReidData, Trial

    rng = np.random.default_rng(3)
    pids = np.repeat(np.arange(1, 9), 2)
    table = ImageTable(images=[b""] * 16, pids=pids, camids=np.tile([1, 2], 8),
                       filenames=[f"img{i}" for i in range(16)])
    features = rng.normal(size=(16, 5)) + pids[:, None]
    trial = Trial("t", train=np.arange(8), query=np.array([8, 10, 12]),
                  gallery=np.array([9, 11, 13, 15]))
    data = ReidData("toy", "p", table, [trial])
    forward, _ = baseline.evaluate_trial(features, data, trial)
    swapped, detail = baseline.evaluate_trial(features, data, trial, swap=True)
    assert forward["num_queries"] == 3 and detail["swapped"]
    # Four gallery images become queries; the one whose identity has no query is skipped.
    assert (swapped["num_queries"], swapped["num_skipped_queries"]) == (3, 1)
    several = Trial("t", train=np.arange(8), query=np.array([8]), gallery=np.array([9, 9]))
    with pytest.raises(baseline.UsageError, match="one image per identity"):
        baseline.check_swappable(data, several)


def test_cache_key_depends_on_images_and_options():
    table = ImageTable(images=[b"ab", b"c"], pids=[1, 2], camids=[1, 1], filenames=["x", "y"])
    other = ImageTable(images=[b"a", b"bc"], pids=[1, 2], camids=[1, 1], filenames=["x", "y"])
    assert cache.table_digest(table) != cache.table_digest(other)
    digest = cache.table_digest(table)
    stems = {cache.entry_stem("d", lomo.LomoConfig(retinex=r), digest) for r in ("none", "msr")}
    stems.add(cache.entry_stem("d", lomo.LomoConfig(retinex="none", tau=0.2), digest))
    assert len(stems) == 3


def _png(colour, size=(20, 50)):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_table_features_cache_round_trip(tmp_path):
    table = ImageTable(images=[_png((200, 30, 30)), _png((20, 20, 220)), _png((90, 90, 90))],
                       pids=[1, 2, 3], camids=[1, 1, 2], filenames=["a.png", "b.png", "c.png"])
    cfg = lomo.LomoConfig(retinex="none")
    fresh = cache.table_features(table, cfg, "toy", None, progress=False, log=lambda *a: None)
    assert fresh.features.shape == (3, 26_960) and not fresh.info["cached"]
    stored = cache.table_features(table, cfg, "toy", tmp_path, progress=False,
                                  log=lambda *a: None)
    (entry,) = tmp_path.glob("toy_none_*.npy")
    assert entry.with_suffix(".json").is_file() and not stored.info["cached"]
    again = cache.table_features(table, cfg, "toy", tmp_path, progress=False,
                                 log=lambda *a: None)
    assert again.info["cached"]
    assert again.info["cpu_ms_per_image"] == stored.info["cpu_ms_per_image"]
    np.testing.assert_array_equal(again.features, fresh.features)
    # Decoded through the training pipeline: a uniform image gives one colour bin per row.
    assert np.count_nonzero(fresh.features[0, :40 * 512]) == 40


# ----------------------------------------------------------------------------------------------
# The command, end to end on the tiny synthetic data set


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    common = ["baseline", "--dataset=synthetic", "--dataset_option=config=tiny",
              f"--data_dir={root / 'data'}", "--retinex=msr", "--verbose=0"]
    return types.SimpleNamespace(root=root, common=common)


def test_cli_writes_the_run_files_and_reuses_the_cache(tiny, capsys):
    out = tiny.root / "out"
    assert baseline.main(tiny.common + [f"--out_dir={out}"]) == 0
    printed = capsys.readouterr().out
    assert "| LOMO (intensity MSR) + XQDA |" in printed and "26,960 dimensions" in printed
    for name in ("results.json", "results.md", "cmc.png", "config.json"):
        assert (out / name).is_file()
    document = json.loads((out / "results.json").read_text())
    (summary,) = document["results"].values()
    assert summary["num_trials"] == 1 and 0 <= summary["mean"]["rank1"] <= 1
    extra = document["extra"]
    assert extra["lomo"]["retinex"] == "msr" and extra["lomo_timing"]["feature_dim"] == 26_960
    assert extra["lomo_timing"]["cpu_ms_per_image"] > 0 and not extra["lomo_timing"]["cached"]
    assert extra["xqda"]["per_trial"]["default"]["views"] == "camera"
    config = json.loads((out / "config.json").read_text())
    assert config["flags"]["retinex"] == "msr" and "--retinex=msr" in config["command"]
    (entry,) = (tiny.root / "data" / "lomo").glob("synthetic_msr_*.npy")

    again = tiny.root / "again"
    assert baseline.main(tiny.common + [f"--out_dir={again}"]) == 0
    assert "read from the cache" in capsys.readouterr().out
    second = json.loads((again / "results.json").read_text())
    assert second["extra"]["lomo_timing"]["cached"]
    assert second["results"] == document["results"]  # the cached features are the fresh ones


def test_cli_bad_input_names_the_flag(tiny, capsys, tmp_path):
    assert baseline.main(tiny.common + ["--retinex=ssr"]) == 2
    assert "retinex" in capsys.readouterr().err
    assert baseline.main(tiny.common + [f"--manual_dir={tmp_path / 'missing'}"]) == 2
    assert "--manual_dir=" in capsys.readouterr().err
    assert baseline.main(tiny.common + ["--trials=4"]) == 2
    assert "--trials" in capsys.readouterr().err
    assert baseline.main(tiny.common + ["--dataset_option=tiny"]) == 2
    assert "--dataset_option" in capsys.readouterr().err
    assert baseline.main(tiny.common + ["--protocol=nope"]) == 2
    assert "--protocol=nope" in capsys.readouterr().err
    assert baseline.main(tiny.common + ["--swap_query_gallery"]) == 2
    assert "--swap_query_gallery" in capsys.readouterr().err
    assert baseline.main(["baseline", "stray"]) == 2
