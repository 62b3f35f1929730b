"""TFLite variants: conversion, LiteRT execution, data types of weights/activations, calibration."""
import numpy as np
import pytest

from jlml_tf.inference import embedders
from jlml_tf.data import pipeline
from jlml_tf.data import preprocessing
import run_fixtures as fixtures
from jlml_tf.export import tflite


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tflite")
    data = fixtures.tiny_synthetic(root / "data")
    # Four stripes: local_feature's kernel is then 64 x 16 = 1,024 values, at dynamic-range
    # quantisation's 1,024-value threshold (512 with two), so that variant has int8 weights.
    run = fixtures.make_synthetic_run(root / "run", data, fixtures.tiny_config(num_stripes=4),
                                      data_dir=root / "data")
    base, path, keras_model = fixtures.export_tiny(root / "export", run_dir=run)
    trial = data.trials[0]
    test = pipeline.decode_all(data.table.subset(np.concatenate([trial.query, trial.gallery])),
                               64, 32)
    calib = tflite.calibration_images(data.table.subset(trial.train), 64, 32, count=30)
    files = {}
    for variant in tflite.VARIANTS:
        content = tflite.convert(path, variant, calib if variant == "int8" else None)
        files[variant] = tflite.write(content, root / "tflite" / f"{variant}.tflite")
    return files, keras_model, test


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("variant,max_diff,min_cos", [
    ("float32", 1e-5, 0.99999), ("float16", 5e-3, 0.9999), ("dynamic_int8", 3e-2, 0.999),
    ("int8", 0.1, 0.995)])
def test_variant_runs_with_litert_and_matches_keras(setup, variant, max_diff, min_cos):
    files, keras_model, test = setup
    embedder = embedders.TFLiteEmbedder(files[variant], num_threads=2)
    assert (embedder.height, embedder.width) == (64, 32)
    got = embedder.embed(test, batch_size=7)  # dynamic batch: 7, then the remainder
    want = keras_model(test.astype(np.float32)).numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() < max_diff
    assert _cosines(got, want).min() > min_cos
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_interfaces_and_quantisation(setup):
    files, _, _ = setup
    info = {v: tflite.describe(p) for v, p in files.items()}
    for v, d in info.items():  # every variant: uint8 pixels in, float32 embeddings out
        (inp,), (out,) = d["inputs"], d["outputs"]
        assert inp["dtype"] == "uint8" and inp["shape"] == [-1, 64, 32, 3], v
        assert out["dtype"] == "float32" and out["shape"] == [-1, 32], v
    assert set(info["float32"]["compute_op_weight_dtypes"]) == {"float32"}
    assert "DEQUANTIZE" in info["float16"]["ops"]  # float16 weights, dequantised for compute
    # dynamic range: large weight tensors int8 (TFLite leaves ones under 1024 values in float)
    assert "int8" in info["dynamic_int8"]["compute_op_weight_dtypes"]
    assert set(info["dynamic_int8"]["compute_op_activation_dtypes"]) == {"float32"}
    # full int8: every conv / fully connected op has int8 weights and int8 activations
    assert set(info["int8"]["compute_op_weight_dtypes"]) == {"int8"}
    assert set(info["int8"]["compute_op_activation_dtypes"]) == {"int8"}
    assert info["int8"]["size_bytes"] < info["float32"]["size_bytes"]


def test_int8_needs_calibration(setup, tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        tflite.convert(tmp_path, "int8", None)
    with pytest.raises(ValueError, match="unknown TFLite variant"):
        tflite.convert(tmp_path, "int4")


def test_calibration_from_files_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        p.write_bytes(__import__("tensorflow").io.encode_png(
            rng.integers(0, 256, (80, 40, 3), dtype=np.uint8)).numpy())
        paths.append(p)
    images = tflite.calibration_images(paths, 64, 32, count=3)
    assert images.shape == (3, 64, 32, 3) and images.dtype == np.uint8
    with pytest.raises(ValueError, match="at least one"):
        tflite.calibration_images([], 64, 32)
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(preprocessing.UnreadableImageError, match="bad.jpg"):
        tflite.calibration_images([tmp_path / "bad.jpg"], 64, 32)


def test_ibn_model_converts_and_matches_keras(tmp_path):
    # Instance norm (IBN-a units) is a different op graph from batch norm: it must convert too.
    run = fixtures.make_run(tmp_path / "run", fixtures.tiny_config(ibn_stages=1))
    _, path, keras_model = fixtures.export_tiny(tmp_path / "export", run_dir=run)
    file = tflite.write(tflite.convert(path, "float32"), tmp_path / "ibn.tflite")
    images = np.random.default_rng(0).integers(0, 256, (5, 64, 32, 3), dtype=np.uint8)
    got = embedders.TFLiteEmbedder(file, num_threads=2).embed(images, batch_size=5)
    want = keras_model(images.astype(np.float32)).numpy()
    assert np.abs(got - want).max() < 1e-5
