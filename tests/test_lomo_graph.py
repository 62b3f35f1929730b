"""LOMO in TensorFlow ops (jlml_tf/features/lomo_graph.py) against the NumPy LOMO."""
import keras
import numpy as np
import pytest

from jlml_tf.features import lomo, lomo_graph

CFG = lomo.LomoConfig(retinex="none")


def safe_palette(rng, size: int) -> np.ndarray:
    """Colours no float rounding can move across a quantisation step: hue, saturation and
    value 0.01 of a level or more from a level's edge, grey levels 0.01 or more from a .5, and no
    two grey levels j, k (neither 0) with 10 j = 7 k or 13 k (a neighbour exactly at SILTP's
    (1 -+ 0.3) times the centre)."""
    colours, greys = [], []
    while len(colours) < size:
        c = rng.integers(0, 256, 3)
        hsv = lomo.rgb_to_hsv(c / 255.0) * 8
        exact_grey = float(c @ np.asarray(lomo.GRAY_WEIGHTS))
        g = int(round(exact_grey))
        if (np.abs(hsv - np.round(hsv)) < 0.01).any() or abs(exact_grey % 1 - 0.5) < 0.01 \
                or g == 0 or any(10 * j in (7 * g, 13 * g) or 10 * g in (7 * j, 13 * j)
                                 for j in greys):
            continue
        colours.append(c)
        greys.append(g)
    return np.asarray(colours, np.uint8)


def block_images(rng, n: int, height: int = 128, width: int = 48, block: int = 8):
    """Images of block x block squares, each one colour of a safe palette. The pyramid's 2x2
    pooling keeps every square one colour (block is a power of two), so every level's codes
    are those of palette colours."""
    palette = safe_palette(rng, 24)
    picks = rng.integers(0, len(palette), (n, height // block, width // block))
    return np.repeat(np.repeat(palette[picks], block, axis=1), block, axis=2)


def test_equals_the_numpy_lomo_where_no_pixel_sits_on_a_quantisation_step():
    images = block_images(np.random.default_rng(0), 3)
    got = lomo_graph.lomo(images, CFG).numpy()
    assert got.shape == (3, lomo.feature_dim(CFG)) and got.dtype == np.float32
    np.testing.assert_allclose(got, lomo.lomo(images, CFG), atol=1e-6)


def test_equals_the_numpy_lomo_at_another_size():
    cfg = lomo.LomoConfig(height=64, width=32, retinex="none")
    images = block_images(np.random.default_rng(1), 2, 64, 32)
    got = lomo_graph.lomo(images, cfg).numpy()
    assert got.shape == (2, lomo.feature_dim(cfg))
    np.testing.assert_allclose(got, lomo.lomo(images, cfg), atol=1e-6)


def test_pooled_levels_and_skipped_levels_at_an_odd_size():
    """3-pixel squares at 66x20: 2x2 pooling mixes colours (the pooled HSV levels are floored
    means, exact in float32) and drops the odd last rows; at the second level (33x10) SILTP
    R=5 is skipped while the colour windows still fit. The colour part is exact; SILTP's
    pooled grey values may sit on a step, so it is only close."""
    cfg = lomo.LomoConfig(height=66, width=20, retinex="none")
    images = block_images(np.random.default_rng(4), 2, 66, 21, block=3)[:, :, :20]
    got, want = lomo_graph.lomo(images, cfg).numpy(), lomo.lomo(images, cfg)
    hsv_dim = lomo.window_rows(cfg) * 512
    assert lomo.window_rows(cfg) == 12 + 5  # 66x20, then 33x10 (16x5 has no window)
    assert got.shape[1] == hsv_dim + (12 + 5) * 81 + 12 * 81  # R=5 only at the first level
    np.testing.assert_allclose(got[:, :hsv_dim], want[:, :hsv_dim], atol=1e-6)
    np.testing.assert_allclose(got[:, hsv_dim:], want[:, hsv_dim:], atol=0.05)


def test_on_noise_float32_moves_few_pixels_and_the_features_little():
    """Random pixels put some on a step (the module docstring): a few window counts change by
    one, and each image's LOMO vector keeps a cosine above 0.999 with the NumPy one."""
    images = np.random.default_rng(2).integers(0, 256, (4, 128, 48, 3), dtype=np.uint8)
    got, want = lomo_graph.lomo(images, CFG).numpy(), lomo.lomo(images, CFG)
    assert not np.array_equal(got, want)  # noise does hit the steps
    cosine = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1)
                                           * np.linalg.norm(want, axis=1))
    assert cosine.min() > 0.999
    assert np.abs(got - want).max() < 0.02


def test_refuses_retinex_and_a_wrong_size():
    with pytest.raises(ValueError, match="no Retinex"):
        lomo_graph.lomo(np.zeros((1, 128, 48, 3), np.uint8), lomo.LomoConfig(retinex="msr"))
    with pytest.raises(ValueError, match=r"RGB images \[N, 128, 48, 3\], got shape"):
        lomo_graph.lomo(np.zeros((1, 64, 32, 3), np.uint8), CFG)


def test_layer_in_a_saved_and_reloaded_keras_model(tmp_path):
    cfg = lomo.LomoConfig(height=64, width=32, retinex="none")
    pixels = keras.Input((64, 32, 3))
    model = keras.Model(pixels, lomo_graph.LomoLayer(cfg.to_dict())(pixels))
    assert model.output.shape == (None, lomo.feature_dim(cfg))
    assert model.count_params() == 0
    model.save(tmp_path / "lomo.keras")
    reloaded = keras.models.load_model(tmp_path / "lomo.keras")
    images = block_images(np.random.default_rng(3), 2, 64, 32)
    np.testing.assert_allclose(reloaded(images.astype(np.float32)).numpy(),
                               lomo.lomo(images, cfg), atol=1e-6)
