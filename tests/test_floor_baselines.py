"""benchmarks/floor_baselines.py: the no-training features on tiny hand-made images."""

import numpy as np

from conftest import load_benchmark

floor = load_benchmark("floor_baselines")


def _two_colour_person(top, bottom, h=16, w=6):
    image = np.zeros((h, w, 3), np.uint8)
    image[:h // 2], image[h // 2:] = top, bottom
    return image


def test_hsv_histogram_puts_each_stripe_in_its_colour_bin():
    red_over_blue = _two_colour_person((255, 0, 0), (0, 0, 255))
    (feature,) = floor.hsv_histograms(red_over_blue[None], stripes=2, bins=(4, 2, 2))
    cells = feature.reshape(2, 4, 2, 2)
    # red: hue 0, full saturation and value; blue: hue 2/3 -> bin 2 of 4
    assert cells[0, 0, 1, 1] > 0 and cells[1, 2, 1, 1] > 0
    assert np.count_nonzero(cells) == 2
    np.testing.assert_allclose(np.linalg.norm(feature), 1.0, rtol=1e-6)


def test_hsv_histogram_tells_colour_order_apart_but_not_brightness_noise():
    a = _two_colour_person((255, 0, 0), (0, 0, 255))
    b = _two_colour_person((0, 0, 255), (255, 0, 0))
    c = np.clip(a.astype(int) - 3, 0, 255).astype(np.uint8)
    fa, fb, fc = floor.hsv_histograms(np.stack([a, b, c]), stripes=2, bins=(4, 2, 2))
    assert np.linalg.norm(fa - fc) < 1e-6 < np.linalg.norm(fa - fb)


def test_raw_pixels_are_centred_unit_vectors_invariant_to_a_brightness_offset():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 200, (3, 16, 6, 3)).astype(np.float32)
    brighter = images + 40.0
    f, g = floor.raw_pixels(images, size=(8, 3)), floor.raw_pixels(brighter, size=(8, 3))
    assert f.shape == (3, 8 * 3 * 3)
    np.testing.assert_allclose(f.sum(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(f, g, atol=1e-6)
