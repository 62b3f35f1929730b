"""The tf.data pipeline: decoding, seeded epochs, samplers, augmentation, evaluation order."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from jlml_tf import config
from jlml_tf.data import pipeline
from jlml_tf.data.types import ImageTable

H, W = 16, 8


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def numbered_table(n=24, per_identity=3, seed=0):
    """Images whose top-left pixel is their row number (so a batch tells which rows it holds);
    the rest is noise. pid = row // per_identity + 1."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        img = rng.integers(0, 256, (H, W, 3))
        img[0, 0] = i
        images.append(png(img))
    pids = np.arange(n) // per_identity + 1
    return ImageTable(images, pids, np.ones(n, np.int64), [f"{i}.png" for i in range(n)])


def batches(ds):
    """Training batches as (images, labels) NumPy pairs."""
    return [tuple(np.asarray(t) for t in b) for b in ds.as_numpy_iterator()]


def eval_batches(ds):
    return [np.asarray(b) for b in ds.as_numpy_iterator()]


def rows_of(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(int)


def decoded(table, row):
    return np.asarray(Image.open(io.BytesIO(table.images[row])).convert("RGB"), np.float32)


def test_decode_and_resize_png_and_jpeg():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (20, 10, 3)).astype(np.uint8)
    same = pipeline.decode_and_resize(tf.constant(png(img)), 20, 10).numpy()
    assert same.dtype == np.float32 and same.shape == (20, 10, 3)
    np.testing.assert_array_equal(same, img.astype(np.float32))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG")
    out = pipeline.decode_and_resize(tf.constant(buf.getvalue()), 32, 16).numpy()
    assert out.shape == (32, 16, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 255.0 and out.std() > 10
    np.testing.assert_array_equal(out, np.round(out))


def test_train_dataset_shapes_dtypes_and_labels():
    table = numbered_table()
    labels = table.pids - 1
    ds = pipeline.train_dataset(table, labels, H, W, batch_size=5, seed=0, epoch=0,
                                augment=pipeline.NO_AUGMENT)
    out = batches(ds)
    assert len(out) == pipeline.steps_per_epoch(len(table), 5) == 4
    for images, batch_labels in out:
        assert images.shape == (5, H, W, 3) and images.dtype == np.float32
        assert batch_labels.shape == (5,) and batch_labels.dtype == np.int32
        assert 0.0 <= images.min() and images.max() <= 255.0
        np.testing.assert_array_equal(batch_labels, labels[rows_of(images)])
        for image, row in zip(images, rows_of(images)):
            np.testing.assert_array_equal(image, decoded(table, row))
    seen = np.concatenate([rows_of(b[0]) for b in out])
    assert len(set(seen)) == 20  # a permutation, remainder dropped
    keep_all = batches(pipeline.train_dataset(table, labels, H, W, 5, 0, 0, drop_remainder=False))
    assert sorted(np.concatenate([rows_of(b[0]) for b in keep_all])) == list(range(24))


def test_same_seed_and_epoch_same_batches_other_epoch_other_order():
    table = numbered_table()
    labels = table.pids - 1
    augment = pipeline.AugmentConfig(pad=2, erasing_probability=0.5)

    def run(seed, epoch, **kw):
        return batches(pipeline.train_dataset(table, labels, H, W, 6, seed, epoch, augment, **kw))

    a, b = run(3, 1), run(3, 1)
    for (ia, la), (ib, lb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    order = lambda out: np.concatenate([b[1] for b in out])  # noqa: E731
    assert not np.array_equal(order(run(3, 2)), order(a))
    assert not np.array_equal(order(run(4, 1)), order(a))
    # Resuming mid-epoch (skip) sees exactly the remaining batches, augmentation included.
    resumed = batches(pipeline.train_dataset(table, labels, H, W, 6, 3, 1, augment).skip(2))
    for (ir, _), (ia, _) in zip(resumed, a[2:]):
        np.testing.assert_array_equal(ir, ia)


def test_epoch_order_uses_numpy_generator():
    labels = np.arange(10)
    expected = np.random.default_rng([7, 2]).permutation(10)[:8]
    np.testing.assert_array_equal(pipeline.epoch_order(labels, 4, 7, 2), expected)


def test_cached_decoding_gives_identical_batches():
    table = numbered_table()
    labels = table.pids - 1
    augment = pipeline.AugmentConfig(pad=3, erasing_probability=1.0)
    cache = pipeline.DecodedCache()
    plain = batches(pipeline.train_dataset(table, labels, H, W, 4, 1, 0, augment))
    cached = batches(pipeline.train_dataset(table, labels, H, W, 4, 1, 0, augment,
                                            cache_decoded=cache))
    assert len(cache) == 1
    pipeline.train_dataset(table, labels, H, W, 4, 1, 1, augment, cache_decoded=cache)
    assert len(cache) == 1  # the next epoch reuses the entry
    for (ip, lp), (ic, lc) in zip(plain, cached):
        np.testing.assert_array_equal(ip, ic)
        np.testing.assert_array_equal(lp, lc)


def test_flip_mirrors_exactly():
    table = numbered_table()
    labels = table.pids - 1
    always = pipeline.AugmentConfig(flip=True, flip_probability=1.0, pad=0, erasing_probability=0)
    images = batches(pipeline.train_dataset(table, labels, H, W, 24, 0, 0, always))[0][0]
    plain = batches(pipeline.train_dataset(table, labels, H, W, 24, 0, 0, pipeline.NO_AUGMENT))[0][0]
    np.testing.assert_array_equal(images, plain[:, :, ::-1])
    half = pipeline.AugmentConfig(flip=True, flip_probability=0.5, pad=0, erasing_probability=0)
    images = batches(pipeline.train_dataset(table, labels, H, W, 24, 0, 0, half))[0][0]
    flipped = [np.array_equal(a, p[:, ::-1]) for a, p in zip(images, plain)]
    same = [np.array_equal(a, p) for a, p in zip(images, plain)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 0 < sum(flipped) < 24


def test_pad_crop_keeps_size_and_shifts():
    rng = np.random.default_rng(2)
    image = tf.constant(rng.integers(1, 256, (H, W, 3)).astype(np.float32))
    pad = 3
    shifts = set()
    for i in range(30):
        out = pipeline.random_pad_crop(image, tf.constant([5, i], tf.int64), pad).numpy()
        assert out.shape == (H, W, 3)
        padded = np.pad(image.numpy(), [(pad, pad), (pad, pad), (0, 0)])
        matches = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if np.array_equal(padded[dy:dy + H, dx:dx + W], out)]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) > 5  # offsets really are random
    again = pipeline.random_pad_crop(image, tf.constant([5, 0], tf.int64), pad).numpy()
    first = pipeline.random_pad_crop(image, tf.constant([5, 0], tf.int64), pad).numpy()
    np.testing.assert_array_equal(again, first)


def test_random_erasing_changes_one_rectangle_of_the_expected_area():
    height, width = 64, 32
    image = tf.zeros((height, width, 3))
    area = (0.05, 0.3)
    for i in range(25):
        out = pipeline.random_erasing(image, tf.constant([1, i], tf.int64), probability=1.0,
                                      area=area, aspect=(0.3, 3.3), fill="mean").numpy()
        changed = np.any(out != 0, axis=-1)
        ys, xs = np.nonzero(changed)
        assert len(ys), "probability 1 must erase"
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert changed.sum() == h * w  # one solid rectangle
        np.testing.assert_allclose(out[changed], np.broadcast_to(config.PIXEL_MEAN, (h * w, 3)),
                                   rtol=1e-6)
        # h and w are rounded, so allow half a pixel on each side of the target rectangle.
        slack = (h + w + 1) / 2 / (height * width)
        assert area[0] - slack <= h * w / (height * width) <= area[1] + slack
    never = pipeline.random_erasing(image + 7, tf.constant([1, 0], tf.int64), probability=0.0)
    np.testing.assert_array_equal(never.numpy(), np.full((height, width, 3), 7.0))
    rand = pipeline.random_erasing(image, tf.constant([2, 0], tf.int64), probability=1.0,
                                   fill="random").numpy()
    assert len(np.unique(rand[np.any(rand != 0, -1)])) > 10


def test_color_jitter_moves_a_grey_image_only_in_brightness_within_its_strength():
    # On a flat grey image contrast, saturation and hue have nothing to act on: what is left
    # is the brightness shift, the same on every pixel and channel and at most j of full scale.
    strength = 0.2
    grey = tf.fill((H, W, 3), 128.0)
    shifts = []
    for i in range(20):
        out = pipeline.color_jitter(grey, tf.constant([3, i], tf.int64), strength).numpy()
        np.testing.assert_allclose(out, np.full_like(out, out[0, 0, 0]), atol=1e-3)
        shifts.append(out[0, 0, 0] - 128.0)
    assert max(abs(s) for s in shifts) <= strength * 255 + 1e-3
    assert len({round(s, 2) for s in shifts}) > 10  # really random
    np.testing.assert_array_equal(pipeline.color_jitter(grey, tf.constant([3, 0], tf.int64), 0.0),
                                  grey)


def test_color_jitter_changes_colours_reproducibly_and_stays_in_pixel_range():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (H, W, 3)), tf.float32)
    seed = tf.constant([4, 1], tf.int64)
    out = pipeline.color_jitter(image, seed, 0.4).numpy()
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert np.abs(out - image.numpy()).mean() > 1.0
    np.testing.assert_array_equal(out, pipeline.color_jitter(image, seed, 0.4).numpy())
    other = pipeline.color_jitter(image, tf.constant([4, 2], tf.int64), 0.4).numpy()
    assert not np.array_equal(out, other)


def test_color_jitter_leaves_the_geometric_augmentation_draws_unchanged():
    # Colour jitter takes a fourth sub-seed, so a flip drawn for an image is the same with and
    # without it: runs that only add jitter stay comparable image for image.
    ramp = tf.constant(np.broadcast_to(np.arange(W, dtype=np.float32)[None, :, None] * 30,
                                       (H, W, 3)).copy())
    for seed in ([6, 0], [6, 1]):
        seed = tf.constant(seed, tf.int64)
        np.testing.assert_array_equal(tf.random.experimental.stateless_split(seed, 4)[:3],
                                      tf.random.experimental.stateless_split(seed, 3))
    flips = set()
    for i in range(10):
        seed = tf.constant([6, i], tf.int64)
        plain = pipeline.augment_image(ramp, seed, pipeline.AugmentConfig(pad=0, erasing_probability=0))
        jittered = pipeline.augment_image(ramp, seed, pipeline.AugmentConfig(
            pad=0, erasing_probability=0, color_jitter=0.1)).numpy()
        flipped = plain.numpy()[0, 0, 0] > plain.numpy()[0, -1, 0]
        assert (jittered[0, 0].mean() > jittered[0, -1].mean()) == flipped
        flips.add(bool(flipped))
    assert flips == {True, False}


def test_pk_sampler_gives_p_identities_with_k_images():
    table = numbered_table(n=40, per_identity=5)  # 8 identities
    labels = table.pids - 1
    p, k = 3, 4
    out = batches(pipeline.train_dataset(table, labels, H, W, p * k, 0, 0, sampler="pk",
                                         images_per_identity=k))
    assert len(out) == pipeline.steps_per_epoch(40, p * k) == 3
    for images, batch_labels in out:
        counts = np.unique(batch_labels, return_counts=True)[1]
        assert len(counts) == p and set(counts) == {k}
        np.testing.assert_array_equal(labels[rows_of(images)], batch_labels)
        for c in np.unique(batch_labels):  # no image repeats when an identity has >= K images
            assert len(set(rows_of(images)[batch_labels == c])) == k
    again = pipeline.epoch_order(labels, p * k, 0, 0, "pk", k)
    np.testing.assert_array_equal(again, np.concatenate([rows_of(b[0]) for b in out]))
    assert not np.array_equal(again, pipeline.epoch_order(labels, p * k, 0, 1, "pk", k))
    with pytest.raises(ValueError, match="multiple"):
        pipeline.epoch_order(labels, 10, 0, 0, "pk", 4)
    with pytest.raises(ValueError, match="identities"):
        pipeline.epoch_order(labels, 36, 0, 0, "pk", 4)


def test_pk_sampler_repeats_images_of_small_identities():
    labels = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    order = pipeline.epoch_order(labels, 8, 0, 0, "pk", 4)
    batch = labels[order]
    assert len(np.unique(batch)) == 2 and set(np.unique(batch, return_counts=True)[1]) == {4}


def test_camera_sampler_gives_batches_of_one_camera_and_a_full_epoch():
    table = numbered_table(n=40, per_identity=5)
    cameras = np.r_[np.zeros(21, int), np.ones(14, int), np.full(5, 7)]  # 21 + 14 + 5 images
    table = ImageTable(table.images, table.pids, cameras, table.filenames)
    labels = table.pids - 1
    out = batches(pipeline.train_dataset(table, labels, H, W, 8, 0, 0, sampler="camera"))
    # 5 batches: 2 + 1 whole ones, then one from each leftover of cameras 0 and 1 (5 and 6
    # images); camera 7 has 5 images, fewer than MIN_CAMERA_IMAGES: no batch of its own
    assert len(out) == pipeline.steps_per_epoch(40, 8) == 5
    per_camera = []
    for images, batch_labels in out:
        rows = rows_of(images)
        np.testing.assert_array_equal(labels[rows], batch_labels)
        assert len(np.unique(cameras[rows])) == 1
        per_camera.append(int(cameras[rows][0]))
    assert sorted(per_camera) == [0, 0, 0, 1, 1]
    again = pipeline.epoch_order(labels, 8, 0, 0, "camera", cameras=cameras)
    np.testing.assert_array_equal(again, np.concatenate([rows_of(b[0]) for b in out]))
    assert not np.array_equal(again, pipeline.epoch_order(labels, 8, 0, 1, "camera",
                                                          cameras=cameras))
    with pytest.raises(ValueError, match="camera of every"):
        pipeline.epoch_order(labels, 8, 0, 0, "camera")


def test_camera_sampler_shares_the_missing_batches_among_cameras_with_enough_images():
    # 5 cameras of 10 images, 96 on camera 9 and 3 on camera 7; batch 16: 9 batches, 6 whole
    # ones of camera 9, 3 more from leftovers of the 10-image cameras, drawn anew each epoch
    cameras = np.r_[np.repeat(np.arange(5), 10), np.full(96, 9), np.full(3, 7)]
    labels = np.arange(len(cameras))
    drawn = set()
    for epoch in range(100):
        order = pipeline.epoch_order(labels, 16, 0, epoch, "camera", cameras=cameras)
        per_batch = cameras[order].reshape(-1, 16)
        assert (per_batch == per_batch[:, :1]).all()
        assert len(per_batch) == 9 and list(per_batch[:, 0]).count(9) == 6
        drawn |= set(per_batch[:, 0].tolist())
    assert drawn == {0, 1, 2, 3, 4, 9}  # never camera 7: 3 images, fewer than 8
    # drop_remainder=False: a 10th batch; only camera 9 and the 10-image cameras qualify
    order = pipeline.epoch_order(labels, 16, 0, 0, "camera", drop_remainder=False,
                                 cameras=cameras)
    assert len(order) == 160 and 7 not in cameras[order]
    # no camera large enough to fill the missing batches
    with pytest.raises(ValueError, match="at least 4 images; the largest has 3"):
        pipeline.epoch_order(np.arange(6), 4, 0, 0, "camera", cameras=np.r_[0, 0, 0, 1, 1, 1])


def test_camera_sampler_fills_missing_batches_from_cameras_with_enough_images():
    # 8 + 7 + 7 images, batch 8: one whole batch of camera 0; the second and (without
    # drop_remainder) third come from camera 0 again: cameras 1 and 2 have too few images
    cameras = np.r_[np.zeros(8, int), np.full(7, 1), np.full(7, 2)]
    labels = np.arange(len(cameras))
    order = pipeline.epoch_order(labels, 8, 0, 0, "camera", cameras=cameras)
    assert len(order) == 16 and set(cameras[order]) == {0}
    order = pipeline.epoch_order(labels, 8, 0, 0, "camera", drop_remainder=False,
                                 cameras=cameras)
    assert len(order) == 24 and set(cameras[order]) == {0}


def test_camera_sampler_with_two_cameras_per_batch_gives_two_one_camera_groups():
    cameras = np.r_[np.zeros(20, int), np.ones(12, int), np.full(9, 5)]  # 41 images
    labels = np.arange(len(cameras))
    order = pipeline.epoch_order(labels, 8, 0, 0, "camera", cameras=cameras,
                                 cameras_per_batch=2)
    assert len(order) == 8 * pipeline.steps_per_epoch(41, 8) and len(set(order)) > 30
    groups = cameras[order].reshape(-1, 4)  # batch 8 = 2 consecutive groups of 4
    assert (groups == groups[:, :1]).all()
    assert len(set(groups[:, 0])) == 3
    with pytest.raises(ValueError, match="cameras_per_batch=3 must divide"):
        pipeline.epoch_order(labels, 8, 0, 0, "camera", cameras=cameras, cameras_per_batch=3)


def camera_pair_data():
    """Identities 0-9 seen twice by cameras 0 and 1, identities 5-14 once by camera 2."""
    labels = np.r_[np.repeat(np.arange(10), 4), np.arange(5, 15)]
    cameras = np.r_[np.tile([0, 0, 1, 1], 10), np.full(10, 2)]
    return labels, cameras


def test_camera_pairs_sampler_gives_the_same_identities_from_distinct_cameras():
    labels, cameras = camera_pair_data()
    seen = set()
    for epoch in range(20):
        order = pipeline.epoch_order(labels, 8, 0, epoch, "camera_pairs", cameras=cameras,
                                     cameras_per_batch=2)
        assert len(order) == 8 * pipeline.steps_per_epoch(len(labels), 8)
        groups_labels = labels[order].reshape(-1, 2, 4)  # batch 8 = 2 groups of 4
        groups_cameras = cameras[order].reshape(-1, 2, 4)
        np.testing.assert_array_equal(groups_labels[:, 0], groups_labels[:, 1])
        assert (groups_cameras == groups_cameras[:, :, :1]).all()
        assert (groups_cameras[:, 0, 0] != groups_cameras[:, 1, 0]).all()
        for batch in groups_labels[:, 0]:
            assert len(set(batch)) == 4
        seen |= {tuple(sorted(b[:, 0])) for b in groups_cameras}
    # cameras 0 and 2 share 5 identities and 1 and 2 too, 0 and 1 share 10: all can fill 4
    assert seen == {(0, 1), (0, 2), (1, 2)}
    again = pipeline.epoch_order(labels, 8, 0, 19, "camera_pairs", cameras=cameras,
                                 cameras_per_batch=2)
    np.testing.assert_array_equal(again, order)


def test_camera_pairs_sampler_visits_identities_in_rounds():
    # one camera pair sharing 10 identities, 4 per batch: a round ends inside the third batch,
    # whose leftovers open it; 5 batches visit 20 identities, two whole rounds
    labels, cameras = camera_pair_data()
    keep = cameras < 2
    order = pipeline.epoch_order(labels[keep], 8, 3, 0, "camera_pairs", cameras=cameras[keep],
                                 cameras_per_batch=2)
    firsts = labels[keep][order].reshape(-1, 2, 4)[:, 0]  # 5 batches
    for round_ in firsts.reshape(2, 10):
        assert sorted(round_) == list(range(10))
    # each (identity, camera) image drawn at random: both of an identity's images turn up
    assert len(set(order)) > len(set(labels[keep][order])) * 2


def test_camera_pairs_sampler_draws_only_cameras_sharing_enough_identities():
    # 6 identities per group: only cameras 0 and 1 share that many (10); 0-2 and 1-2 share 5
    labels, cameras = camera_pair_data()
    orders = [pipeline.epoch_order(labels, 12, 0, epoch, "camera_pairs", cameras=cameras,
                                   cameras_per_batch=2) for epoch in range(5)]
    assert all(set(cameras[o]) == {0, 1} for o in orders)
    assert not np.array_equal(orders[0], orders[1])


def test_camera_pairs_sampler_refuses_cameras_without_enough_shared_identities():
    labels, cameras = camera_pair_data()
    with pytest.raises(ValueError, match="all seen 11 identities"):
        pipeline.epoch_order(labels, 22, 0, 0, "camera_pairs", cameras=cameras,
                             cameras_per_batch=2)
    with pytest.raises(ValueError, match="no 4 of the 3 cameras"):
        pipeline.epoch_order(labels, 32, 0, 0, "camera_pairs", cameras=cameras,
                             cameras_per_batch=4)
    with pytest.raises(ValueError, match=r"at least 2 \(one group per camera\), not 1"):
        pipeline.epoch_order(labels, 8, 0, 0, "camera_pairs", cameras=cameras)
    with pytest.raises(ValueError, match="camera of every"):
        pipeline.epoch_order(labels, 8, 0, 0, "camera_pairs", cameras_per_batch=2)


def test_eval_dataset_preserves_order():
    table = numbered_table()
    rows = np.array([5, 2, 17, 0, 9, 23, 11])
    ds = pipeline.eval_dataset(table, rows, H, W, batch_size=3, cache=True)
    out = eval_batches(ds)
    assert [b.shape for b in out] == [(3, H, W, 3), (3, H, W, 3), (1, H, W, 3)]
    images = np.concatenate(out)
    assert images.dtype == np.float32
    np.testing.assert_array_equal(rows_of(images), rows)
    for image, row in zip(images, rows):
        np.testing.assert_array_equal(image, decoded(table, row))
    second = np.concatenate(eval_batches(ds))  # from the cache
    np.testing.assert_array_equal(second, images)
    everything = np.concatenate(eval_batches(pipeline.eval_dataset(table, None, H, W, 10)))
    np.testing.assert_array_equal(rows_of(everything), np.arange(24))


def test_works_with_a_distribution_strategy():
    table = numbered_table()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    ds = pipeline.train_dataset(table, table.pids - 1, H, W, 4, 0, 0, pipeline.AugmentConfig(pad=1),
                                cache_decoded=pipeline.DecodedCache())
    images, labels = next(iter(strategy.experimental_distribute_dataset(ds)))
    assert images.shape == (4, H, W, 3) and labels.dtype == tf.int32


def test_bad_arguments_are_refused():
    table = numbered_table()
    with pytest.raises(ValueError, match="labels"):
        pipeline.train_dataset(table, np.zeros(3), H, W, 4, 0, 0)
    with pytest.raises(ValueError, match="sampler"):
        pipeline.train_dataset(table, table.pids - 1, H, W, 4, 0, 0, sampler="balanced")
    with pytest.raises(ValueError, match="erasing_area"):
        pipeline.AugmentConfig(erasing_area=(0.5, 0.1))
    with pytest.raises(ValueError, match="color_jitter=1.5"):
        pipeline.AugmentConfig(color_jitter=1.5)
