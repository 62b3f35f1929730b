"""Model card (analytic multiply-adds, run facts) and the export pipeline with its parity report."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from jlml_tf import model_summary
from jlml_tf.inference import threshold as threshold_lib
from jlml_tf.inference import run_dir as run_dir_lib
import run_fixtures as fixtures
from jlml_tf.export import model_card, parity, pipeline


def test_multiply_adds_count_a_nested_model_once_per_call(tiny_model_config):
    from jlml_tf.modeling import jlml

    l2 = jlml.with_l2_normalization(jlml.build_jlml(tiny_model_config)[1])
    one = model_summary.count_macs(l2)
    jlml.with_flip_test(l2)  # a graph elsewhere over the same model does not count here
    assert one > 0 and model_summary.count_macs(jlml.with_flip_test(l2)) == 2 * one


def test_multiply_adds_by_hand():
    x = keras.Input((8, 6, 3))
    y = keras.layers.Conv2D(4, 3, padding="same")(x)  # 8*6 positions * 3*3*3*4
    y = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(y)  # 4*3 * 3*3*4
    y = keras.layers.Conv2D(6, 1, groups=2)(y)  # 4*3 * 1*1*2*6
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.Dense(5)(y)  # 6*5
    model = keras.Model(x, y)
    assert model_summary.count_macs(model) == 48 * 108 + 12 * 36 + 12 * 12 + 30


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    data = fixtures.tiny_synthetic(root / "data")
    run = fixtures.make_synthetic_run(root / "run", data, data_dir=root / "data",
                                      results={"rank1": 0.25, "map": 0.2})
    threshold_lib.save(threshold_lib.Calibration(
        threshold=0.75, target_false_match_rate=0.01, false_match_rate=0.01, true_match_rate=0.5,
        num_true_pairs=4, num_false_pairs=100), run)
    cfg = run_dir_lib.model_config(run)
    eval_set = parity.eval_set_from_reid(data, cfg.input_height, cfg.input_width)
    calibration = data.table.subset(data.trials[0].train)
    messages = []
    result = pipeline.export_run(run, root / "out", "reid", None, ("float32", "int8"),
                                 calibration, 20, eval_set, latency_runs=(3, 2),
                                 progress=messages.append, progress_bars=True)
    return root, run, data, result, messages


@pytest.mark.slow  # shares a ~30-50 s export
def test_layout(exported):
    root, _, _, result, _ = exported
    assert result.saved_model_dir == root / "out" / "reid" / "1"
    assert (result.saved_model_dir / "saved_model.pb").is_file()
    assert (result.saved_model_dir / "assets.extra" / "model_card.json").is_file()
    assert result.extras_dir == root / "out" / "reid_v1"
    for name in ("model_card.md", "model_card.json", "parity.md", "parity.json",
                 "tflite/float32.tflite", "tflite/int8.tflite"):
        assert (result.extras_dir / name).is_file(), name
    # the run's "no match" threshold travels with the export, where search looks for it
    for model_path in (result.saved_model_dir, result.extras_dir / "tflite" / "int8.tflite"):
        assert threshold_lib.load(threshold_lib.find(model_path)).threshold == 0.75
    # only version folders under the model base path (what TF Serving polls)
    assert [p.name for p in (root / "out" / "reid").iterdir()] == ["1"]


@pytest.mark.slow  # shares a ~30-50 s export
def test_model_card(exported):
    _, run, _, result, _ = exported
    card = json.loads((result.extras_dir / "model_card.json").read_text())
    embedding_model = run_dir_lib.load_run(run).embedding_model
    assert card["parameters"] == embedding_model.count_params()
    assert card["multiply_adds"] == model_summary.count_macs(embedding_model) > 0
    assert card["input"]["colour_order"] == "RGB"
    assert card["input"]["saved_model"]["serving_default"]["dtype"] == "uint8"
    assert card["input"]["tflite"]["dtype"] == "uint8"
    assert card["output"]["shape"] == [-1, 32]
    assert card["accuracy"]["methods"] == {"JLML": {"num_trials": 1,
                                                    "mean": {"rank1": 0.25, "map": 0.2}}}
    assert card["training"]["data"]["dataset"] == "synthetic"
    assert set(card["formats"]["tflite"]) == {"float32", "int8"}
    md = (result.extras_dir / "model_card.md").read_text()
    assert "RGB" in md and f"{card['parameters']:,}" in md
    assert "- JLML on fixture / default / default: R1 25.0%, mAP 20.0%" in md


@pytest.mark.slow  # shares a ~30-50 s export
def test_parity_report(exported):
    _, _, data, result, _ = exported
    report = json.loads((result.extras_dir / "parity.json").read_text())
    trial = data.trials[0]
    assert report["num_images"] == len(trial.query) + len(trial.gallery)
    rows = report["formats"]
    assert set(rows) == {"keras", "saved_model", "saved_model_bytes", "tflite_float32",
                         "tflite_int8"}
    for name in ("saved_model", "saved_model_bytes", "tflite_float32"):
        assert rows[name]["max_abs_diff"] < 1e-5 and rows[name]["mean_cosine"] > 0.99999
        assert rows[name]["rank1_change"] == 0 and abs(rows[name]["map_change"]) < 1e-6
    assert rows["tflite_int8"]["mean_cosine"] > 0.99
    for name, row in rows.items():
        assert 0 <= row["rank1"] <= 100 and 0 <= row["map"] <= 100
        for batch in ("batch1", "batch32"):
            lat = row["latency"][batch]
            assert 0 < lat["median_ms"] <= lat["p95_ms"]
        if name != "keras":
            assert row["size_bytes"] > 0
    assert rows["tflite_int8"]["size_bytes"] < rows["tflite_float32"]["size_bytes"]
    assert isinstance(report["int8_meets_goal"], bool)
    md = (result.extras_dir / "parity.md").read_text()
    assert "| tflite_int8 |" in md and "batch 32" in md


@pytest.mark.slow  # shares a ~30-50 s export
def test_refuses_existing_version(exported):
    root, run, _, _, _ = exported
    with pytest.raises(FileExistsError, match="--overwrite"):
        pipeline.export_run(run, root / "out", "reid", 1, (), progress=lambda m: None)
    with pytest.raises(ValueError, match="calibration"):
        pipeline.export_run(run, root / "out", "reid", 2, ("int8",), progress=lambda m: None)


@pytest.mark.slow  # shares a ~30-50 s export
def test_export_reports_numbered_steps_with_their_time(exported):
    """Issue 13 item 11: four minutes without a sign of progress inside conversion and parity."""
    _, _, _, _, messages = exported
    steps = [m for m in messages if m.startswith("[")]
    total = int(steps[0].split("/")[1].split("]")[0])
    assert total == 7  # load, calibration images, SavedModel, 2 conversions, parity, card
    starts = [m for m in steps if "done in" not in m]
    assert [m.split("]")[0] for m in starts] == [f"[{i}/{total}" for i in range(1, total + 1)]
    assert any(m.startswith("[5/7] converting TFLite int8: done in ") for m in steps)
    assert sum("done in" in m for m in steps) == total
    assert "parity [5/5]: tflite_int8" in messages


def test_parity_progress_bars_cover_every_image_and_timed_call():
    calls = []

    class Bar:
        def __init__(self, total, desc, unit):
            self.total, self.desc, self.n = total, desc, 0
            calls.append(self)

        def update(self, n=1):
            self.n += n

        def close(self):
            pass

    images = np.random.default_rng(0).integers(0, 256, (70, 8, 4, 3), dtype=np.uint8)
    s = parity.EvalSet(images=images, description="70 images")
    embed = lambda x: x.reshape(len(x), -1)[:, :6].astype(np.float32)  # noqa: E731
    ref = parity.Candidate("ref", "reference", lambda e: embed(e.images), embed)
    other = parity.Candidate("other", "the same", lambda e: embed(e.images), embed)
    report = parity.run(ref, [other], s, latency_runs=(3, 2), progress=lambda m: None, bar=Bar)
    assert report["formats"]["other"]["max_abs_diff"] == 0
    assert [(b.desc, b.total, b.n) for b in calls] == [
        ("ref: embedding", 70, 70), ("ref: timing", 9, 9),
        ("other: embedding", 70, 70), ("other: timing", 9, 9)]


def test_parity_report_wording():
    """Issue 13 item 8: "one query is 1 points"."""
    report = {"eval_set": "x", "reference": "keras", "num_threads": 2, "rank1_goal_points": 1.0,
              "formats": {}, "int8_rank1_gap_to_float32": -1.0, "int8_meets_goal": True,
              "num_queries": 100}
    md = parity.report_markdown(report)
    assert "(at most 1 point lower). With 100 queries one query is 1 point." in md
    assert "1 points" not in md
    report["num_queries"] = 6
    assert "With 6 queries one query is 16.7 points." in parity.report_markdown(report)
    assert parity.points(0.5) == "0.5 points" and parity.points(2) == "2 points"


def _card(run):
    from jlml_tf.export import model_card

    loaded = run_dir_lib.load_run(run)
    cfg, embedding_model = loaded.model_cfg, loaded.embedding_model
    card = model_card.build_card(cfg, embedding_model, run, "ckpt", "jlml", 1, "out/jlml/1")
    return card, model_card.card_markdown(card)


def test_model_card_reads_the_accuracy_training_writes(tmp_path):
    """Issue 13 item 1: results.json nests the rates under the method name; the card read only
    top-level values and said "no results.json" beside an existing file."""
    from jlml_tf.evaluation import protocol, report

    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(1, 9), 2)
    trials = []
    for t in range(2):
        feats = rng.normal(size=(16, 8)).astype(np.float32)
        trials.append(protocol.evaluate(feats[::2], pids[::2], np.ones(8), feats[1::2],
                                        pids[1::2], np.full(8, 2)))
    run = fixtures.make_run(tmp_path / "run")
    card, md = _card(run)
    assert card["accuracy"] is None
    assert "results.json does not exist" in md
    # one trial, written by the writer training uses (eval_trial.write_trial_report)
    report.write_report(run, {"JLML": trials[:1]}, title="synthetic / default / default")
    card, md = _card(run)
    mean = card["accuracy"]["methods"]["JLML"]["mean"]
    assert mean["rank1"] == pytest.approx(trials[0]["rank1"])
    assert mean["map"] == pytest.approx(trials[0]["map"])
    assert "no accuracy" not in md and "no results.json" not in md
    assert (f"- JLML on synthetic / default / default: R1 {100 * trials[0]['rank1']:.1f}%"
            in md)
    # several trials: mean ± std
    report.write_report(run, {"JLML (this run)": trials}, title="grid / 125_125")
    card, md = _card(run)
    entry = card["accuracy"]["methods"]["JLML (this run)"]
    assert entry["num_trials"] == 2
    assert entry["mean"]["rank1"] == pytest.approx(np.mean([t["rank1"] for t in trials]))
    assert entry["std"]["rank1"] == pytest.approx(np.std([t["rank1"] for t in trials]))
    assert "(mean ± std over 2 trials)" in md and " ± " in md


def test_parity_on_a_folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(tf.io.encode_png(
            rng.integers(0, 256, (70, 30, 3), dtype=np.uint8)).numpy())
    s = parity.eval_set_from_files([tmp_path], 64, 32)
    assert s.images.shape == (3, 64, 32, 3) and not s.has_identities
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        parity.eval_set_from_files([tmp_path / "empty"], 64, 32)


def _run_cli(*args, timeout=600):
    # as a user runs it: no TF_CPP_MIN_LOG_LEVEL of the test session
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "jlml_tf.export", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


@pytest.mark.slow  # two runs of the command in a subprocess
def test_cli_errors_name_the_flag(tmp_path):
    res = _run_cli(f"--run_dir={tmp_path / 'nope'}", f"--export_dir={tmp_path / 'out'}")
    assert res.returncode != 0 and "--run_dir" in res.stderr
    res = _run_cli(f"--export_dir={tmp_path / 'out'}")
    assert res.returncode == 2 and res.stderr.strip() == "error: --run_dir is required"


@pytest.mark.slow
def test_cli_end_to_end_on_a_folder(tmp_path):
    """The CLI with parity on a folder and calibration files (no data set in the run)."""
    run = fixtures.make_run(tmp_path / "run")
    rng = np.random.default_rng(1)
    (tmp_path / "imgs").mkdir()
    for i in range(6):
        (tmp_path / "imgs" / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(
            rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)).numpy())
    res = _run_cli(f"--run_dir={run}", f"--export_dir={tmp_path / 'out'}", "--version=3",
                   "--tflite=float16,int8", f"--parity_images={tmp_path / 'imgs'}",
                   f"--calibration_images={tmp_path / 'imgs'}", "--latency_runs=2,1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "out" / "jlml" / "3" / "saved_model.pb").is_file()
    report = json.loads((tmp_path / "out" / "jlml_v3" / "parity.json").read_text())
    assert set(report["formats"]) == {"keras", "saved_model", "saved_model_bytes",
                                      "tflite_float16", "tflite_int8"}
    assert report["formats"]["tflite_int8"]["rank1"] is None  # no identities in a folder
    assert "Parity report" in res.stdout
    assert "`embeddings`: float32 [N, 32], L2-normalised" in res.stdout
    assert "[4/7] converting TFLite float16: done in" in res.stdout
    from test_embed import assert_no_tf_noise

    assert_no_tf_noise(res.stdout + res.stderr)  # issue 13 item 8


@pytest.mark.slow  # one more export (SavedModel, float32 and int8 TFLite)
def test_flip_test_export_embeds_an_image_and_its_mirror_alike(tmp_path):
    from jlml_tf.inference import embedders

    run = fixtures.make_run(tmp_path / "run")
    rng = np.random.default_rng(3)
    calibration = []
    for i in range(8):
        calibration.append(tmp_path / f"calibration_{i}.png")
        calibration[-1].write_bytes(tf.io.encode_png(
            rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)).numpy())
    result = pipeline.export_run(run, tmp_path / "out", tflite_variants=("float32", "int8"),
                                 calibration=calibration, flip_test=True,
                                 progress=lambda m: None)
    x = rng.integers(0, 256, (2, 64, 32, 3), dtype=np.uint8)
    mirrored = x[:, :, ::-1].copy()
    # int8: the mirror is taken in float (an int8 REVERSE_V2 cost 14 R1 on CUHK01), so the
    # image and its mirror differ only by the two branches' own quantisation
    int8 = embedders.TFLiteEmbedder(result.tflite_files["int8"])
    assert np.sum(int8.embed(x) * int8.embed(mirrored), axis=1).min() > 0.99
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(result.tflite_files["int8"]))
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    mirrors = [op for op in interpreter._get_ops_details() if op["op_name"] == "REVERSE_V2"]
    assert mirrors and all(dtypes[op["inputs"][0]] == "float32" for op in mirrors)
    plain = run_dir_lib.load_run(run).embedding_model
    for embedder in (embedders.SavedModelEmbedder(result.saved_model_dir),
                     embedders.TFLiteEmbedder(result.tflite_files["float32"])):
        got = embedder.embed(x)
        np.testing.assert_allclose(got, embedder.embed(mirrored), atol=1e-5)
        both = plain(x.astype(np.float32)).numpy() + plain(mirrored.astype(np.float32)).numpy()
        np.testing.assert_allclose(got, both / np.linalg.norm(both, axis=1, keepdims=True),
                                   atol=1e-5)
    output = result.card["output"]
    assert output["test_time_flip"] is True and "mirror" in output["meaning"]
    assert result.card["multiply_adds"] == 2 * model_summary.count_macs(plain)


@pytest.mark.slow  # one more export (SavedModel + float32 TFLite)
def test_linear_map_export_outputs_the_mapped_embedding_on_the_sphere(tmp_path):
    from jlml_tf.evaluation import metric_learning
    from jlml_tf.inference import embedders, gallery_index
    from jlml_tf.inference import linear_map as linear_map_lib

    run = fixtures.make_run(tmp_path / "run")
    threshold_lib.save(threshold_lib.Calibration(
        threshold=0.75, target_false_match_rate=0.01, false_match_rate=0.01, true_match_rate=0.5,
        num_true_pairs=4, num_false_pairs=100), run)
    checkpoint = run_dir_lib.resolve_checkpoint(run)[1]
    matrix = np.random.default_rng(4).normal(size=(32, 6)).astype(np.float32)
    accuracy = {"title": "fixture / p / 0",
                "results": {"JLML xqda_map": {"num_trials": 1, "mean": {"rank1": 0.53}}}}
    source = {"metric": "xqda_map", "flip_test": False, "dataset": "fixture", "trial": "0",
              "model_fingerprint": gallery_index.model_fingerprint(checkpoint),
              "accuracy": accuracy}
    path = linear_map_lib.save(linear_map_lib.LinearMap(matrix, 3.0, source),
                               run / "linear_map.npz")
    messages = []
    result = pipeline.export_run(run, tmp_path / "out", tflite_variants=("float32",),
                                 linear_map=path, progress=messages.append)
    x = np.random.default_rng(5).integers(0, 256, (3, 64, 32, 3), dtype=np.uint8)
    mapped = run_dir_lib.load_run(run).embedding_model(x.astype(np.float32)).numpy() @ matrix
    want = metric_learning.onto_sphere(mapped, 3.0)
    for embedder in (embedders.SavedModelEmbedder(result.saved_model_dir),
                     embedders.TFLiteEmbedder(result.tflite_files["float32"])):
        np.testing.assert_allclose(embedder.embed(x), want, atol=1e-5)
    assert result.card["output"]["shape"] == [-1, 7]
    assert result.card["linear_map"]["metric"] == "xqda_map"
    assert result.card["linear_map"]["sphere_radius"] == 3.0
    # the card's accuracy is the mapped model's, not the run's own L2 figures
    assert result.card["accuracy"]["methods"] == {
        "JLML xqda_map": {"num_trials": 1, "mean": {"rank1": 0.53}}}
    assert not (result.extras_dir / threshold_lib.FILE_NAME).exists()
    assert any("left out of this export" in m for m in messages)
    # a threshold calibrated on the mapped embedding travels with the map instead
    mapped_threshold = threshold_lib.Calibration(
        threshold=0.04, target_false_match_rate=0.01, false_match_rate=0.01,
        true_match_rate=0.6, num_true_pairs=4, num_false_pairs=100)
    with_threshold = {**source, linear_map_lib.THRESHOLD_KEY: mapped_threshold.to_dict()}
    linear_map_lib.save(linear_map_lib.LinearMap(matrix, 3.0, with_threshold), path)
    result = pipeline.export_run(run, tmp_path / "out", version=2, tflite_variants=(),
                                 linear_map=path)
    assert threshold_lib.load(result.extras_dir).threshold == 0.04
    assert linear_map_lib.THRESHOLD_KEY not in result.card["linear_map"]  # the file carries it
    cfg = run_dir_lib.model_config(run)
    with pytest.raises(ValueError, match="without test-time flip: pass --noflip_test"):
        pipeline.load_linear_map(path, cfg, True, checkpoint)
    linear_map_lib.save(linear_map_lib.LinearMap(matrix[:16], 3.0, source),
                        tmp_path / "small.npz")
    with pytest.raises(ValueError, match="maps 16-d vectors, the model has 32-d embeddings$"):
        pipeline.load_linear_map(tmp_path / "small.npz", cfg, False, checkpoint)
    other = {**source, "model_fingerprint": "another model"}
    linear_map_lib.save(linear_map_lib.LinearMap(matrix, 3.0, other), tmp_path / "other.npz")
    with pytest.raises(ValueError, match="another model's embeddings"):
        pipeline.load_linear_map(tmp_path / "other.npz", cfg, False, checkpoint)
    with pytest.raises(ValueError, match="no such file"):
        pipeline.load_linear_map(tmp_path / "missing.npz", cfg, False, checkpoint)
    np.savez(tmp_path / "old.npz", matrix=matrix, source=np.array("{}"))  # normalised, no R
    with pytest.raises(ValueError, match="old.npz: a map without a sphere radius"):
        pipeline.load_linear_map(tmp_path / "old.npz", cfg, False, checkpoint)
    # a map fitted per camera (evaluate --camera_bn=train) goes with per-camera exports only
    per_camera = {**source, "camera_bn": "train"}
    linear_map_lib.save(linear_map_lib.LinearMap(matrix, 3.0, per_camera),
                        tmp_path / "per_camera.npz")
    with pytest.raises(ValueError, match="per_camera.npz: .*export one model per camera with "
                                         "--camera_bn_images"):
        pipeline.load_linear_map(tmp_path / "per_camera.npz", cfg, False, checkpoint)
    assert pipeline.load_linear_map(tmp_path / "per_camera.npz", cfg, False, checkpoint,
                                    camera_calibrated=True).camera_bn == "train"
    with pytest.raises(ValueError, match="trained batch-norm statistics: fit it with "
                                         "`evaluate --camera_bn=train"):
        pipeline.load_linear_map(path, cfg, False, checkpoint, camera_calibrated=True)
    (tmp_path / "bad.npz").write_text("not numpy")
    with pytest.raises(ValueError, match="not a linear map file"):
        pipeline.load_linear_map(tmp_path / "bad.npz", cfg, False, checkpoint)


@pytest.mark.slow  # one more export (SavedModel, float32 and int8 TFLite)
def test_fused_map_export_computes_lomo_in_the_graph(tmp_path):
    """A map of [w * embedding, LOMO] (`evaluate --fuse_lomo=none --save_linear_map`): the
    SavedModel and TFLite model compute LOMO from their input pixels and rank as the NumPy
    features mapped and put on the sphere; full int8 keeps LOMO and the map in float."""
    from test_lomo_graph import block_images

    from jlml_tf.evaluation import fusion, metric_learning
    from jlml_tf.features import lomo
    from jlml_tf.inference import embedders, gallery_index
    from jlml_tf.inference import linear_map as linear_map_lib

    run = fixtures.make_run(tmp_path / "run")
    checkpoint = run_dir_lib.resolve_checkpoint(run)[1]
    cfg = lomo.LomoConfig(height=64, width=32, retinex="none")
    matrix = np.random.default_rng(6).normal(
        size=(32 + lomo.feature_dim(cfg), 6)).astype(np.float32)
    source = {"metric": "xqda_map", "flip_test": False, "dataset": "fixture", "trial": "0",
              "model_fingerprint": gallery_index.model_fingerprint(checkpoint),
              linear_map_lib.FUSION_KEY: {"weight": 0.5, "lomo": cfg.to_dict()}}
    path = linear_map_lib.save(linear_map_lib.LinearMap(matrix, 40.0, source),
                               run / "linear_map.npz")
    calibration = []
    for i, image in enumerate(block_images(np.random.default_rng(8), 8, 64, 32)):
        calibration.append(tmp_path / f"calibration_{i}.png")
        calibration[-1].write_bytes(tf.io.encode_png(image).numpy())
    result = pipeline.export_run(run, tmp_path / "out", tflite_variants=("float32", "int8"),
                                 calibration=calibration, linear_map=path,
                                 progress=lambda m: None)
    x = block_images(np.random.default_rng(7), 3, 64, 32)
    embedding = run_dir_lib.load_run(run).embedding_model(x.astype(np.float32)).numpy()
    fused = fusion.concatenate(embedding, lomo.lomo(x, cfg), 0.5)
    want = metric_learning.onto_sphere(fused @ matrix, 40.0)
    for embedder in (embedders.SavedModelEmbedder(result.saved_model_dir),
                     embedders.TFLiteEmbedder(result.tflite_files["float32"])):
        np.testing.assert_allclose(embedder.embed(x), want, atol=1e-5)
    assert "LOMO features" in result.card["output"]["meaning"]
    # full int8 quantises the network and keeps every LOMO op in float
    from ai_edge_litert.interpreter import Interpreter
    from jlml_tf.export import tflite
    from jlml_tf.features import lomo_graph
    from jlml_tf.modeling import jlml

    int8 = result.tflite_files["int8"]
    interpreter = Interpreter(model_path=str(int8))
    dtypes = {d["name"]: np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}
    in_lomo = tflite.scope_tensor_names(int8.read_bytes(), lomo_graph.LAYER_NAME)
    assert len(in_lomo) > 100 and {dtypes[name] for name in in_lomo} <= {"float32", "int32",
                                                                        "bool", "int64"}
    mapped = tflite.scope_tensor_names(int8.read_bytes(), jlml.LINEAR_MAP_LAYER)
    assert mapped and {dtypes[name] for name in mapped} == {"float32"}
    assert tflite.describe(int8)["compute_op_activation_dtypes"].get("int8", 0) > 0
    assert result.card["formats"]["tflite"]["int8"]["description"].endswith(
        f"the layers {lomo_graph.LAYER_NAME}, {jlml.LINEAR_MAP_LAYER} kept in float")
    assert result.card["linear_map"]["fusion"]["weight"] == 0.5
    # the embedding alone does not fit a map of the fused features
    plain = {k: v for k, v in source.items() if k != linear_map_lib.FUSION_KEY}
    linear_map_lib.save(linear_map_lib.LinearMap(matrix, 40.0, plain), tmp_path / "plain.npz")
    with pytest.raises(ValueError, match=f"maps {len(matrix)}-d vectors, the model has 32-d "
                                         "embeddings$"):
        pipeline.load_linear_map(tmp_path / "plain.npz", run_dir_lib.model_config(run), False,
                                 checkpoint)
    linear_map_lib.save(linear_map_lib.LinearMap(matrix[:40], 40.0, source),
                        tmp_path / "short.npz")
    with pytest.raises(ValueError, match=f"maps 40-d vectors, the model has 32-d embeddings "
                                         f"and {lomo.feature_dim(cfg)}-d LOMO features"):
        pipeline.load_linear_map(tmp_path / "short.npz", run_dir_lib.model_config(run), False,
                                 checkpoint)


def test_parity_checks_a_split_model_on_its_own_split():
    import types

    trials = [types.SimpleNamespace(name=n) for n in ("0", "1", "2")]
    data = types.SimpleNamespace(name="cuhk01", protocol="485_486", trials=trials)
    assert parity.pick_trial(data).name == "0"
    assert parity.pick_trial(data, "2").name == "2"
    with pytest.raises(ValueError, match=r"no trial '7' \(trials: \['0', '1', '2'\]\)"):
        parity.pick_trial(data, "7")
    with pytest.raises(ValueError, match="has no trials"):
        parity.pick_trial(types.SimpleNamespace(name="x", protocol="p", trials=[]))
    run_config = {"data": {"dataset": "cuhk01", "protocol": "485_486", "trial": "2"}}
    assert parity.own_trial_name(data, run_config) == "2"
    other = types.SimpleNamespace(name="cuhk01", protocol="871_100", trials=trials)
    assert parity.own_trial_name(other, run_config) is None  # another protocol's splits


@pytest.mark.slow  # one more export (SavedModel only)
def test_camera_bn_export_serves_the_statistics_of_that_cameras_images(tmp_path):
    from jlml_tf.data import preprocessing
    from jlml_tf.inference import camera_bn, embedders
    from jlml_tf.inference import run_dir as run_dir_lib

    run = fixtures.make_run(tmp_path / "run")
    rng = np.random.default_rng(5)
    files = []
    for i in range(8):  # a dark, blue-cast camera
        files.append(tmp_path / "camera" / f"{i}.png")
        files[-1].parent.mkdir(exist_ok=True)
        pixels = rng.integers(0, 80, (64, 32, 3), dtype=np.uint8)
        pixels[..., 2] += 120
        files[-1].write_bytes(tf.io.encode_png(pixels).numpy())
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="--camera_bn_images: .*broken.png"):
        pipeline.export_run(run, tmp_path / "out", tflite_variants=(),
                            camera_images=[str(f) for f in files] + [str(broken)],
                            progress=lambda m: None)
    threshold_lib.save(threshold_lib.Calibration(
        threshold=0.75, target_false_match_rate=0.01, false_match_rate=0.01, true_match_rate=0.5,
        num_true_pairs=4, num_false_pairs=100), run)
    with pytest.raises(ValueError, match="--camera_bn_images: 7 images; at least 8"):
        pipeline.export_run(run, tmp_path / "out", tflite_variants=(),
                            camera_images=[str(f) for f in files[:7]], progress=lambda m: None)
    result = pipeline.export_run(run, tmp_path / "out", tflite_variants=(),
                                 camera_images=[str(f) for f in files], progress=lambda m: None)
    served = embedders.load_embedder(result.saved_model_dir)
    x = rng.integers(0, 256, (3, 64, 32, 3), dtype=np.uint8)
    model = run_dir_lib.load_run(run).embedding_model
    plain = model(x.astype(np.float32), training=False).numpy()
    with camera_bn.calibrated_to(model, [preprocessing.load_images(files, 64, 32).astype(
            np.float32)]):
        by_hand = model(x.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(served.embed(x), by_hand, atol=1e-5)
    assert not np.allclose(served.embed(x), plain, atol=1e-3)
    card = json.loads((result.extras_dir / "model_card.json").read_text())
    assert card["camera_bn"]["calibration_images"] == 8
    assert "calibrated on 8 images of one camera: serve this model for that camera only" in \
        (result.extras_dir / model_card.CARD_MD).read_text()
    # the run's threshold was set with the trained statistics: not shipped with this camera's
    assert not (result.extras_dir / threshold_lib.FILE_NAME).exists()
    # a run trained on one-camera groups is exported per camera: a plain export warns
    import dataclasses

    grouped = fixtures.make_run(tmp_path / "grouped", dataclasses.replace(
        fixtures.tiny_config(), batch_norm_group_size=8))
    said = []
    pipeline.export_run(grouped, tmp_path / "out_grouped", tflite_variants=(), progress=said.append)
    assert any("per-camera batch norm" in m and "--camera_bn_images" in m for m in said)
