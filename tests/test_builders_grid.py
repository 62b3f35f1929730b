"""GRID builder on a full-size generated release (250 pairs + 775 distractors, tiny images)."""
import json
import os
import shutil

import numpy as np
import pytest

import fixtures_release as fr
from jlml_tf_datasets import grid
from jlml_tf_datasets.release import ReleaseError

SPLITS = fr.grid_splits()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    manual = tmp_path_factory.mktemp("grid_manual")
    root = fr.make_grid(manual)
    fr.write_grid_partitions(root / "features_and_partitions.mat", SPLITS)
    return manual, root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("grid_data"))


@pytest.fixture(scope="module")
def official(release, data_dir):
    manual, _ = release
    return grid.load(data_dir=data_dir, manual_dir=str(manual))


def test_table_probe_gallery_and_cameras(official):
    table = official.table
    assert len(table) == 1275
    probe = np.char.startswith(table.filenames.astype(str), "probe/")
    assert probe.sum() == 250 and np.sum(table.pids[~probe] == 0) == 775
    assert not np.any(table.pids[probe] == 0)
    assert set(table.camids.tolist()) <= set(range(1, 9))
    for name, pid, camid in zip(table.filenames, table.pids, table.camids):
        pid_text, cam_text = os.path.basename(name).split("_")[:2]
        assert (pid, camid) == (int(pid_text), int(cam_text))


def test_official_splits(official, release):
    table = official.table
    assert len(official.trials) == 10
    assert official.info["splits_source"].endswith("features_and_partitions.mat")
    distractors = set(np.flatnonzero(table.pids == 0).tolist())
    for trial, train_ids in zip(official.trials, SPLITS):
        test_ids = sorted(set(range(1, 251)) - set(train_ids))
        assert sorted(np.unique(table.pids[trial.train]).tolist()) == train_ids
        assert len(trial.train) == 250  # one probe and one gallery image per training id
        assert sorted(table.pids[trial.query].tolist()) == test_ids
        assert all(f.startswith("probe/") for f in table.filenames[trial.query])
        assert len(trial.gallery) == 900
        assert distractors <= set(trial.gallery.tolist())
        assert sorted(set(table.pids[trial.gallery].tolist()) - {0}) == test_ids
        assert all(f.startswith("gallery/") for f in table.filenames[trial.gallery])


def test_json_splits_override(official, release, data_dir, tmp_path):
    manual, _ = release
    other = fr.grid_splits(seed=7)[:3]
    path = tmp_path / "splits.json"
    fr.write_grid_splits_json(path, other)
    with pytest.raises(ReleaseError, match="expected 10 splits, found 3"):
        grid.load(data_dir=data_dir, manual_dir=str(manual), splits=str(path))
    data = grid.load(data_dir=data_dir, manual_dir=str(manual), splits=str(path),
                     check_counts=False)
    assert len(data.trials) == 3 and data.info["splits_source"] == str(path)
    for trial, train_ids in zip(data.trials, other):
        assert sorted(np.unique(data.table.pids[trial.train]).tolist()) == train_ids


def test_json_split_without_test_ids_means_all_others(release, data_dir, tmp_path):
    manual, _ = release
    path = tmp_path / "splits.json"
    path.write_text(json.dumps([{"train_ids": ids} for ids in SPLITS]))
    data = grid.load(data_dir=data_dir, manual_dir=str(manual), splits=str(path), num_trials=2)
    assert len(data.trials) == 2 and len(data.trials[1].query) == 125


def test_bad_json_splits(release, data_dir, tmp_path):
    manual, _ = release
    path = tmp_path / "splits.json"
    path.write_text(json.dumps([{"train_ids": [1, 2, 3], "test_ids": [3, 4]}]))
    with pytest.raises(ReleaseError, match=r"split 0 has identities \[3\] in both"):
        grid.load(data_dir=data_dir, manual_dir=str(manual), splits=str(path), check_counts=False)
    path.write_text(json.dumps([{"train_ids": [1, 999]}]))
    with pytest.raises(ReleaseError, match=r"identities \[999\] that are not in the release"):
        grid.load(data_dir=data_dir, manual_dir=str(manual), splits=str(path), check_counts=False)
    path.write_text("{not json")
    with pytest.raises(ReleaseError, match="cannot read GRID splits"):
        grid.load(data_dir=data_dir, manual_dir=str(manual), splits=str(path))


def test_read_partitions_accepts_structs_and_plain_cells(tmp_path):
    fr.write_grid_partitions(tmp_path / "a.mat", SPLITS[:2], as_struct=True)
    fr.write_grid_partitions(tmp_path / "b.mat", SPLITS[:2], as_struct=False)
    assert grid.read_partitions(str(tmp_path / "a.mat"), "a") == SPLITS[:2]
    assert grid.read_partitions(str(tmp_path / "b.mat"), "b") == SPLITS[:2]
    import scipy.io
    scipy.io.savemat(str(tmp_path / "c.mat"), {"testIdxAll": np.zeros(3)})
    with pytest.raises(ReleaseError, match="has no field trainIdxAll"):
        grid.read_partitions(str(tmp_path / "c.mat"), "c")


@pytest.fixture
def copy(release, tmp_path):
    _, root = release
    manual = tmp_path / "manual"
    return manual, fr.copy_tree(root, manual / "underground_reid")


def test_without_any_splits_the_error_names_the_mat(copy, tmp_path):
    manual, root = copy
    (root / "features_and_partitions.mat").unlink()
    with pytest.raises(ReleaseError, match="features_and_partitions.mat.*splits="):
        grid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))


def test_zip_release(copy, tmp_path, official):
    manual, root = copy
    zips = tmp_path / "zips"
    zips.mkdir()
    fr.zip_tree(root, zips / "underground_reid.zip")
    data = grid.load(data_dir=str(tmp_path / "d"), manual_dir=str(zips), num_trials=1)
    assert data.info["release"].endswith("underground_reid.zip:underground_reid")
    assert data.info["splits_source"].endswith(
        "underground_reid.zip:underground_reid/features_and_partitions.mat")
    assert np.array_equal(data.trials[0].query, official.trials[0].query)


def test_missing_release(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ReleaseError) as err:
        grid.load(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m"))
    assert os.path.join(str(tmp_path / "m"), "underground_reid.zip") in str(err.value)


def test_wrong_counts(copy, tmp_path):
    manual, root = copy
    victim = sorted((root / "gallery").glob("0000_*"))[0]
    victim.unlink()
    with pytest.raises(ReleaseError, match="expected 1025 gallery images, found 1024"):
        grid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))


def test_distractor_in_probe_and_duplicate_probe(copy, tmp_path):
    manual, root = copy
    bad = root / "probe" / fr.grid_name(0, 2, 5)
    fr.write_image(bad, 1)
    with pytest.raises(ReleaseError, match=rf"unexpected file .*{bad.name}.*distractors"):
        grid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    bad.unlink()
    twin = root / "probe" / fr.grid_name(7, 3, 1)
    fr.write_image(twin, 2)
    with pytest.raises(ReleaseError, match=r"duplicate file .*identity 7") as err:
        grid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    assert twin.name in str(err.value)


def test_bad_name_and_corrupt_image(copy, tmp_path):
    manual, root = copy
    odd = root / "gallery" / "0001_9_1_2_3_4_5.jpeg"  # camera 9 does not exist
    fr.write_image(odd, 1)
    with pytest.raises(ReleaseError, match=rf"unexpected file .*{odd.name}.*camera 1-8"):
        grid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    odd.unlink()
    victim = sorted((root / "probe").iterdir())[10]
    victim.write_bytes(b"\xff\xd8\xff\xe0 garbage")
    with pytest.raises(ReleaseError, match=rf"corrupt or truncated image .*{victim.name}"):
        grid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))


def test_identity_only_in_probe(copy, tmp_path):
    manual, root = copy
    victim = sorted((root / "gallery").glob("0005_*"))[0]
    shutil.move(victim, tmp_path / victim.name)
    fr.write_image(root / "gallery" / fr.grid_name(251, 6, 999999), 3)  # keep 1025 images
    with pytest.raises(ReleaseError, match=r"identities \[5, 251\] are in only one of"):
        grid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    data = grid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual), check_counts=False)
    assert 5 not in data.table.pids[data.trials[0].gallery]


def test_train_all_protocol_leaves_out_the_distractors(release, data_dir):
    manual, _ = release
    data = grid.load("train_all", data_dir=data_dir, manual_dir=str(manual))
    (trial,) = data.trials
    pids = data.table.pids[trial.train]
    assert len(trial.train) == 500 and len(np.unique(pids)) == 250 and pids.min() > 0
    assert len(trial.query) == 0 and len(trial.gallery) == 0
