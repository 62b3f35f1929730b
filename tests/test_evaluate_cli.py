"""python -m jlml_tf.evaluate on a tiny run directory, and the evaluation glue behind it."""
import dataclasses
import json
import shutil
import types

import matplotlib.image as mpimg
import numpy as np
import pytest

from jlml_tf import evaluate as ev
from jlml_tf.inference import threshold as th
from jlml_tf import visualize as vis
from jlml_tf.evaluation import distances, metrics, protocol, rerank
import run_fixtures as fixtures


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An untrained tiny JLML saved as a run directory of the tiny synthetic data set."""
    import keras
    import tensorflow as tf

    import jlml_tf_datasets
    from jlml_tf.inference import run_dir
    from jlml_tf.modeling import jlml

    root = tmp_path_factory.mktemp("evaluate_cli")
    data_dir = root / "data"
    data = jlml_tf_datasets.load("synthetic", None, data_dir=str(data_dir), config="tiny")
    cfg = fixtures.tiny_config(num_classes=6)
    keras.utils.set_random_seed(0)
    training_model, embedding_model = jlml.build_jlml(cfg)
    run = root / "run"
    run_dir.write_config(run, cfg, train={"dataset_option": ["config=tiny"],
                                          "data_dir": str(data_dir), "manual_dir": None},
                         data={"dataset": "synthetic", "protocol": "default", "trial": "default"})
    tf.train.Checkpoint(model=training_model).save(str(run / "checkpoints" / "ckpt"))
    from jlml_tf.inference import eval_trial

    features = eval_trial.extract_features(embedding_model, data.table, np.arange(len(data.table)),
                                           64, 32, verbose=0)  # every image, in table order
    return types.SimpleNamespace(run=run, data=data, cfg=cfg, features=features, root=root,
                                 embedding_model=embedding_model)


def features_of(tiny_run, rows):
    return tiny_run.features[rows]


def read_results(path):
    document = json.loads(path.read_text())
    (summary,) = document["results"].values()
    return summary


def test_cli_writes_suffixed_results_the_worst_best_picture_and_a_threshold(tiny_run, capsys):
    rc = ev.main(["evaluate", f"--run_dir={tiny_run.run}", "--verbose=0",
                  "--num_queries_shown=2", "--top_k_shown=3", "--calibrate_threshold",
                  "--calibration_split=test", "--target_false_match_rate=0.1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| JLML l2 |" in printed and "synthetic / default / default" in printed
    for name in ("results_l2.json", "results_l2.md", "cmc_l2.png", "worst_best_l2.png"):
        assert (tiny_run.run / name).is_file(), name
    assert not (tiny_run.run / "results.json").exists()  # training's own file name is left alone
    # The same numbers as training's evaluation (eval_trial.evaluate_trial: these features
    # into protocol.evaluate).
    data, trial = tiny_run.data, tiny_run.data.trials[0]
    table, f = data.table, tiny_run.features
    expected = protocol.evaluate(f[trial.query], table.pids[trial.query], table.camids[trial.query],
                                 f[trial.gallery], table.pids[trial.gallery],
                                 table.camids[trial.gallery])
    summary = read_results(tiny_run.run / "results_l2.json")
    assert summary["num_trials"] == 1
    for key in ("rank1", "rank5", "map", "map_official"):
        assert summary["mean"][key] == pytest.approx(expected[key], abs=1e-6), key
    # Worst/best picture: 2 + 2 of the 6 queries, each the query and its top 3.
    png = tiny_run.run / "worst_best_l2.png"
    rows = [vis.Row([None] * 4, section="s" if i in (0, 2) else "") for i in range(4)]
    assert mpimg.imread(png).shape[:2] == vis.canvas_size(rows, title=True)
    from test_visualize import count_frames

    assert count_frames(png, vis.QUERY) == 4
    assert count_frames(png, vis.MATCH) + count_frames(png, vis.NON_MATCH) == 12
    check_threshold(tiny_run)


def test_xqda_map_ranks_with_the_linear_map_it_saves(tiny_run, tmp_path, capsys):
    from jlml_tf.evaluation import metric_learning
    from jlml_tf.inference import gallery_index, linear_map

    run = tmp_path / "run"
    shutil.copytree(tiny_run.run, run)
    assert ev.main(["evaluate", f"--run_dir={run}", "--verbose=0", "--metric=xqda_map",
                    "--save_linear_map", "--num_queries_shown=0"]) == 0
    assert "Linear map 32 -> " in capsys.readouterr().out
    saved = linear_map.load(run / linear_map.FILE_NAME)
    table, trial, f = tiny_run.data.table, tiny_run.data.trials[0], tiny_run.features
    train = trial.train
    want = metric_learning.fit_metric("xqda", f[train], table.pids[train],
                                      table.camids[train]).linear_map()
    # L is unique up to a rotation of its columns (eigenvector signs): compare L L^T
    np.testing.assert_allclose(saved.matrix @ saved.matrix.T, want @ want.T, rtol=1e-3,
                               atol=1e-4)
    assert saved.source["trial"] == trial.name and saved.flip_test is False
    assert saved.source["training_images"] == len(train)
    assert saved.source["model_fingerprint"] == gallery_index.model_fingerprint(run)
    assert saved.radius == pytest.approx(
        10 * np.linalg.norm(f[train] @ want, axis=1).max(), rel=1e-4)
    sphere = lambda x: metric_learning.onto_sphere(x @ want, saved.radius)  # noqa: E731
    q, g = trial.query, trial.gallery
    expected = protocol.evaluate(sphere(f[q]), table.pids[q], table.camids[q],
                                 sphere(f[g]), table.pids[g], table.camids[g])
    summary = read_results(run / "results_xqda_map.json")
    for key in ("rank1", "map"):
        assert summary["mean"][key] == pytest.approx(expected[key], abs=1e-6), key
        assert saved.source["accuracy"]["results"]["JLML xqda_map"]["mean"][key] == \
            pytest.approx(expected[key], abs=1e-6)
    # a map needs a mapped metric and the run's own split, and its threshold is not the run's
    assert ev.main(["evaluate", f"--run_dir={run}", "--metric=xqda_map", "--save_linear_map",
                    "--trial=all"]) == 2
    assert "--trial=all" in capsys.readouterr().err
    assert ev.main(["evaluate", f"--run_dir={run}", "--metric=xqda", "--save_linear_map"]) == 2
    assert "--metric=xqda_map" in capsys.readouterr().err
    assert ev.main(["evaluate", f"--run_dir={run}", "--metric=xqda_map",
                    "--calibrate_threshold"]) == 2
    assert "add --save_linear_map" in capsys.readouterr().err
    assert ev.main(["evaluate", f"--run_dir={run}", "--metric=xqda_map", "--save_linear_map",
                    "--calibrate_threshold", "--calibration_split=validation"]) == 2
    assert "--calibration_split=train or test" in capsys.readouterr().err


def test_mapped_threshold_is_calibrated_on_the_mapped_embedding_and_kept_with_the_map(
        tiny_run, tmp_path):
    from jlml_tf.inference import linear_map

    run = tmp_path / "run"
    shutil.copytree(tiny_run.run, run)
    (run / th.FILE_NAME).unlink(missing_ok=True)  # other tests calibrate the shared run
    assert ev.main(["evaluate", f"--run_dir={run}", "--verbose=0", "--metric=xqda_map",
                    "--save_linear_map", "--calibrate_threshold", "--calibration_split=test",
                    "--num_queries_shown=0"]) == 0
    saved = linear_map.load(run / linear_map.FILE_NAME)
    assert not (run / th.FILE_NAME).exists()  # the run's own threshold is another embedding's
    table, trial, f = tiny_run.data.table, tiny_run.data.trials[0], tiny_run.features
    sphere = lambda rows: _on_sphere(saved, f[rows])  # noqa: E731
    want = th.calibrate_split("test", sphere, table.pids, table.camids, trial.train,
                              trial.query, trial.gallery, 0.01)
    got = saved.threshold
    assert got.threshold == pytest.approx(want.threshold, rel=1e-4)
    assert got.source["linear_map"] == "xqda_map" and got.source["split"] == "test"
    unmapped = th.calibrate_split("test", lambda rows: f[rows], table.pids, table.camids,
                                  trial.train, trial.query, trial.gallery, 0.01)
    assert abs(got.threshold - unmapped.threshold) > 1e-3  # not the run's own embedding's


def _on_sphere(saved, features):
    from jlml_tf.evaluation import metric_learning

    return metric_learning.onto_sphere(features @ saved.matrix, saved.radius)


def test_rerank_cli_uses_the_library_rerank_on_the_same_features(tiny_run, tmp_path):
    out = tmp_path / "out"
    ckpt = tiny_run.run / "checkpoints" / "ckpt-1"
    rc = ev.main(["evaluate", f"--checkpoint={ckpt}", "--verbose=0", "--rerank", "--k1=5",
                  "--k2=2", "--lambda_value=0.3", f"--output_dir={out}", "--num_queries_shown=1"])
    assert rc == 0
    assert json.loads((out / "results_rerank.json").read_text())["extra"]["checkpoint"] == str(ckpt)
    assert {p.name for p in out.iterdir()} == {"results_rerank.json", "results_rerank.md",
                                               "cmc_rerank.png", "worst_best_rerank.png"}
    table, trial = tiny_run.data.table, tiny_run.data.trials[0]
    gallery = trial.gallery[table.pids[trial.gallery] != -1]
    q, g = features_of(tiny_run, trial.query), features_of(tiny_run, gallery)
    reranked = rerank.rerank_features(q, g, "l2", k1=5, k2=2, lambda_value=0.3)
    plain = distances.pairwise_distances(q, g)
    assert not np.allclose(reranked, plain)
    expected = metrics.evaluate_distance_matrix(reranked, table.pids[trial.query],
                                                table.camids[trial.query], table.pids[gallery],
                                                table.camids[gallery])
    summary = read_results(out / "results_rerank.json")
    for key in ("rank1", "map", "map_official", "minp"):
        assert summary["mean"][key] == pytest.approx(expected[key], abs=1e-6), key
    assert "re-ranking (k1=5, k2=2" in (out / "results_rerank.md").read_text()


def test_rerank_improves_rank1_on_a_constructed_case():
    # The query's nearest gallery item (pid 2) sits next to its own crowd, which does not have
    # the query among its neighbours; the true match (pid 1) is a little farther but has the
    # query as its nearest neighbour: k-reciprocal neighbours put it first.
    q = np.array([[0.0, 0.0]], np.float32)
    g = np.array([[1.0, 0], [1.5, 0.1], [1.5, -0.1], [1.7, 0], [-1.1, 0]], np.float32)
    gp, gc = [2, 2, 2, 2, 1], [2] * 5
    plain = protocol.evaluate_features(q, [1], [1], g, gp, gc)
    cfg = rerank.RerankConfig(k1=2, k2=1, lambda_value=0.3)
    reranked = protocol.evaluate_features(q, [1], [1], g, gp, gc, rerank=cfg)
    assert plain.results["rank1"] == 0.0 and reranked.results["rank1"] == 1.0
    g_g = distances.pairwise_distances(g, g)
    np.fill_diagonal(g_g, 0)
    library = rerank.k_reciprocal_rerank(distances.pairwise_distances(q, g), np.zeros((1, 1)),
                                         g_g, 2, 1, 0.3)
    np.testing.assert_allclose(reranked.distances, library, rtol=1e-6)
    np.testing.assert_allclose(reranked.query_distances([0]), library, rtol=1e-6)


def test_evaluate_features_matches_protocol_evaluate_with_pooling_and_junk():
    rng = np.random.default_rng(0)
    q, g, mq = (rng.normal(size=(n, 8)).astype(np.float32) for n in (6, 20, 9))
    qp, qc = rng.integers(1, 5, 6), rng.integers(1, 3, 6)
    gp, gc = rng.integers(-1, 5, 20), rng.integers(1, 4, 20)
    mqp, mqc = rng.integers(1, 5, 9), rng.integers(1, 3, 9)
    for pooling in ("mean", "max"):
        for metric in ("l2", "cosine"):
            expected = protocol.evaluate(q, qp, qc, g, gp, gc, metric=metric,
                                         multi_query=(mq, mqp, mqc), multi_query_pooling=pooling)
            got = protocol.evaluate_features(q, qp, qc, g, gp, gc, metric, multi_query=(mq, mqp, mqc),
                                       multi_query_pooling=pooling)
            assert got.gallery_keep.sum() == (gp != -1).sum()
            for key in ("rank1", "map", "map_official", "minp", "num_queries"):
                assert got.results[key] == pytest.approx(expected[key]), (pooling, metric, key)


def test_worst_and_best_queries():
    pq = metrics.QueryMetrics(first_rank=np.array([1, 5, 2, 0, 9]), ap_official=np.zeros(5),
                              ap=np.array([1.0, 0.2, 0.5, 0.0, 0.2]), inp=np.zeros(5),
                              num_matches=np.array([1, 1, 2, 0, 1]), num_gallery=10)
    worst, best = protocol.worst_and_best(pq, 2)
    assert list(worst) == [4, 1]  # equal AP: the later first match is worse
    assert list(best) == [0, 2]  # query 3 has no match: never shown
    worst, best = protocol.worst_and_best(pq, 3)
    assert list(worst) == [4, 1, 2] and list(best) == [0]


def test_flip_test_features_are_the_normalised_sum_of_both_views(tiny_run):
    from jlml_tf.inference import eval_trial

    rows = np.arange(5)
    flipped = eval_trial.extract_features(tiny_run.embedding_model, tiny_run.data.table, rows,
                                          64, 32, verbose=0, flip=True)
    from jlml_tf.data import pipeline

    images = np.concatenate([b.numpy() for b in pipeline.eval_dataset(
        tiny_run.data.table, rows, 64, 32, 8)])
    mirror = tiny_run.embedding_model(images[:, :, ::-1], training=False).numpy()
    mirror /= np.linalg.norm(mirror, axis=1, keepdims=True)
    want = tiny_run.features[rows] + mirror
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(flipped, want, atol=1e-5)
    assert not np.allclose(flipped, tiny_run.features[rows], atol=1e-3)  # the mirror counts


def test_camera_bn_cli_ranks_with_each_cameras_calibrated_features(tiny_run, tmp_path, capsys):
    from jlml_tf.inference import eval_trial

    rc = ev.main(["evaluate", f"--run_dir={tiny_run.run}", "--verbose=0", "--camera_bn=test",
                  "--num_queries_shown=0", f"--output_dir={tmp_path}"])
    assert rc == 0, capsys.readouterr().err
    data, trial = tiny_run.data, tiny_run.data.trials[0]
    table = data.table
    rows = np.unique(np.concatenate([trial.query, trial.gallery, trial.multi_query]))
    calibration = {int(c): rows[table.camids[rows] == c] for c in np.unique(table.camids[rows])}
    f = eval_trial.extract_features_by_camera(tiny_run.embedding_model, table, rows,
                                              calibration, 64, 32, verbose=0)
    lookup = lambda r: f[np.searchsorted(rows, r)]  # noqa: E731
    q, g = trial.query, trial.gallery
    expected = protocol.evaluate(lookup(q), table.pids[q], table.camids[q], lookup(g),
                                 table.pids[g], table.camids[g])
    summary = read_results(tmp_path / "results_l2_cbn-test.json")
    for key in ("rank1", "map"):
        assert summary["mean"][key] == pytest.approx(expected[key], abs=1e-6), key


def test_camera_bn_map_is_fitted_on_each_cameras_calibrated_features(tiny_run, tmp_path):
    """The map a per-camera readout ranks with is stored, marked for per-camera exports."""
    from jlml_tf.evaluation import metric_learning
    from jlml_tf.inference import camera_bn, eval_trial, linear_map

    run = tmp_path / "run"
    shutil.copytree(tiny_run.run, run)
    assert ev.main(["evaluate", f"--run_dir={run}", "--verbose=0", "--camera_bn=train",
                    "--metric=xqda_map", "--save_linear_map", "--num_queries_shown=0"]) == 0
    saved = linear_map.load(run / linear_map.FILE_NAME)
    assert saved.camera_bn == "train"
    assert saved.source["accuracy"]["title"].endswith(
        "each camera's batch norm from its train images")
    table, trial = tiny_run.data.table, tiny_run.data.trials[0]
    train = np.sort(trial.train)
    f = eval_trial.extract_features_by_camera(
        tiny_run.embedding_model, table, train, camera_bn.calibration_rows("train", table, trial),
        64, 32, verbose=0)
    want = metric_learning.fit_metric("xqda", f, table.pids[train],
                                      table.camids[train]).linear_map()
    np.testing.assert_allclose(saved.matrix @ saved.matrix.T, want @ want.T, rtol=1e-3,
                               atol=1e-4)
    plain = metric_learning.fit_metric("xqda", tiny_run.features[train], table.pids[train],
                                       table.camids[train]).linear_map()
    assert not np.allclose(saved.matrix @ saved.matrix.T, plain @ plain.T, atol=1e-3)


@pytest.mark.slow  # one SavedModel export per camera
@pytest.mark.parametrize("fuse", [[], ["--fuse_lomo=none"]], ids=["embedding", "with_lomo"])
def test_per_camera_exports_with_the_map_rank_as_the_per_camera_evaluation(tiny_run, tmp_path,
                                                                           fuse):
    from conftest import load_benchmark

    per_camera_export = load_benchmark("per_camera_export")
    with pytest.raises(ValueError, match="camera 2 has 6 training images"):  # too few to export
        per_camera_export.check_split(tiny_run.run)
    with pytest.raises(ValueError, match="direct-transfer check needs the --linear_map"):
        per_camera_export.check_split(tiny_run.run, dataset="cuhk01")
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run, run)
    config = json.loads((run / "config.json").read_text())  # every camera 12+ training images
    config["train"]["dataset_option"] = ["config=tiny", "images_per_camera=4"]
    (run / "config.json").write_text(json.dumps(config))
    assert ev.main(["evaluate", f"--run_dir={run}", "--verbose=0", "--camera_bn=train",
                    "--metric=xqda_map", "--save_linear_map", "--num_queries_shown=0",
                    *fuse]) == 0
    report = per_camera_export.check_split(run, run / "linear_map.npz", progress=lambda m: None)
    assert sorted(report["cameras"]) == [1, 2, 3]
    # LOMO in float32 puts a few pixels across a quantisation step (lomo_graph's docstring),
    # which may swap two near distances
    assert max(c["max_abs_diff"] for c in report["cameras"].values()) < (1e-3 if fuse else 1e-4)
    assert report["exported"] == pytest.approx(report["evaluation"], abs=0.01 if fuse else 1e-6)
    # and the evaluation side is what the evaluate command ranked with
    summary = read_results(run / f"results_xqda_map{'_lomo-none' if fuse else ''}_cbn-train.json")
    for key in ("rank1", "map"):
        assert report["evaluation"][key] == pytest.approx(summary["mean"][key], abs=1e-6), key


def test_option_suffixes():
    assert ev.option_suffix("l2", False, flip=True) == "_l2_flip"
    assert ev.option_suffix("l2", False) == "_l2"
    assert ev.option_suffix("l2", False, flip=True, camera_bn="train") == "_l2_flip_cbn-train"
    assert ev.option_suffix("l2", True) == "_rerank"
    assert ev.option_suffix("xqda", True, "max") == "_xqda_rerank_mqmax"
    assert ev.option_suffix("cosine", False, dataset_override="grid-125_125") == \
        "_grid-125_125_cosine"
    assert ev.option_suffix("xqda", False, flip=True, camera_bn="train", fuse_lomo="none") == \
        "_xqda_lomo-none_flip_cbn-train"
    assert ev.option_suffix("xqda", False, fuse_lomo="msr", fusion_weight=0.5) == \
        "_xqda_lomo-msr-w0.5"
    assert ev.paper_key_for("market1501", "single_query", "kissme", None) == \
        "market1501/single_query/kissme"
    assert ev.paper_key_for("cuhk01", "871_100_single_shot", "xqda", None) == \
        "cuhk01/871_100_single_shot"


def test_fuse_lomo_fits_xqda_on_the_embedding_and_lomo_concatenated(tiny_run, tmp_path, capsys):
    from jlml_tf import baseline
    from jlml_tf.evaluation import fusion, metric_learning
    from jlml_tf.features.lomo import LomoConfig

    out = tmp_path / "out"
    assert ev.main(["evaluate", f"--run_dir={tiny_run.run}", "--verbose=0", "--metric=xqda",
                    "--fuse_lomo=none", "--fusion_weight=0.5", "--num_queries_shown=0",
                    f"--output_dir={out}"]) == 0
    printed = capsys.readouterr().out
    assert "JLML + LOMO (no Retinex, weight 0.5) xqda" in printed
    assert "LOMO features" not in printed  # --verbose=0: no cache message
    document = json.loads((out / "results_xqda_lomo-none-w0.5.json").read_text())
    assert document["extra"]["fusion"] == {"lomo_retinex": "none", "weight": 0.5,
                                           "lomo": LomoConfig(retinex="none").to_dict()}
    # The same: LOMO of the table as the baseline computes it, [0.5 * embedding, LOMO], XQDA
    # on the baseline's cross-view pairs of the training images.
    data, trial = tiny_run.data, tiny_run.data.trials[0]
    table = data.table
    lomo, _, _ = baseline.table_lomo(data, LomoConfig(retinex="none"), None, verbose=False)
    x = fusion.concatenate(tiny_run.features, lomo, 0.5)
    views, _ = baseline.training_views(table, trial.train)
    metric = metric_learning.fit_xqda(x[trial.train], table.pids[trial.train], views,
                                      cross_camera=True)
    q, g = trial.query, trial.gallery
    expected = protocol.evaluate(x[q], table.pids[q], table.camids[q], x[g], table.pids[g],
                                 table.camids[g], metric=metric)
    (summary,) = document["results"].values()
    for key in ("rank1", "map"):
        assert summary["mean"][key] == pytest.approx(expected[key], abs=1e-6), key
    # and LOMO changed the ranking: the embedding alone, fitted the same way, ranks otherwise
    f = tiny_run.features
    alone = protocol.evaluate(f[q], table.pids[q], table.camids[q], f[g], table.pids[g],
                              table.camids[g], metric=metric_learning.fit_xqda(
                                  f[trial.train], table.pids[trial.train], views,
                                  cross_camera=True))
    assert (alone["rank1"], alone["map"]) != pytest.approx((expected["rank1"], expected["map"]))
    # the table's LOMO features were cached beside the prepared data, as the baseline does
    assert list((tiny_run.root / "data" / "lomo").glob("synthetic_none_*.npy"))


def test_fuse_lomo_map_is_saved_for_an_export_with_lomo_at_the_models_size(tiny_run, tmp_path,
                                                                         capsys):
    """--metric=xqda_map --fuse_lomo=none --save_linear_map: XQDA's map of [w * embedding,
    LOMO], LOMO at the model's 64x32 input (what the exported graph computes it from), fitted
    on the baseline's cross-view pairs, and the figures are that map's ranking."""
    from jlml_tf import baseline
    from jlml_tf.evaluation import fusion, metric_learning
    from jlml_tf.features import lomo
    from jlml_tf.inference import linear_map

    run = tmp_path / "run"
    shutil.copytree(tiny_run.run, run)
    assert ev.main(["evaluate", f"--run_dir={run}", "--verbose=0", "--metric=xqda_map",
                    "--fuse_lomo=none", "--fusion_weight=0.5", "--save_linear_map",
                    "--num_queries_shown=0"]) == 0
    saved = linear_map.load(run / linear_map.FILE_NAME)
    cfg = lomo.LomoConfig(height=64, width=32, retinex="none")
    assert saved.fusion == {"weight": 0.5, "lomo": cfg.to_dict()}
    assert saved.matrix.shape[0] == saved.input_dim(32) == 32 + lomo.feature_dim(cfg)
    data, trial = tiny_run.data, tiny_run.data.trials[0]
    table, train = data.table, trial.train
    features, _, _ = baseline.table_lomo(data, cfg, None, verbose=False, span=False)
    x = fusion.concatenate(tiny_run.features, features, 0.5)
    views, _ = baseline.training_views(table, train)
    want = metric_learning.mapped(metric_learning.fit_xqda(
        x[train], table.pids[train], views, cross_camera=True), x[train])
    # L is unique up to a rotation of its columns: compare the mapped vectors' Gram matrices
    q, g = trial.query, trial.gallery
    mine, theirs = x[q] @ saved.matrix, x[q] @ want.projection
    np.testing.assert_allclose(mine @ mine.T, theirs @ theirs.T, rtol=1e-3, atol=1e-4)
    assert saved.radius == pytest.approx(want.sphere_radius, rel=1e-4)
    expected = protocol.evaluate(want.embed(x[q]), table.pids[q], table.camids[q],
                                 want.embed(x[g]), table.pids[g], table.camids[g])
    summary = read_results(run / "results_xqda_map_lomo-none-w0.5.json")
    for key in ("rank1", "map"):
        assert summary["mean"][key] == pytest.approx(expected[key], abs=1e-6), key
    # the exported graph has no Retinex
    assert ev.main(["evaluate", f"--run_dir={run}", "--metric=xqda_map", "--fuse_lomo=msr",
                    "--save_linear_map"]) == 2
    assert "without Retinex; pass --fuse_lomo=none" in capsys.readouterr().err


def test_a_map_for_a_data_set_that_never_trained_the_model_goes_beside_the_results(
        tiny_run, tmp_path, monkeypatch, capsys):
    """Direct transfer: a map fitted on another data set's split, none of whose images trained
    the model (through every --init_from), is stored with the results, not in the run."""
    from jlml_tf.inference import linear_map

    run = tmp_path / "run"
    shutil.copytree(tiny_run.run, run)
    other = dataclasses.replace(tiny_run.data, name="cuhk01")
    monkeypatch.setattr(ev, "_load_data", lambda fv, config: (other, True, tmp_path))
    out = tmp_path / "transfer"
    argv = ["evaluate", f"--run_dir={run}", "--verbose=0", "--metric=xqda_map",
            "--save_linear_map", f"--output_dir={out}", "--num_queries_shown=0"]
    assert ev.main(argv[:-2] + argv[-1:]) == 2  # no --output_dir: it would replace the run's
    assert "pass --output_dir for its map" in capsys.readouterr().err
    assert ev.main(argv) == 0
    saved = linear_map.load(out / linear_map.FILE_NAME)
    assert saved.source["dataset"] == "cuhk01"
    assert not (run / linear_map.FILE_NAME).exists()
    # another split of the data set the model was trained on may hold its training people
    renamed = dataclasses.replace(tiny_run.data.trials[0], name="other")
    own_other = dataclasses.replace(tiny_run.data, trials=[renamed])
    monkeypatch.setattr(ev, "_load_data", lambda fv, config: (own_other, True, tmp_path))
    assert ev.main(argv) == 2
    assert "not for synthetic/" in capsys.readouterr().err
    monkeypatch.setattr(ev, "_load_data", lambda fv, config: (other, True, tmp_path))
    # a model that saw CUHK01 images (here through --extra_train) has no test people there
    config = json.loads((run / "config.json").read_text())
    config["train"]["extra_train"] = ["cuhk01:train_all:/releases/cuhk01"]
    (run / "config.json").write_text(json.dumps(config))
    assert ev.main(argv) == 2
    assert "on images of ['cuhk01', 'synthetic']" in capsys.readouterr().err


def test_fuse_lomo_bad_flags_are_named(tiny_run, capsys):
    run = f"--run_dir={tiny_run.run}"
    assert ev.main(["evaluate", run, "--fuse_lomo=none"]) == 2
    assert "--metric=xqda or xqda_map, not --metric=l2" in capsys.readouterr().err
    assert ev.main(["evaluate", run, "--metric=xqda", "--fusion_weight=0.5"]) == 2
    assert "add --fuse_lomo" in capsys.readouterr().err
    assert ev.main(["evaluate", run, "--metric=xqda", "--fuse_lomo=msr",
                    "--fusion_weight=0"]) == 2
    assert "--fusion_weight=0.0: must be a finite number > 0" in capsys.readouterr().err
    assert ev.main(["evaluate", run, "--metric=xqda", "--fuse_lomo=msr",
                    "--fusion_weight=nan"]) == 2
    assert "--fusion_weight=nan" in capsys.readouterr().err
    assert ev.main(["evaluate", run, "--metric=xqda", "--fuse_lomo=msr",
                    "--calibrate_threshold"]) == 2
    assert "--calibrate_threshold" in capsys.readouterr().err


def test_bad_input_names_the_path_or_flag(tiny_run, tmp_path, capsys):
    assert ev.main(["evaluate", f"--run_dir={tmp_path / 'not_a_run'}"]) == 2
    assert "not_a_run" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert ev.main(["evaluate", f"--run_dir={tmp_path / 'empty'}"]) == 2
    assert "empty: not a run directory" in capsys.readouterr().err
    assert ev.main(["evaluate", f"--run_dir={tiny_run.run}", "--metric=mahalanobis"]) == 2
    assert "--metric" in capsys.readouterr().err
    assert ev.main(["evaluate", f"--checkpoint={tiny_run.run}/checkpoints/ckpt-99"]) == 2
    assert "ckpt-99" in capsys.readouterr().err
    assert ev.main(["evaluate"]) == 2
    assert "--run_dir" in capsys.readouterr().err
    assert ev.main(["evaluate", f"--run_dir={tiny_run.run}", "--noevaluation"]) == 2
    assert "--calibrate_threshold" in capsys.readouterr().err
    assert ev.main(["evaluate", f"--run_dir={tiny_run.run}", "--camera_bn=train",
                    "--calibrate_threshold"]) == 2
    assert "--camera_bn=train: not with --calibrate_threshold" in capsys.readouterr().err


def check_threshold(tiny_run):
    """--calibrate_threshold --calibration_split=test stored RUN/threshold.json, calibrated on
    the test trial's identities (unseen in training), with the rate on unseen people."""
    saved = th.load(tiny_run.run / th.FILE_NAME)
    table, trial = tiny_run.data.table, tiny_run.data.trials[0]
    rows = np.unique(np.concatenate([trial.query, trial.gallery]))
    true, false, total = th.pair_distances(features_of(tiny_run, rows), table.pids[rows],
                                           table.camids[rows])
    expected = th.calibrate(true, false, 0.1)
    assert saved.threshold == pytest.approx(expected.threshold, rel=1e-5)
    assert saved.false_match_rate == pytest.approx(expected.false_match_rate)
    assert saved.false_match_rate <= 0.1
    assert saved.true_match_rate == pytest.approx(expected.true_match_rate)
    assert saved.num_false_pairs_total == total
    assert saved.source["trial"] == "default"
    assert saved.source["split"] == "test" and saved.held_out is True
    assert saved.source["identities"] == len(np.unique(table.pids[rows][table.pids[rows] > 0]))
    assert "cross-validation" in saved.unseen["how"]
    assert 0.0 <= saved.unseen["false_match_rate"] <= 1.0
    # Keyed like the gallery index, so `search --model=RUN` knows it is this model's threshold.
    from jlml_tf.inference import gallery_index

    assert saved.source["model_fingerprint"] == gallery_index.model_fingerprint(tiny_run.run)
    assert 0.0 <= saved.test["false_match_rate"] <= 1.0
    assert th.find(tiny_run.run) == tiny_run.run / th.FILE_NAME


def _copy_run(tiny_run, tmp_path, **data):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run / "checkpoints", run / "checkpoints")
    config = json.loads((tiny_run.run / "config.json").read_text())
    config["data"].update(data)
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_threshold_calibrates_on_identities_held_out_from_training(tiny_run, tmp_path, capsys):
    """Issue 13 item 12: the default calibration uses identities the run held out from
    training, says so in threshold.json, and reports the rate on unseen people."""
    table, trial = tiny_run.data.table, tiny_run.data.trials[0]
    train_ids = np.unique(table.pids[trial.train])
    held = [int(p) for p in train_ids[: len(train_ids) // 2]]
    run = _copy_run(tiny_run, tmp_path, validation_pids=held)
    rc = ev.main(["evaluate", f"--run_dir={run}", "--verbose=0", "--noevaluation",
                  "--calibrate_threshold", "--target_false_match_rate=0.1"])
    assert rc == 0
    out = capsys.readouterr().out
    saved = th.load(run / th.FILE_NAME)
    assert saved.source["split"] == "validation" and saved.held_out is True
    assert saved.source["identities"] == len(held)
    rows = trial.train[np.isin(table.pids[trial.train], held)]
    expected = th.calibrate_features(features_of(tiny_run, rows), table.pids[rows],
                                     table.camids[rows], 0.1)
    assert saved.threshold == pytest.approx(expected.threshold, rel=1e-5)
    assert saved.unseen["false_match_rate"] == saved.test["false_match_rate"]
    assert f"calibrated on {len(held)} identities held out from training" in out
    assert "On unseen people: false-match rate" in out
    assert "(the test trial's query x gallery pairs, people neither" in out
    # a run that held out nobody: a clear error naming the alternatives, no file written
    run2 = _copy_run(tiny_run, tmp_path / "b")
    assert ev.main(["evaluate", f"--run_dir={run2}", "--verbose=0", "--noevaluation",
                    "--calibrate_threshold"]) == 2
    err = capsys.readouterr().err
    assert "no identities were held out from training" in err
    assert "--calibration_split=test" in err and "--calibration_split=train" in err
    assert not (run2 / th.FILE_NAME).exists()
    # the old behaviour, asked for: recorded as not held out
    assert ev.main(["evaluate", f"--run_dir={run2}", "--verbose=0", "--noevaluation",
                    "--calibrate_threshold", "--calibration_split=train"]) == 0
    capsys.readouterr()
    saved = th.load(run2 / th.FILE_NAME)
    assert saved.source["split"] == "train" and saved.held_out is False


@pytest.mark.slow
def test_multi_trial_run(tiny_run, tmp_path, capsys):
    multi = tmp_path / "multi"
    for trial in ("trial_00", "trial_01"):
        shutil.copytree(tiny_run.run / "checkpoints", multi / trial / "checkpoints")
        shutil.copy(tiny_run.run / "config.json", multi / trial / "config.json")
    rc = ev.main(["evaluate", f"--run_dir={multi}", "--verbose=0", "--metric=cosine",
                  "--num_queries_shown=1"])
    assert rc == 0
    top = read_results(multi / "results_cosine.json")
    per = [read_results(multi / t / "results_cosine.json") for t in ("trial_00", "trial_01")]
    assert top["num_trials"] == 2 and len(top["trials"]) == 2
    assert top["mean"]["rank1"] == pytest.approx(np.mean([p["mean"]["rank1"] for p in per]))
    assert (multi / "trial_01" / "worst_best_cosine.png").is_file()


def test_trial_dirs(tmp_path):
    run = tmp_path / "run"
    for name in ("trial_01", "trial_00", "trial_02"):
        (run / name).mkdir(parents=True)
        if name != "trial_02":  # an unfinished trial without config.json is not evaluated
            (run / name / "config.json").write_text("{}")
    assert [p.name for p in ev.trial_dirs(run)] == ["trial_00", "trial_01"]
    (run / "config.json").write_text("{}")
    assert ev.trial_dirs(run) == [run]


def test_trial_all_evaluates_one_model_on_every_trial_of_another_data_set(tiny_run, tmp_path,
                                                                          monkeypatch):
    data = tiny_run.data
    second = dataclasses.replace(data.trials[0], name="other", query=data.trials[0].query[:5])
    two_trials = dataclasses.replace(data, name="cuhk01", trials=[data.trials[0], second])
    monkeypatch.setattr(ev, "_load_data", lambda fv, config: (two_trials, True, None))
    out = tmp_path / "transfer"
    rc = ev.main(["evaluate", f"--run_dir={tiny_run.run}", "--trial=all", "--verbose=0",
                  f"--output_dir={out}", "--num_queries_shown=0", "--suffix=transfer"])
    assert rc == 0
    per = [read_results(out / t / "results_transfer.json") for t in ("trial_00", "trial_01")]
    assert per[0]["mean"]["num_queries"] == len(data.trials[0].query)
    assert per[1]["mean"]["num_queries"] == 5
    top = read_results(out / "results_transfer.json")
    assert top["num_trials"] == 2
    assert top["mean"]["rank1"] == pytest.approx(np.mean([p["mean"]["rank1"] for p in per]))
