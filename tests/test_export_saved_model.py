"""The TF Serving SavedModel: signatures, preprocessing in the graph, layout, saved_model_cli."""
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from jlml_tf.data import preprocessing
import run_fixtures as fixtures
from jlml_tf.export import saved_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base, path, keras_model = fixtures.export_tiny(tmp_path_factory.mktemp("sm") / "export")
    return base, path, keras_model, tf.saved_model.load(os.fspath(path))


def _pixels(n, seed=0, h=64, w=32):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_layout_and_signatures(exported):
    base, path, _, loaded = exported
    assert path == base / "1" and (path / "saved_model.pb").is_file()
    assert not [p for p in base.iterdir() if p.name.startswith(".tmp")]  # staging removed
    assert set(loaded.signatures) == {"serving_default", "serving_bytes"}
    default = loaded.signatures["serving_default"]
    spec = default.structured_input_signature[1]["images"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 64, 32, 3]
    out = default.structured_outputs["embeddings"]
    assert out.dtype == tf.float32 and out.shape.as_list() == [None, 32]
    spec = loaded.signatures["serving_bytes"].structured_input_signature[1]["image_bytes"]
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]


@pytest.mark.parametrize("n", [1, 5])
def test_serving_default_matches_keras_and_is_normalised(exported, n):
    _, _, keras_model, loaded = exported
    x = _pixels(n, seed=n)
    got = loaded.signatures["serving_default"](images=tf.constant(x))["embeddings"].numpy()
    want = keras_model(x.astype(np.float32)).numpy()
    assert got.shape == (n, 32)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_bytes_signature_decodes_and_resizes_like_the_host(exported):
    _, _, _, loaded = exported
    big = _pixels(1, seed=3, h=128, w=70)[0]  # another size: resized in the graph
    encoded = [tf.io.encode_png(big).numpy(), tf.io.encode_jpeg(_pixels(1, 4)[0]).numpy()]
    got = loaded.signatures["serving_bytes"](image_bytes=tf.constant(encoded))["embeddings"].numpy()
    host = preprocessing.load_images(encoded, 64, 32)
    want = loaded.signatures["serving_default"](images=tf.constant(host))["embeddings"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_bytes_signature_rejects_a_non_image(exported):
    _, _, _, loaded = exported
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures["serving_bytes"](image_bytes=tf.constant([b"not an image"]))


def test_decoding_only_in_the_bytes_signature(exported):
    """serving_default must stay free of decode ops (a TPU host cannot run them)."""
    _, _, _, loaded = exported

    def op_types(fn):
        graph = fn.graph.as_graph_def()
        types = {n.op for n in graph.node}
        for f in graph.library.function:
            types |= {n.op for n in f.node_def}
        return types

    assert not {t for t in op_types(loaded.signatures["serving_default"]) if "Decode" in t}
    assert {t for t in op_types(loaded.signatures["serving_bytes"]) if "Decode" in t}


def test_versions_are_numbered_and_never_overwritten(exported, tmp_path):
    _, _, keras_model, _ = exported
    base = tmp_path / "m"
    assert saved_model.next_version(base) == 1
    (base / "7").mkdir(parents=True)
    (base / "notaversion").mkdir()
    assert saved_model.next_version(base) == 8
    with pytest.raises(FileExistsError, match="--overwrite"):
        saved_model.export_saved_model(keras_model, base, version=7)
    with pytest.raises(ValueError, match="positive"):
        saved_model.export_saved_model(keras_model, base, version=0)


def _cli():
    exe = pathlib.Path(sys.executable).with_name("saved_model_cli")
    return os.fspath(exe) if exe.is_file() else shutil.which("saved_model_cli")


@pytest.mark.slow
@pytest.mark.skipif(_cli() is None, reason="saved_model_cli not installed")
def test_saved_model_cli_show_and_run(exported, tmp_path):
    """Loads the export the way TF Serving's C++ loader does (tag 'serve', signature defs)."""
    _, path, keras_model, _ = exported
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    show = subprocess.run([_cli(), "show", "--dir", os.fspath(path), "--all"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert show.returncode == 0, show.stderr
    for text in ("signature_def['serving_default']", "signature_def['serving_bytes']",
                 "dtype: DT_UINT8", "shape: (-1, 64, 32, 3)", "dtype: DT_STRING",
                 "name: serving_default_images:0", "Method name is: tensorflow/serving/predict"):
        assert text in show.stdout, text
    # --input_exprs takes Python literals (ast.literal_eval): a nested list of pixel values
    x = (np.arange(2 * 64 * 32 * 3) % 251).reshape(2, 64, 32, 3).astype(np.uint8)
    run = subprocess.run([_cli(), "run", "--dir", os.fspath(path), "--tag_set", "serve",
                          "--signature_def", "serving_default", "--input_exprs",
                          f"images={x.tolist()}", "--outdir", os.fspath(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    got = np.load(tmp_path / "embeddings.npy")
    assert got.shape == (2, 32)
    np.testing.assert_allclose(got, keras_model(x.astype(np.float32)).numpy(), atol=1e-5)
