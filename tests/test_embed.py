"""python -m jlml_tf.embed and the uniform embedder: TFLite ranks a gallery like the SavedModel."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from jlml_tf.inference import embedders
from jlml_tf.data import pipeline
from jlml_tf.embed import embed_files
from jlml_tf.evaluation import evaluate
import run_fixtures as fixtures
from jlml_tf.export import parity, tflite


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
    ref, ref_order = _ranking(embedders.load_embedder(sm_path), data)
    res32, order32 = _ranking(embedders.load_embedder(f32), data)
    assert res32["rank1"] == ref["rank1"] and abs(res32["map"] - ref["map"]) < 1e-6
    assert np.array_equal(order32[:, 0], ref_order[:, 0])  # same top match for every query
    res8, order8 = _ranking(embedders.load_embedder(int8), data)
    # the parity goal (jlml_tf.export.parity): int8 rank-1 at most 1 point below float
    assert (res8["rank1"] - ref["rank1"]) * 100 >= -parity.RANK1_GOAL_POINTS
    assert np.mean(order8[:, 0] == ref_order[:, 0]) >= 0.6  # 6 queries on random weights


def test_load_embedder_errors(setup, tmp_path):
    root, _, sm_path, _, _ = setup
    assert embedders.load_embedder(sm_path.parent).path == sm_path  # base path: newest version
    with pytest.raises(FileNotFoundError, match="missing.tflite: no such file"):
        embedders.load_embedder(tmp_path / "missing.tflite")
    (tmp_path / "x.onnx").write_bytes(b"0")
    with pytest.raises(ValueError, match=".tflite"):
        embedders.load_embedder(tmp_path / "x.onnx")
    (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="bad.tflite"):
        embedders.load_embedder(tmp_path / "bad.tflite")
    with pytest.raises(ValueError, match="pixel batch"):
        embedders.load_embedder(sm_path).embed(np.zeros((1, 10, 10, 3), np.uint8))


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
    from jlml_tf.data import preprocessing

    files = preprocessing.list_images([tmp_path / "imgs"])
    assert len(files) == 6 and not any(f.endswith(".txt") for f in files)
    messages = []
    for model in (sm_path, int8):
        feats, done, skipped = embed_files(embedders.load_embedder(model), files, 2,
                                           progress=False, report=messages.append)
        assert feats.shape == (5, 32) and len(done) == 5
        assert [os.path.basename(s) for s in skipped] == ["broken.jpg"]
        np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert any("broken.jpg" in m for m in messages)


def _cli(*args):
    # as a user runs it: no TF_CPP_MIN_LOG_LEVEL of the test session
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "jlml_tf.embed", *args], capture_output=True,
                          text=True, env=env, timeout=300)


# What TensorFlow prints on its own (issue 13 item 8): none of it may reach a user.
TF_NOISE = ("I0000", "W0000", "E0000", "absl::InitializeLog", "oneDNN", "jpeg_mem",
            "local_rendezvous", "function_node", "[Op:", "Improper call to JPEG",
            "is deprecated", "fully_quantize", "XNNPACK")


def assert_no_tf_noise(text):
    assert not [n for n in TF_NOISE if n in text], text[-3000:]


@pytest.mark.slow
def test_embed_cli(setup, tmp_path):
    _, _, sm_path, int8, _ = setup
    _image_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "half.jpg").write_bytes(  # a JPEG cut short, as a camera upload can be
        (tmp_path / "imgs" / "sub" / "0.jpg").read_bytes()[:300])
    (tmp_path / "imgs" / "garbled.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    outs = {}
    for name, model in (("sm", sm_path.parent), ("int8", int8)):  # a base path, a .tflite
        res = _cli(f"--model={model}", f"--images={tmp_path / 'imgs'}",
                   f"--output={tmp_path / name}.npz", "--batch_size=2", "--noprogress")
        assert res.returncode == 0, res.stderr[-2000:]
        assert "5 embeddings" in res.stdout
        assert f"skipped {tmp_path / 'imgs' / 'broken.jpg'}: not an image" in res.stderr
        assert f"skipped {tmp_path / 'imgs' / 'half.jpg'}: corrupt or truncated JPEG" \
            in res.stderr
        assert_no_tf_noise(res.stderr + res.stdout)
        outs[name] = np.load(tmp_path / f"{name}.npz")
    assert outs["sm"]["embeddings"].shape == (5, 32)
    assert list(outs["sm"]["paths"]) == list(outs["int8"]["paths"])
    assert sorted(os.path.basename(p) for p in outs["sm"]["skipped"]) == [
        "broken.jpg", "garbled.jpg", "half.jpg"]
    cos = (outs["sm"]["embeddings"] * outs["int8"]["embeddings"]).sum(1)
    assert cos.min() > 0.95  # noise images lie outside the int8 calibration range
    # bad input: one line, no help text (issue 13 item 6/8), the flag named once
    res = _cli(f"--model={int8}", f"--images={tmp_path / 'nowhere'}")
    assert res.returncode == 2 and res.stderr.strip().startswith("error: --images")
    assert len(res.stderr.strip().splitlines()) == 1 and "nowhere" in res.stderr
    res = _cli(f"--model={tmp_path / 'none.tflite'}", f"--images={tmp_path / 'imgs'}")
    assert res.returncode == 2
    assert res.stderr.strip() == (f"error: --model={tmp_path / 'none.tflite'}: no such file or "
                                  "folder")


def test_odd_image_sizes():
    """Issue 13 item 9: what counts as an odd person crop; every real crop size of the data
    sets here (../shared/data/README.md) is a normal one."""
    from jlml_tf.data import preprocessing as pre

    for height, width in ((39, 16), (160, 60), (128, 48), (67, 29), (419, 141), (145, 47),
                          (384, 181), (64, 32)):
        assert pre.odd_image_reason(height, width) is None, (height, width)
    assert "1x1 px" in pre.odd_image_reason(1, 1)
    assert "smaller than the minimum" in pre.odd_image_reason(20, 10)
    assert "height/width 1.00" in pre.odd_image_reason(4000, 4000)  # a frame, not a crop
    assert "wider than a standing person" in pre.odd_image_reason(480, 640)
    assert "very narrow" in pre.odd_image_reason(700, 100)


def test_embed_files_warns_about_or_refuses_odd_images(setup, tmp_path):
    _, _, sm_path, _, _ = setup
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (80, 40, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(folder / "dot.png")
    Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(folder / "sq.png")
    files = [os.fspath(folder / n) for n in ("a.png", "dot.png", "sq.png")]
    embedder = embedders.load_embedder(sm_path)
    messages = []
    feats, done, skipped = embed_files(embedder, files, progress=False, report=messages.append,
                                       odd_images="warn")
    assert len(done) == 3 and not skipped
    assert [m.split(":")[0] for m in messages] == ["warning"] * 2
    assert "dot.png looks odd for a person crop: 1x1 px" in messages[0]
    messages.clear()
    feats, done, skipped = embed_files(embedder, files, progress=False, report=messages.append,
                                       odd_images="refuse")
    assert done == files[:1] and skipped == files[1:] and feats.shape == (1, 32)
    assert all("refused as an odd image" in m for m in messages)
    messages.clear()
    embed_files(embedder, files, progress=False, report=messages.append, odd_images="accept")
    assert not messages
