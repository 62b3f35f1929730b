"""VIPeR builder on a full-size generated release (632 pairs of tiny BMPs)."""
import os

import numpy as np
import pytest
import tensorflow as tf

import fixtures_release as fr
from jlml_tf_datasets import viper
from jlml_tf_datasets.release import ReleaseError


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


def test_bmp_images_decode(loaded):
    for data in loaded.table.images[:3]:
        assert data[:2] == b"BM"
        image = tf.io.decode_image(data)
        assert image.dtype == tf.uint8 and tuple(image.shape) == (8, 4, 3)


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
