"""LOMO (jlml_tf/features/lomo.py) and its Retinex (retinex.py) on small constructed images."""
import colorsys

import numpy as np
import pytest

from jlml_tf.features import lomo, retinex

CFG = lomo.LomoConfig(retinex="none")
HSV_DIM = 40 * 512  # 24 + 11 + 5 window rows, 8x8x8 joint bins
SILTP_DIM = 40 * 81


def uniform(colour, n=1, height=128, width=48):
    return np.broadcast_to(np.asarray(colour, np.uint8), (n, height, width, 3)).copy()


def parts(features):
    """HSV, SILTP R=3, SILTP R=5 parts of LOMO vectors (paper setting)."""
    return np.split(features, [HSV_DIM, HSV_DIM + SILTP_DIM], axis=1)


# ----------------------------------------------------------------------------------------------
# Length, pyramid, normalisation


def test_feature_length_is_26960_in_the_papers_setting():
    assert lomo.feature_dim(lomo.LomoConfig()) == 26_960
    assert lomo.pyramid_sizes(lomo.LomoConfig()) == [(128, 48), (64, 24), (32, 12)]
    assert lomo.window_rows(lomo.LomoConfig()) == 24 + 11 + 5
    images = np.random.default_rng(0).integers(0, 256, (3, 128, 48, 3), dtype=np.uint8)
    for variant in retinex.VARIANTS:
        features = lomo.lomo(images, lomo.LomoConfig(retinex=variant))
        assert features.shape == (3, 26_960) and features.dtype == np.float32
        assert (features >= 0).all()
        # log(1 + x) then each part on its own to unit L2 norm, as the authors' normc.
        for part in parts(features):
            np.testing.assert_allclose(np.linalg.norm(part, axis=1), 1.0, rtol=1e-5)


def test_feature_length_follows_the_options():
    cfg = lomo.LomoConfig(num_scales=1, radii=(3,), hsv_bins=(4, 4, 4))
    assert lomo.feature_dim(cfg) == 24 * 64 + 24 * 81
    images = np.zeros((1, 128, 48, 3), np.uint8)
    assert lomo.lomo(images, cfg).shape == (1, lomo.feature_dim(cfg))
    eight = lomo.LomoConfig(num_points=8, radii=(3,), num_scales=1)
    assert lomo.feature_dim(eight) == 24 * 512 + 24 * 3 ** 8
    # A radius wider than a level skips it and every smaller one (the authors' rule).
    wide = lomo.LomoConfig(radii=(8,))  # 17 > 12 pixels of the third level
    assert lomo.feature_dim(wide) == 40 * 512 + (24 + 11) * 81
    assert lomo.lomo(images, wide).shape == (1, lomo.feature_dim(wide))


def test_average_pooling_pyramid():
    x = np.arange(2 * 5 * 7, dtype=np.float64).reshape(2, 5, 7)
    pooled = lomo.average_pool(x)
    assert pooled.shape == (2, 2, 3)  # odd last row and column dropped
    assert pooled[0, 0, 0] == np.mean([x[0, 0, 0], x[0, 0, 1], x[0, 1, 0], x[0, 1, 1]])
    assert pooled[1, 1, 2] == np.mean(x[1, 2:4, 4:6])
    levels = np.array([[[[0, 1, 7], [1, 1, 7]], [[0, 0, 6], [1, 2, 6]]]])  # [1, 2, 2, 3]
    floored = lomo.average_pool(levels, floor=True)
    assert floored.dtype == np.int64 and floored.tolist() == [[[[0, 1, 6]]]]
    with pytest.raises(ValueError, match="cannot pool"):
        lomo.average_pool(np.zeros((1, 1, 4)))


def test_log_normalise():
    counts = np.array([[0, 3, 0, 7], [0, 0, 0, 0]])
    out = lomo.log_normalise(counts)
    expected = np.log1p(counts[0]) / np.linalg.norm(np.log1p(counts[0]))
    np.testing.assert_allclose(out[0], expected)
    assert (out[1] == 0).all()


# ----------------------------------------------------------------------------------------------
# Window histograms and the horizontal maximum


def test_window_histograms_shapes_sums_and_brute_force():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 6, (2, 23, 17))
    hist = lomo.window_histograms(codes, 6, block=10, step=5)
    assert hist.shape == (2, 3, 2, 6)  # rows start 0, 5, 10; columns 0, 5
    assert (hist.sum(axis=-1) == 100).all()
    for n in range(2):
        for i, y in enumerate((0, 5, 10)):
            for j, x in enumerate((0, 5)):
                window = codes[n, y:y + 10, x:x + 10]
                assert hist[n, i, j].tolist() == np.bincount(window.ravel(), minlength=6).tolist()
    at_paper_size = lomo.window_histograms(np.zeros((1, 128, 48), np.int64), 81)
    assert at_paper_size.shape == (1, 24, 8, 81)
    with pytest.raises(ValueError, match="codes must lie"):
        lomo.window_histograms(np.full((1, 10, 10), 6), 6)


def test_horizontal_max_takes_each_bins_maximum_over_a_row_of_windows():
    hist = np.zeros((1, 2, 3, 4), np.int64)
    hist[0, 0, :, 1] = [5, 9, 2]
    hist[0, 0, :, 3] = [0, 0, 4]
    hist[0, 1, :, 0] = [1, 1, 1]
    out = lomo.horizontal_max(hist)
    assert out.shape == (1, 2, 4)
    assert out[0].tolist() == [[0, 9, 0, 4], [1, 0, 0, 0]]


def test_occurrence_is_unchanged_by_a_horizontal_shift_but_not_a_vertical_one():
    """A patch moved sideways along its row of windows gives the same HSV part (the point of
    the maximum); moved down into other rows, a different one."""
    base = uniform((40, 90, 200))
    left, right, lower = base.copy(), base.copy(), base.copy()
    left[0, 40:60, 10:20] = (230, 40, 30)
    right[0, 40:60, 30:40] = (230, 40, 30)
    lower[0, 80:100, 10:20] = (230, 40, 30)
    features = [lomo.hsv_part(retinex.apply(x, "none"), CFG) for x in (left, right, lower)]
    np.testing.assert_array_equal(features[0], features[1])
    assert np.abs(features[0] - features[2]).max() > 0.01


# ----------------------------------------------------------------------------------------------
# Colour


def test_hsv_matches_colorsys():
    rgb = np.random.default_rng(2).random((200, 3))
    rgb[:5] = [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0], [0.2, 0.2, 0.9]]
    expected = np.array([colorsys.rgb_to_hsv(*p) for p in rgb])
    np.testing.assert_allclose(lomo.rgb_to_hsv(rgb), expected, atol=1e-12)


@pytest.mark.parametrize("colour, code", [((255, 0, 0), 0 + 8 * 7 + 64 * 7),
                                          ((0, 0, 0), 0), ((255, 255, 255), 64 * 7),
                                          ((0, 128, 0), 2 + 8 * 7 + 64 * 4)])
def test_uniform_image_gives_one_bin_colour_histograms(colour, code):
    levels = lomo.hsv_levels(retinex.apply(uniform(colour), "none"))
    codes = lomo.joint_codes(levels)
    assert (codes == code).all()
    hist = lomo.window_histograms(codes, 512)
    assert (hist[..., code] == 100).all() and (hist.sum(axis=-1) == 100).all()
    part = lomo.hsv_part(retinex.apply(uniform(colour), "none"), CFG)
    # One non-zero bin per row of windows at every scale (40), all equal after normalising.
    assert np.count_nonzero(part) == 40
    np.testing.assert_allclose(part[part > 0], 1 / np.sqrt(40), rtol=1e-6)
    assert (part.reshape(40, 512)[:, code] > 0).all()


def test_uniform_image_stays_one_colour_under_every_retinex():
    image = uniform((90, 60, 30), n=2)
    for variant in retinex.VARIANTS:
        out = retinex.apply(image, variant)
        assert out.shape == image.shape and out.dtype == np.float32
        assert np.ptp(out.reshape(-1, 3), axis=0).max() < 1e-6
        part = lomo.hsv_part(out, lomo.LomoConfig(retinex=variant))
        assert np.count_nonzero(part[0]) == 40


# ----------------------------------------------------------------------------------------------
# Texture


def test_siltp_of_a_constant_image_is_all_in_pattern_zero():
    for level in (0, 77, 255):
        gray = lomo.rgb_to_gray(uniform((level,) * 3))
        for radius in (3, 5):
            assert (lomo.siltp(gray, 0.3, radius) == 0).all()
    features = lomo.lomo(uniform((77, 77, 77)), CFG)
    for part in parts(features)[1:]:
        rows = part.reshape(40, 81)
        assert (rows[:, 1:] == 0).all()
        np.testing.assert_allclose(rows[:, 0], 1 / np.sqrt(40), rtol=1e-6)


def test_siltp_codes_of_a_constructed_neighbourhood():
    r = 3
    gray = np.full((1, 9, 9), 0.5)
    y, x = 4, 4
    gray[0, y, x + r] = 1.0   # right: brighter than 1.3 x 0.5 -> 2 x 3^0
    gray[0, y - r, x] = 0.55  # up: within the tolerance -> 0
    gray[0, y, x - r] = 0.2   # left: darker than 0.7 x 0.5 -> 1 x 3^2
    gray[0, y + r, x] = 0.9   # down: brighter -> 2 x 3^3
    codes = lomo.siltp(gray, tau=0.3, radius=r)
    assert codes[0, y, x] == 2 + 9 + 2 * 27
    assert codes.max() < 81 and codes.min() >= 0


def test_siltp_is_invariant_to_scaling_the_intensity():
    gray = np.random.default_rng(3).uniform(0.05, 1.0, (2, 20, 16))
    np.testing.assert_array_equal(lomo.siltp(gray, 0.3, 3), lomo.siltp(0.37 * gray, 0.3, 3))
    np.testing.assert_array_equal(lomo.siltp(gray, 0.3, 5, 8), lomo.siltp(2 * gray, 0.3, 5, 8))
    assert lomo.siltp(gray, 0.3, 3, 8).max() < 3 ** 8


def test_gray_conversion_rounds_like_rgb2gray():
    image = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]]], np.uint8)
    expected = np.round([76.2287, 149.6960, 29.0753, 0.2989 * 10 + 0.5870 * 20 + 0.1140 * 30])
    np.testing.assert_allclose(lomo.rgb_to_gray(image)[0, 0] * 255, expected)


# ----------------------------------------------------------------------------------------------
# Retinex variants, batching, errors


def test_retinex_variants():
    rng = np.random.default_rng(4)
    images = rng.integers(20, 236, (2, 32, 16, 3)).astype(np.uint8)
    images[1] //= 4  # a dark image
    for variant in ("msr", "msrcr"):
        out = retinex.apply(images, variant)
        assert out.min() >= 0 and out.max() <= 1
        # The dark image comes out as bright as the other: illumination is normalised.
        assert abs(out[0].mean() - out[1].mean()) < 0.1
    # Intensity-only MSR keeps every pixel's chromaticity (hue and R:G:B ratios).
    x = (images.astype(np.float64) + 1) / 256
    msr = retinex.msr_intensity(images).astype(np.float64)
    ratios_in = x / x.sum(axis=-1, keepdims=True)
    ratios_out = msr / np.maximum(msr.sum(axis=-1, keepdims=True), 1e-12)
    bright = msr.sum(axis=-1) > 0.05
    np.testing.assert_allclose(ratios_out[bright], ratios_in[bright], atol=1e-5)
    np.testing.assert_allclose(retinex.apply(images, "none"), images / 255.0, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown Retinex"):
        retinex.apply(images, "ssr")
    with pytest.raises(ValueError, match="retinex must be"):
        lomo.LomoConfig(retinex="ssr")


def test_extract_in_batches_equals_one_batch_and_checks_the_size():
    images = np.random.default_rng(5).integers(0, 256, (5, 128, 48, 3), dtype=np.uint8)
    cfg = lomo.LomoConfig(retinex="msr")
    batched, timing = lomo.extract(images, cfg, batch_size=2, progress=False)
    np.testing.assert_allclose(batched, lomo.lomo(images, cfg), rtol=1e-6, atol=1e-7)
    assert timing.num_images == 5 and timing.per_image["cpu_ms_per_image"] > 0
    with pytest.raises(ValueError, match=r"\[N, 128, 48, 3\].*decode_all"):
        lomo.lomo(np.zeros((1, 64, 32, 3), np.uint8))
