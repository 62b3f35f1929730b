"""The builders on the real images in ../shared/data (GRID, CUHK01, CUHK03 camera pair 1, VIPeR,
CAVIAR4REID).

Skipped when that folder is absent. Each data set is built once per module into a temporary
data_dir; nothing from the real data is written into the project.
"""
import collections
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import REAL_DATA
from jlml_tf.data import pipeline, preprocessing
from jlml_tf.data.types import UNKNOWN_CAMERA
from jlml_tf_datasets import caviar4reid, cuhk01, cuhk03, folder, grid, viper

pytestmark = pytest.mark.real_data


def _need_real_data():
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("real_builds"))


@pytest.fixture(scope="module")
def grid_data(data_dir):
    _need_real_data()
    return grid.load(data_dir=data_dir, manual_dir=str(REAL_DATA / "grid"),
                     splits=str(REAL_DATA / "grid" / "splits_tfusion.json"))


@pytest.fixture(scope="module")
def cuhk01_data(data_dir):
    _need_real_data()
    return {p: cuhk01.load(p, data_dir=data_dir, manual_dir=str(REAL_DATA / "cuhk01"))
            for p in ("485_486_single_shot", "871_100_multi_shot")}


@pytest.fixture(scope="module")
def cuhk03_data(data_dir):
    _need_real_data()
    return cuhk03.load("market_layout", data_dir=data_dir, manual_dir=str(REAL_DATA))


@pytest.fixture(scope="module")
def viper_data(data_dir):
    _need_real_data()
    return viper.load(data_dir=data_dir, manual_dir=str(REAL_DATA / "viper"))


@pytest.fixture(scope="module")
def caviar_data(data_dir):
    _need_real_data()
    return {p: caviar4reid.load(p, data_dir=data_dir, manual_dir=str(REAL_DATA / "caviar4reid"))
            for p in caviar4reid.PROTOCOLS}


def _check_decoded(table, rows, root):
    """A decoded batch: HxWx3 uint8 of the size PIL reports for the file on disk."""
    for row in rows:
        image = tf.io.decode_image(table.images[row], channels=0)
        assert image.dtype == tf.uint8 and image.shape[-1] == 3
        with Image.open(os.path.join(root, table.filenames[row])) as original:
            assert tuple(image.shape[:2]) == (original.height, original.width)


def test_grid_counts_cameras_and_splits(real_data_dir, grid_data):
    table = grid_data.table
    probe = np.char.startswith(table.filenames.astype(str), "probe/")
    assert len(table) == 1275 and probe.sum() == 250
    assert np.sum(table.pids[~probe] == 0) == 775
    assert sorted(set(table.pids[probe].tolist())) == list(range(1, 251))
    assert set(table.camids.tolist()) <= set(range(1, 9)) and len(set(table.camids.tolist())) >= 5
    probe_cam = dict(zip(table.pids[probe].tolist(), table.camids[probe].tolist()))
    matched = ~probe & (table.pids > 0)
    for pid, cam in zip(table.pids[matched].tolist(), table.camids[matched].tolist()):
        assert probe_cam[pid] < cam  # the README: the lower camera number is the probe
    assert grid_data.info["counts_checked"] and grid_data.info["num_distractors"] == 775
    assert len(grid_data.trials) == 10
    for trial in grid_data.trials:
        assert len(np.unique(table.pids[trial.train])) == 125 and len(trial.train) == 250
        assert len(trial.query) == 125 and len(trial.gallery) == 900
        assert set(table.pids[trial.train].tolist()).isdisjoint(table.pids[trial.query].tolist())
        assert np.sum(table.pids[trial.gallery] == 0) == 775
    root = real_data_dir / "grid" / "underground_reid"
    _check_decoded(table, grid_data.trials[0].query[:4], root)
    _check_decoded(table, grid_data.trials[0].gallery[-4:], root)


def test_cuhk01_counts_cameras_and_splits(real_data_dir, cuhk01_data):
    single = cuhk01_data["485_486_single_shot"]
    table = single.table
    assert len(table) == 3884 and len(np.unique(table.pids)) == 971
    assert collections.Counter(table.camids.tolist()) == {1: 1942, 2: 1942}
    for trial in single.trials:
        assert len(np.unique(table.pids[trial.train])) == 485
        assert len(trial.query) == 486 and len(trial.gallery) == 486
        assert set(table.pids[trial.train].tolist()).isdisjoint(table.pids[trial.query].tolist())
    multi = cuhk01_data["871_100_multi_shot"]
    assert all(len(t.query) == 100 and len(t.gallery) == 200 for t in multi.trials)
    _check_decoded(table, single.trials[0].query[:6], real_data_dir / "cuhk01")
    image = tf.io.decode_image(table.images[0])
    assert tuple(image.shape) == (160, 60, 3)


def test_cuhk03_market_layout_subset(real_data_dir, cuhk03_data):
    trial, = cuhk03_data.trials
    table = cuhk03_data.table
    counts = {name: (len(rows), len(np.unique(table.pids[rows])))
              for name, rows in (("train", trial.train), ("query", trial.query),
                                 ("gallery", trial.gallery))}
    assert counts == {"train": (7239, 743), "query": (200, 100), "gallery": (738, 100)}
    # pids 0001-0743 train (0001-0300 the earlier subset, unchanged), 0744-0843 test
    assert np.array_equal(np.unique(table.pids[trial.train]), np.arange(1, 744))
    assert np.array_equal(np.unique(table.pids[trial.query]), np.arange(744, 844))
    assert set(table.camids.tolist()) == {1, 2}
    assert set(table.pids[trial.train].tolist()).isdisjoint(table.pids[trial.query].tolist())
    # one query per identity and camera
    pairs = collections.Counter(zip(table.pids[trial.query].tolist(),
                                    table.camids[trial.query].tolist()))
    assert set(pairs.values()) == {1} and len(pairs) == 200
    _check_decoded(table, trial.query[:4], real_data_dir / "cuhk03_pair1_market")


def test_cuhk03_subset_through_the_folder_data_set(real_data_dir, cuhk03_data, data_dir):
    data = folder.load(data_dir=data_dir, manual_dir=str(real_data_dir / "cuhk03_pair1_market"))
    assert data.info["counts"] == cuhk03_data.info["counts"]
    assert np.array_equal(data.table.filenames, cuhk03_data.table.filenames)
    assert data.same_camera_junk


def test_viper_counts_cameras_and_trials(viper_data):
    table = viper_data.table
    assert len(table) == 1264 and len(np.unique(table.pids)) == 632
    assert collections.Counter(table.camids.tolist()) == {1: 632, 2: 632}
    for cam in (1, 2):
        assert sorted(table.pids[table.camids == cam].tolist()) == sorted(np.unique(table.pids))
    assert viper_data.info["counts_checked"] and viper_data.info["skipped_corrupt"] == 0
    assert len(viper_data.trials) == 10
    for trial in viper_data.trials:
        assert len(np.unique(table.pids[trial.train])) == 316 and len(trial.train) == 632
        assert len(trial.query) == 316 and len(trial.gallery) == 316
        assert set(table.pids[trial.train].tolist()).isdisjoint(table.pids[trial.query].tolist())


def test_viper_every_image_decodes_with_the_release_pixels(real_data_dir, viper_data):
    """Most release BMPs carry 2 bytes after the pixel data, which tf.io.decode_image rejects;
    the table holds PNGs with the same pixels, which the project's decoder reads."""
    table = viper_data.table
    assert all(data[:4] == b"\x89PNG" for data in table.images)
    decoded = pipeline.decode_all(table, 128, 48)  # the release size: no resampling
    root = real_data_dir / "viper" / "VIPeR"
    for row in range(len(table)):
        with Image.open(root / table.filenames[row]) as original:
            assert original.format == "BMP" and original.size == (48, 128)
            assert np.array_equal(decoded[row], np.asarray(original.convert("RGB"))), \
                table.filenames[row]
    # the tools (search, embed, export --camera_bn_images) read the release files themselves
    sample = range(0, len(table), 50)
    files = [root / table.filenames[row] for row in sample]
    np.testing.assert_array_equal(preprocessing.load_images(files, 128, 48), decoded[sample])


def test_lomo_in_the_graph_stays_near_the_numpy_lomo_on_viper(viper_data):
    """Every real image has a few pixels on one of LOMO's quantisation steps (a hue, saturation
    or grey value that float32 and float64 round to different sides), so no vector is equal,
    but each stays within a cosine of 0.999 of the NumPy one (0.9994 at worst, measured)."""
    from jlml_tf.features import lomo, lomo_graph

    cfg = lomo.LomoConfig(retinex="none")
    images = pipeline.decode_all(viper_data.table, 128, 48)[:64]
    got, want = lomo_graph.lomo(images, cfg).numpy(), lomo.lomo(images, cfg)
    cosine = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1)
                                           * np.linalg.norm(want, axis=1))
    assert cosine.min() > 0.999


def test_caviar4reid_counts_cameras_and_trials(caviar_data):
    data = caviar_data["25_25_multi_shot"]
    table = data.table
    per_id = collections.Counter(table.pids.tolist())
    assert len(table) == 1220 and len(per_id) == 72
    assert collections.Counter(per_id.values()) == {20: 50, 10: 22}
    assert data.info["counts_checked"] and data.info["skipped_corrupt"] == 0
    two_camera = {p for p, n in per_id.items() if n == 20}
    for pid, camid in zip(table.pids.tolist(), table.camids.tolist()):
        assert camid in ((1, 2) if pid in two_camera else (UNKNOWN_CAMERA,))
    assert collections.Counter(table.camids.tolist()) == {1: 500, 2: 500, UNKNOWN_CAMERA: 220}
    # the README's one pair of byte-identical images of one person: kept and reported
    pair, = data.info["identical_images"]
    assert len(pair) == 2 and len({name[:-7] for name in pair}) == 1
    assert len(data.trials) == 10
    for trial in data.trials:
        assert set(table.pids[trial.train].tolist()) | set(table.pids[trial.query].tolist()) \
            == two_camera
        assert len(trial.train) == 500 and len(trial.query) == 250 and len(trial.gallery) == 250
    train, = caviar_data["train_all"].trials
    assert len(train.train) == 1220 and len(train.query) == len(train.gallery) == 0


def test_caviar4reid_every_image_decodes(real_data_dir, caviar_data):
    table = caviar_data["train_all"].table
    root = real_data_dir / "caviar4reid" / "CAVIAR4REID"
    sizes = set()
    for row in range(len(table)):
        image = tf.io.decode_image(table.images[row], channels=0)
        with Image.open(root / table.filenames[row]) as original:
            assert tuple(image.shape) == (original.height, original.width, 3), table.filenames[row]
            sizes.add(original.size)
    assert len(sizes) > 100  # sizes vary
    decoded = pipeline.decode_all(table, 128, 48)  # the training/evaluation/serving decoder
    assert decoded.shape == (1220, 128, 48, 3)
