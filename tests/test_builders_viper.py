"""VIPeR builder on a full-size generated release (632 pairs of tiny BMPs)."""
import os
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import fixtures_release as fr
from jlml_tf.data import pipeline
from jlml_tf_datasets import viper
from jlml_tf_datasets.release import ReleaseError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    manual = tmp_path_factory.mktemp("viper_manual")
    return manual, fr.make_viper(manual)


@pytest.fixture(scope="module")
def loaded(release, tmp_path_factory):
    manual, _ = release
    return viper.load(data_dir=str(tmp_path_factory.mktemp("viper_data")), manual_dir=str(manual))


def test_table_pids_are_the_numbers_plus_one(loaded, release):
    _, files = release
    table = loaded.table
    assert len(table) == 1264
    assert sorted(np.unique(table.pids).tolist()) == [n + 1 for n in files["numbers"]]
    assert 0 not in table.pids  # person 000 is not the distractor pid
    for name, pid, camid in zip(table.filenames, table.pids, table.camids):
        folder, base = name.split("/")
        assert pid == int(base[:3]) + 1 and camid == {"cam_a": 1, "cam_b": 2}[folder]


def test_images_are_stored_as_png_with_the_bmp_pixels(loaded, release):
    _, files = release
    root = files["root"]
    assert viper.Viper.VERSION == "1.1.0"  # 1.0.0 caches held the BMPs and are not reused
    for row in (0, 1, 631, 632, 1263):
        data = loaded.table.images[row]
        assert data[:8] == PNG_SIGNATURE
        image = tf.io.decode_image(data)
        assert image.dtype == tf.uint8 and tuple(image.shape) == (8, 4, 3)
        with Image.open(root / loaded.table.filenames[row]) as original:
            assert np.array_equal(image.numpy(), np.asarray(original.convert("RGB")))


def _append_bytes_to_bmp(path, extra: bytes = b"\x00\x00") -> None:
    """Like most release BMPs: bytes after the pixel data, counted in the header's file size
    (bfSize) and image size (biSizeImage)."""
    data = bytearray(path.read_bytes() + extra)
    data[2:6] = struct.pack("<I", len(data))
    data[34:38] = struct.pack("<I", struct.unpack("<I", data[34:38])[0] + len(extra))
    path.write_bytes(bytes(data))


def test_bmps_with_trailing_bytes_are_stored_decodable(tmp_path):
    manual = tmp_path / "manual"
    files = fr.make_viper(manual, num_ids=6)
    padded = sorted((files["root"] / "cam_a").iterdir())[:4] + sorted(
        (files["root"] / "cam_b").iterdir())[1:3]
    for path in padded:
        _append_bytes_to_bmp(path)
    raw = padded[0].read_bytes()
    with Image.open(padded[0]) as im:  # PIL reads the file ...
        assert im.size == (4, 8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="differ by 2"):
        tf.io.decode_image(raw)  # ... TensorFlow's BMP decoder does not
    data = viper.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual), check_counts=False,
                      num_train_ids=3, num_test_ids=3, num_trials=1)
    table = data.table
    assert len(table) == 12 and data.info["skipped_corrupt"] == 0
    decoded = pipeline.decode_all(table, 8, 4)  # the training/evaluation/serving decoder
    for row, name in enumerate(table.filenames):
        with Image.open(files["root"] / name) as original:
            assert np.array_equal(decoded[row], np.asarray(original.convert("RGB")))
    pixels = pipeline.decode_and_resize(tf.constant(table.images[0]), 8, 4)
    assert pixels.shape == (8, 4, 3)


def test_trials(loaded):
    table = loaded.table
    assert loaded.protocol == "316_316" and len(loaded.trials) == 10
    for t, trial in enumerate(loaded.trials):
        train_ids = np.unique(table.pids[trial.train])
        assert len(train_ids) == 316 and len(trial.train) == 632
        assert len(trial.query) == 316 and len(trial.gallery) == 316
        assert (table.camids[trial.query] == 1).all() and (table.camids[trial.gallery] == 2).all()
        assert np.array_equal(np.sort(table.pids[trial.query]), np.sort(table.pids[trial.gallery]))
        assert not set(train_ids.tolist()) & set(table.pids[trial.query].tolist())
        perm = np.random.default_rng(t).permutation(np.unique(table.pids))
        assert set(table.pids[trial.query].tolist()) == set(perm[316:632].tolist())
    assert not np.array_equal(loaded.trials[0].query, loaded.trials[1].query)


@pytest.fixture
def copy(release, tmp_path):
    _, files = release
    manual = tmp_path / "manual"
    return manual, fr.copy_tree(files["root"], manual / "VIPeR")


def test_person_in_one_camera_only(copy, tmp_path):
    manual, root = copy
    victim = sorted((root / "cam_b").iterdir())[3]
    number = victim.name[:3]
    victim.unlink()
    spare = next(n for n in range(874) if not any(
        p.name.startswith(f"{n:03d}_") for p in (root / "cam_a").iterdir()))
    fr.write_image(root / "cam_b" / f"{spare:03d}_90.bmp", 1)
    with pytest.raises(ReleaseError, match=rf"persons .*'{number}'.* only one of cam_a/"):
        viper.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))


def test_two_images_of_a_person_in_one_camera(copy, tmp_path):
    manual, root = copy
    first = sorted((root / "cam_a").iterdir())[0]
    fr.write_image(root / "cam_a" / f"{first.name[:3]}_999.bmp", 1)
    with pytest.raises(ReleaseError, match=rf"duplicate file .*cam_a/.*person {first.name[:3]}"):
        viper.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual), check_counts=False)


def test_bad_name_count_and_corrupt(copy, tmp_path):
    manual, root = copy
    fr.write_image(root / "cam_a" / "12_45.bmp", 1)
    with pytest.raises(ReleaseError, match=r"unexpected file .*cam_a/12_45\.bmp.*000_45\.bmp"):
        viper.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    (root / "cam_a" / "12_45.bmp").unlink()
    sorted((root / "cam_a").iterdir())[5].unlink()
    with pytest.raises(ReleaseError, match="cam_a: expected 632 images, found 631"):
        viper.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    victim = sorted((root / "cam_b").iterdir())[0]
    fr.truncate(victim, keep=0.4)
    with pytest.raises(ReleaseError, match=rf"corrupt or truncated image .*{victim.name}"):
        viper.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual), check_counts=False)


def test_zip_and_missing_release(copy, tmp_path):
    manual, root = copy
    zips = tmp_path / "zips"
    zips.mkdir()
    fr.zip_tree(root, zips / "VIPeR.v1.0.zip")
    data = viper.load(data_dir=str(tmp_path / "d"), manual_dir=str(zips), num_trials=1)
    assert len(data.trials) == 1 and len(data.table) == 1264
    (tmp_path / "none").mkdir()
    with pytest.raises(ReleaseError) as err:
        viper.load(data_dir=str(tmp_path / "d2"), manual_dir=str(tmp_path / "none"))
    assert os.path.join(str(tmp_path / "none"), "VIPeR.v1.0.zip") in str(err.value)


def test_train_all_protocol_trains_on_both_cameras_of_every_person(release, tmp_path):
    manual, _ = release
    data = viper.load("train_all", data_dir=str(tmp_path), manual_dir=str(manual))
    (trial,) = data.trials
    assert len(trial.train) == 1264 and len(np.unique(data.table.pids[trial.train])) == 632
    assert len(trial.query) == 0 and len(trial.gallery) == 0
