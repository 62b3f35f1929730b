"""CUHK01 builder on a full-size generated release (971 ids x 4 tiny images)."""
import os

import numpy as np
import pytest
import tensorflow as tf

import fixtures_release as fr
from jlml_tf_datasets import cuhk01
from jlml_tf_datasets.release import ReleaseError


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    manual = tmp_path_factory.mktemp("cuhk01_manual")
    campus = fr.make_cuhk01(manual, folder="CUHK01")
    return manual, campus


@pytest.fixture(scope="module")
def loaded(release, tmp_path_factory):
    manual, _ = release
    data_dir = str(tmp_path_factory.mktemp("cuhk01_data"))
    return {p: cuhk01.load(p, data_dir=data_dir, manual_dir=str(manual)) for p in cuhk01.PROTOCOLS}


def test_table_holds_the_whole_release(loaded):
    data = loaded["871_100_single_shot"]
    table = data.table
    assert len(table) == 3884 and len(np.unique(table.pids)) == 971
    assert data.info["counts_checked"] is True
    for name, pid, camid in zip(table.filenames, table.pids, table.camids):
        base = os.path.basename(name)
        assert pid == int(base[:4]) and camid == (1 if int(base[4:7]) <= 2 else 2)
    image = tf.io.decode_png(table.images[0])
    assert tuple(image.shape) == (8, 4, 3)


@pytest.mark.parametrize("protocol,n_train,n_test,multi", [
    ("871_100_single_shot", 871, 100, False), ("871_100_multi_shot", 871, 100, True),
    ("485_486_single_shot", 485, 486, False), ("485_486_multi_shot", 485, 486, True)])
def test_protocol_split_sizes_and_views(loaded, protocol, n_train, n_test, multi):
    data = loaded[protocol]
    table = data.table
    assert len(data.trials) == 10
    gallery_counts = np.unique(table.pids[data.trials[0].gallery], return_counts=True)[1]
    assert bool(gallery_counts.max() > 1) == multi
    for trial in data.trials:
        train_ids = np.unique(table.pids[trial.train])
        query_ids = table.pids[trial.query]
        assert len(train_ids) == n_train and len(trial.train) == 4 * n_train
        assert len(trial.query) == n_test and len(np.unique(query_ids)) == n_test
        assert len(trial.gallery) == (2 if multi else 1) * n_test
        assert set(table.pids[trial.gallery].tolist()) == set(query_ids.tolist())
        assert not set(train_ids.tolist()) & set(query_ids.tolist())
        assert (table.camids[trial.query] == 1).all() and (table.camids[trial.gallery] == 2).all()


def test_trials_differ_and_single_multi_share_ids_and_probes(loaded):
    single, multi = loaded["485_486_single_shot"], loaded["485_486_multi_shot"]
    for a, b in zip(single.trials, multi.trials):
        assert np.array_equal(a.train, b.train) and np.array_equal(a.query, b.query)
        assert set(a.gallery.tolist()) < set(b.gallery.tolist())
    first = set(single.table.pids[single.trials[0].query].tolist())
    assert any(set(single.table.pids[t.query].tolist()) != first for t in single.trials[1:])


def test_splits_are_reproducible_from_the_documented_seed(loaded, release, tmp_path):
    data = loaded["871_100_single_shot"]
    rng = np.random.default_rng(3)
    perm = rng.permutation(np.arange(1, 972))
    assert set(data.table.pids[data.trials[3].query].tolist()) == set(perm[871:971].tolist())
    manual, _ = release
    again = cuhk01.load("871_100_single_shot", data_dir=os.path.dirname(os.path.dirname(
        data.info["prepared_at"])), manual_dir=str(manual), num_trials=2)
    assert len(again.trials) == 2
    assert np.array_equal(again.trials[1].gallery, data.trials[1].gallery)


@pytest.fixture
def small(tmp_path):
    manual = tmp_path / "manual"
    campus = fr.make_cuhk01(manual, num_ids=12)
    return manual, campus


def test_subset_with_overridden_split_sizes(small, tmp_path):
    manual, _ = small
    data = cuhk01.load("485_486_multi_shot", data_dir=str(tmp_path / "d"), manual_dir=str(manual),
                       check_counts=False, num_train_ids=7, num_test_ids=5)
    assert all(len(t.query) == 5 and len(t.gallery) == 10 and len(t.train) == 28
               for t in data.trials)
    with pytest.raises(ReleaseError, match="cannot split 12 identities into 485"):
        cuhk01.load("485_486_multi_shot", data_dir=str(tmp_path / "d"), manual_dir=str(manual),
                    check_counts=False)


def test_counts_checked_by_default(small, tmp_path):
    manual, campus = small
    with pytest.raises(ReleaseError, match=rf"{campus}: expected 3884 images, found 48"):
        cuhk01.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))


def test_identity_with_missing_image(release, tmp_path):
    _, campus = release
    manual = tmp_path / "manual"
    copy = fr.copy_tree(campus, manual / "campus")
    (copy / "0005003.png").unlink()
    fr.write_image(copy / "0972001.png", 1)  # keeps the image count at 3884
    with pytest.raises(ReleaseError, match="expected 971 identities, found 972"):
        cuhk01.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))


def test_bad_name_duplicate_and_corrupt_image(small, tmp_path):
    manual, campus = small
    fr.write_image(campus / "0001005.png", 1)
    with pytest.raises(ReleaseError, match=r"unexpected file .*campus/0001005\.png.*001-004"):
        cuhk01.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual), check_counts=False)
    (campus / "0001005.png").unlink()
    (campus / "0001001.PNG").write_bytes((campus / "0001001.png").read_bytes())
    with pytest.raises(ReleaseError, match=r"duplicate file .*0001001"):
        cuhk01.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual), check_counts=False)
    (campus / "0001001.PNG").unlink()
    fr.truncate(campus / "0002003.png", keep=0.3)
    with pytest.raises(ReleaseError, match=r"corrupt or truncated image .*campus/0002003\.png"):
        cuhk01.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual), check_counts=False)


def test_zip_release_and_missing_release(small, tmp_path):
    manual, campus = small
    zips = tmp_path / "zips"
    zips.mkdir()
    fr.zip_tree(campus, zips / "CUHK01.zip")
    data = cuhk01.load(data_dir=str(tmp_path / "d"), manual_dir=str(zips), check_counts=False,
                       num_train_ids=6, num_test_ids=6, num_trials=1)
    assert len(data.table) == 48 and data.info["release"].endswith("CUHK01.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReleaseError) as err:
        cuhk01.load(data_dir=str(tmp_path / "d2"), manual_dir=str(tmp_path / "empty"))
    assert os.path.join(str(tmp_path / "empty"), "CUHK01.zip") in str(err.value)


def test_train_all_protocol_trains_on_every_identity(loaded):
    data = loaded["train_all"]
    (trial,) = data.trials
    assert len(trial.train) == 3884 and len(np.unique(data.table.pids[trial.train])) == 971
    assert len(trial.query) == 0 and len(trial.gallery) == 0
