"""The client examples in export/ work against the local server (as against TF Serving)."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import run_fixtures as fixtures
from jlml_tf.serving.server import ModelServer

EXPORT = pathlib.Path(__file__).resolve().parents[1] / "export"


def _rest_client():
    spec = importlib.util.spec_from_file_location("rest_client", EXPORT / "rest_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _photo(rng, h, w):
    """Smooth shapes plus noise, so JPEG decoding and resizing both matter."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([127 + 100 * np.sin(x / (3 + c) + y / (5 + 2 * c)) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def test_rest_client_resizes_pixels_exactly_as_the_model(tmp_path):
    """Issue 13 item 3: --pixels resized with Pillow's antialiasing bilinear filter (cosine
    0.946-0.990 to the bytes path); the client must give the pixels the model's decoder gives."""
    from jlml_tf.data import preprocessing

    client = _rest_client()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(160, 60), (400, 141), (39, 16), (64, 32), (67, 29), (300, 300),
                                (1, 1), (1000, 7)]):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for out_h, out_w in ((64, 32), (96, 48), (160, 64)):
            want = preprocessing.load_image(tf.io.encode_png(rgb).numpy(), out_h, out_w)
            np.testing.assert_array_equal(client.resize_like_model(rgb, out_h, out_w), want)
        photo = _photo(rng, h, w)
        files = {"png": tf.io.encode_png(photo).numpy(),
                 "jpg": tf.io.encode_jpeg(photo, quality=85).numpy(),
                 "gray.png": tf.io.encode_png(photo[..., :1]).numpy(),
                 "rgba.png": tf.io.encode_png(np.concatenate(
                     [photo, np.full((h, w, 1), 200, np.uint8)], -1)).numpy()}
        for ext, data in files.items():
            path = tmp_path / f"{i}.{ext}"
            path.write_bytes(data)
            want = preprocessing.load_image(path, 96, 48)
            np.testing.assert_array_equal(client.load_pixels(path, 96, 48, "tensorflow"), want,
                                          err_msg=ext)
            pillow = client.load_pixels(path, 96, 48, "pillow")
            if ext == "jpg":  # Pillow's JPEG decoder: the accurate DCT, a few levels apart
                assert np.abs(pillow.astype(int) - want).max() <= 6, (h, w)
            else:
                np.testing.assert_array_equal(pillow, want, err_msg=ext)


@pytest.mark.slow
def test_rest_and_grpc_examples(tmp_path):
    base, _, _ = fixtures.export_tiny(tmp_path / "export")
    rng = np.random.default_rng(0)
    files = []
    for i, (h, w) in enumerate([(160, 60), (64, 32), (211, 83)]):  # resized by the model
        path = tmp_path / f"{i}.{'jpg' if i % 2 == 0 else 'png'}"
        photo = _photo(rng, h, w)
        path.write_bytes((tf.io.encode_jpeg(photo) if i % 2 == 0 else tf.io.encode_png(photo))
                         .numpy())
        files.append(os.fspath(path))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with ModelServer(base, rest_port=0, grpc_port=0, poll_seconds=0) as server:
        outs = {}
        for name, args in (
                ("rest", ["rest_client.py", f"--port={server.rest_port}",
                          f"--output={tmp_path / 'bytes.json'}"]),
                ("rest_pixels", ["rest_client.py", f"--port={server.rest_port}", "--pixels",
                                 f"--output={tmp_path / 'pixels.json'}"]),
                ("grpc", ["grpc_client.py", f"--port={server.grpc_port}"])):
            res = subprocess.run([sys.executable, os.fspath(EXPORT / args[0]), *args[1:], *files],
                                 capture_output=True, text=True, env=env, timeout=300)
            assert res.returncode == 0, res.stderr[-2000:]
            assert "embeddings of dimension 32" in res.stdout
            # the similarity rows: each image is identical to itself
            rows = [line.split()[1:] for line in res.stdout.splitlines()
                    if line.startswith(files[0])]
            assert rows and rows[0][0] == "1.000"
            outs[name] = rows
        assert outs["rest"] == outs["grpc"] == outs["rest_pixels"]
        # the client's pixels are the model's: the same embeddings to float precision
        by_bytes = np.array(json.loads((tmp_path / "bytes.json").read_text())["embeddings"])
        by_pixels = np.array(json.loads((tmp_path / "pixels.json").read_text())["embeddings"])
        np.testing.assert_allclose(by_pixels, by_bytes, atol=1e-6)
        # without TensorFlow on the client, Pillow decodes: JPEG pixels a few levels apart
        # (on this tiny random model the embeddings barely move; real crops move more)
        res = subprocess.run([sys.executable, os.fspath(EXPORT / "rest_client.py"),
                              f"--port={server.rest_port}", "--pixels", "--decoder=pillow",
                              f"--output={tmp_path / 'pillow.json'}", *files],
                             capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        by_pillow = np.array(json.loads((tmp_path / "pillow.json").read_text())["embeddings"])
        assert (by_pillow * by_bytes).sum(1).min() > 0.999
        res = subprocess.run([sys.executable, os.fspath(EXPORT / "rest_client.py"),
                              f"--port={server.rest_port}", "--model=other"],
                             capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode != 0 and "HTTP 404" in res.stderr


def test_export_readme_states_no_figure_the_model_decides():
    """Issue 13 item 10: export/README.md said [N, 1024] for an export that gave [N, 512].
    Shapes in it are symbolic ([N, D], H x W); the model card and metadata give the numbers."""
    import re

    text = (EXPORT / "README.md").read_text()
    assert "`[N, D]`" in text
    assert not re.findall(r"\[N, \d+\]|\[-1, \d+\]|\[N, \d+, \d+, 3\]", text)
