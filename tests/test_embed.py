"""python -m jlml_tf.embed and the uniform embedder: TFLite ranks a gallery like the SavedModel."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from jlml_tf import inference
from jlml_tf.data import pipeline
from jlml_tf.embed import embed_files
from jlml_tf.evaluation import evaluate
from jlml_tf.export import fixtures, parity, tflite


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    data = fixtures.tiny_synthetic(root / "data")
    run = fixtures.make_synthetic_run(root / "run", data, data_dir=root / "data")
    _, sm_path, _ = fixtures.export_tiny(root / "export", run_dir=run)
    calib = tflite.calibration_images(data.table.subset(data.trials[0].train), 64, 32)
    int8 = tflite.write(tflite.convert(sm_path, "int8", calib), root / "int8.tflite")
    f32 = tflite.write(tflite.convert(sm_path, "float32"), root / "float32.tflite")
    return root, data, sm_path, int8, f32


def _ranking(embedder, data):
    trial = data.trials[0]
    q, g = data.table.subset(trial.query), data.table.subset(trial.gallery)
    fq = embedder.embed(pipeline.decode_all(q, 64, 32))
    fg = embedder.embed(pipeline.decode_all(g, 64, 32))
    res = evaluate(fq, q.pids, q.camids, fg, g.pids, g.camids, metric="l2")
    order = np.argsort(((fq[:, None] - fg[None]) ** 2).sum(-1), axis=1, kind="stable")
    return res, order


def test_tflite_ranks_the_gallery_like_the_saved_model(setup):
    _, data, sm_path, int8, f32 = setup
    ref, ref_order = _ranking(inference.load_embedder(sm_path), data)
    res32, order32 = _ranking(inference.load_embedder(f32), data)
    assert res32["rank1"] == ref["rank1"] and abs(res32["map"] - ref["map"]) < 1e-6
    assert np.array_equal(order32[:, 0], ref_order[:, 0])  # same top match for every query
    res8, order8 = _ranking(inference.load_embedder(int8), data)
    # the parity goal (jlml_tf.export.parity): int8 rank-1 at most 1 point below float
    assert (res8["rank1"] - ref["rank1"]) * 100 >= -parity.RANK1_GOAL_POINTS
    assert np.mean(order8[:, 0] == ref_order[:, 0]) >= 0.6  # 6 queries on random weights


def test_load_embedder_errors(setup, tmp_path):
    root, _, sm_path, _, _ = setup
    assert inference.load_embedder(sm_path.parent).path == sm_path  # base path: newest version
    with pytest.raises(FileNotFoundError, match="--model"):
        inference.load_embedder(tmp_path / "missing.tflite")
    (tmp_path / "x.onnx").write_bytes(b"0")
    with pytest.raises(ValueError, match=".tflite"):
        inference.load_embedder(tmp_path / "x.onnx")
    (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="bad.tflite"):
        inference.load_embedder(tmp_path / "bad.tflite")
    with pytest.raises(ValueError, match="pixel batch"):
        inference.load_embedder(sm_path).embed(np.zeros((1, 10, 10, 3), np.uint8))


def _image_folder(folder, n=5):
    folder.mkdir()
    (folder / "sub").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 256, (80, 40, 3), dtype=np.uint8)
        enc = tf.io.encode_png(img) if i % 2 else tf.io.encode_jpeg(img)
        (folder / ("sub" if i == 0 else "") / f"{i}.{'png' if i % 2 else 'jpg'}").write_bytes(
            enc.numpy())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (folder / "notes.txt").write_text("not an image, not listed")


def test_embed_files_skips_unreadable(setup, tmp_path):
    _, _, sm_path, int8, _ = setup
    _image_folder(tmp_path / "imgs")
    from jlml_tf.export import preprocessing

    files = preprocessing.list_images([tmp_path / "imgs"])
    assert len(files) == 6 and not any(f.endswith(".txt") for f in files)
    messages = []
    for model in (sm_path, int8):
        feats, done, skipped = embed_files(inference.load_embedder(model), files, 2,
                                           progress=False, report=messages.append)
        assert feats.shape == (5, 32) and len(done) == 5
        assert [os.path.basename(s) for s in skipped] == ["broken.jpg"]
        np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert any("broken.jpg" in m for m in messages)


def _cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "jlml_tf.embed", *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.mark.slow
def test_embed_cli(setup, tmp_path):
    _, _, sm_path, int8, _ = setup
    _image_folder(tmp_path / "imgs")
    outs = {}
    for name, model in (("sm", sm_path), ("int8", int8)):
        res = _cli(f"--model={model}", f"--images={tmp_path / 'imgs'}",
                   f"--output={tmp_path / name}.npz", "--batch_size=2")
        assert res.returncode == 0, res.stderr[-2000:]
        assert "broken.jpg" in res.stderr and "5 embeddings" in res.stdout
        outs[name] = np.load(tmp_path / f"{name}.npz")
    assert outs["sm"]["embeddings"].shape == (5, 32)
    assert list(outs["sm"]["paths"]) == list(outs["int8"]["paths"])
    assert [os.path.basename(p) for p in outs["sm"]["skipped"]] == ["broken.jpg"]
    cos = (outs["sm"]["embeddings"] * outs["int8"]["embeddings"]).sum(1)
    assert cos.min() > 0.95  # noise images lie outside the int8 calibration range
    res = _cli(f"--model={int8}", f"--images={tmp_path / 'nowhere'}")
    assert res.returncode != 0 and "nowhere" in res.stderr
