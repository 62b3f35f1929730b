"""CUHK03 builder: a small MATLAB v7.3 cuhk-03.mat, new-protocol configs, the Market layout."""
import os

import numpy as np
import pytest
import tensorflow as tf

import fixtures_release as fr
from jlml_tf_datasets import cuhk03
from jlml_tf_datasets import release as rl
from jlml_tf_datasets.release import ReleaseError

PAIRS = (4, 3, 3, 2, 2)
EMPTY = {("labeled", 1, 2, 7), ("detected", 2, 3, 0)}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    manual = tmp_path_factory.mktemp("cuhk03_manual")
    mat = fr.make_cuhk03_mat(manual / "cuhk03_release" / "cuhk-03.mat", PAIRS, empty=EMPTY)
    config = fr.make_cuhk03_new_config(
        manual / "cuhk03_new_protocol_config_labeled.mat", PAIRS, empty=EMPTY, source="labeled")
    return manual, mat, config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cuhk03_data"))


@pytest.fixture(scope="module")
def classic(release, data_dir):
    manual, _, _ = release
    return cuhk03.load("classic_labeled", data_dir=data_dir, manual_dir=str(manual),
                       check_counts=False)


def _person(pid):
    offsets = np.concatenate([[0], np.cumsum(PAIRS)])
    pair = int(np.searchsorted(offsets, pid, side="left"))
    return pair, int(pid - offsets[pair - 1])


def test_protocols():
    assert set(cuhk03.PROTOCOLS) == {"classic_labeled", "classic_detected", "new_labeled",
                                     "new_detected", "market_layout"}


def test_all_images_read_with_pids_cameras_and_missing_cells(classic, release):
    _, mat, _ = release
    table = classic.table
    assert len(table) == mat["images"]["labeled"] == sum(PAIRS) * 10 - 1
    assert classic.info["missing_cells"] == 1
    assert "labeled/1_002_2_08.png" not in set(table.filenames)  # the empty cell
    assert np.array_equal(np.unique(table.pids), np.arange(1, sum(PAIRS) + 1))
    for name, pid, camid in zip(table.filenames, table.pids, table.camids):
        pair, index, view, _ = os.path.basename(name)[:-4].split("_")
        assert _person(pid) == (int(pair), int(index))
        assert camid == 2 * (int(pair) - 1) + int(view)


def test_images_are_png_in_matlab_orientation(classic):
    table = classic.table
    for row in range(0, len(table), 7):
        name = os.path.basename(table.filenames[row])
        pair, index, _, number = (int(x) for x in name[:-4].split("_"))
        column = number - 1
        image = tf.io.decode_png(table.images[row]).numpy()
        # fixture images are taller than wide: a transposed read would show (W, H, 3)
        assert image.shape == (*fr.cuhk03_image_shape("labeled", pair, index, column), 3)
        assert image[0, 0].tolist() == [pair, index, column]


def test_classic_trials_follow_the_test_sets(classic, release):
    _, mat, _ = release
    table = classic.table
    assert len(classic.trials) == len(mat["testsets"]) == 3
    view = (table.camids - 1) % 2 + 1
    for trial, testset in zip(classic.trials, mat["testsets"]):
        test_people = sorted(testset)
        assert sorted(_person(p) for p in table.pids[trial.query]) == test_people
        assert sorted(_person(p) for p in table.pids[trial.gallery]) == test_people
        assert (view[trial.query] == 1).all() and (view[trial.gallery] == 2).all()
        train_pids = set(table.pids[trial.train].tolist())
        assert train_pids.isdisjoint(table.pids[trial.query].tolist())
        assert len(train_pids) == sum(PAIRS) - len(testset)
        # every image of a training identity is used for training
        assert len(trial.train) == np.sum(np.isin(table.pids, list(train_pids)))


def test_classic_trials_are_seeded(classic, release, data_dir):
    manual, _, _ = release
    again = cuhk03.load("classic_labeled", data_dir=data_dir, manual_dir=str(manual),
                        check_counts=False)
    table = classic.table
    view = (table.camids - 1) % 2 + 1
    for t, (a, b) in enumerate(zip(classic.trials, again.trials)):
        assert np.array_equal(a.query, b.query) and np.array_equal(a.gallery, b.gallery)
        # the documented rule: rng = default_rng(t); one view-1 query, then one view-2 gallery
        rng = np.random.default_rng(t)
        test = np.isin(table.pids, table.pids[a.query])
        view1, view2 = np.flatnonzero(test & (view == 1)), np.flatnonzero(test & (view == 2))
        assert np.array_equal(rl.one_per_id(table, view1, rng), a.query)
        assert np.array_equal(rl.one_per_id(table, view2, rng), a.gallery)
    assert not all(np.array_equal(classic.trials[0].query, t.query) for t in classic.trials[1:])


def test_classic_query_all(release, data_dir, classic):
    manual, _, _ = release
    data = cuhk03.load("classic_labeled", data_dir=data_dir, manual_dir=str(manual),
                       check_counts=False, classic_query="all", num_trials=1)
    assert len(data.trials) == 1
    trial = data.trials[0]
    assert len(trial.query) == 5 * len(np.unique(data.table.pids[trial.query]))
    with pytest.raises(ValueError, match="classic_query"):
        cuhk03.load("classic_labeled", data_dir=data_dir, manual_dir=str(manual),
                    check_counts=False, classic_query="some")


def test_detected_boxes_are_a_separate_build(release, data_dir, classic):
    manual, mat, _ = release
    detected = cuhk03.load("classic_detected", data_dir=data_dir, manual_dir=str(manual),
                           check_counts=False)
    assert len(detected.table) == mat["images"]["detected"]
    assert detected.info["missing_cells"] == 1  # stored as bare (2,) zeros, no attribute
    assert "detected/2_003_1_01.png" not in set(detected.table.filenames)
    assert all(f.startswith("detected/") for f in detected.table.filenames)
    assert detected.info["prepared_at"] != classic.info["prepared_at"]


def test_new_protocol_uses_the_config_lists(release, data_dir):
    manual, _, config = release
    data = cuhk03.load("new_labeled", data_dir=data_dir, manual_dir=str(manual),
                       check_counts=False)
    trial, = data.trials
    table = data.table
    for split, rows in (("train", trial.train), ("query", trial.query),
                        ("gallery", trial.gallery)):
        assert sorted(table.filenames[rows]) == sorted(f"labeled/{n}" for n in config[split])
    assert set(table.pids[trial.train].tolist()).isdisjoint(table.pids[trial.query].tolist())
    assert set(table.pids[trial.query].tolist()) == set(table.pids[trial.gallery].tolist())
    assert data.same_camera_junk
    assert data.info["new_protocol_source"].endswith("cuhk03_new_protocol_config_labeled.mat")


def test_new_protocol_without_config_says_where_to_put_it(release, data_dir):
    manual, _, _ = release
    with pytest.raises(ReleaseError) as err:
        cuhk03.load("new_detected", data_dir=data_dir, manual_dir=str(manual), check_counts=False)
    assert os.path.join(str(manual), "cuhk03_new_protocol_config_detected.mat") in str(err.value)


def test_new_protocol_config_read_at_load_time_when_added_later(release, data_dir):
    manual, _, _ = release
    path = manual / "cuhk03_new_protocol_config_detected.mat"
    config = fr.make_cuhk03_new_config(path, PAIRS, empty=EMPTY, source="detected")
    try:
        data = cuhk03.load("new_detected", data_dir=data_dir, manual_dir=str(manual),
                           check_counts=False)
    finally:
        path.unlink()
    assert sorted(data.table.filenames[data.trials[0].query]) == sorted(
        f"detected/{n}" for n in config["query"])


def test_full_release_counts_are_checked_by_default(release, tmp_path):
    manual, _, _ = release
    with pytest.raises(ReleaseError, match="expected 1467 labeled identities, found 14"):
        cuhk03.load("classic_labeled", data_dir=str(tmp_path), manual_dir=str(manual))


def test_official_zip_is_read(release, tmp_path, classic):
    manual, _, _ = release
    zips = tmp_path / "zips"
    zips.mkdir()
    fr.zip_tree(manual / "cuhk03_release", zips / "cuhk03_release.zip")
    data = cuhk03.load("classic_labeled", data_dir=str(tmp_path / "d"), manual_dir=str(zips),
                       check_counts=False, num_trials=1)
    assert data.info["release"].endswith("cuhk03_release.zip:cuhk03_release")
    assert list(data.table.images) == list(classic.table.images)


def test_missing_mat_names_the_download(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ReleaseError) as err:
        cuhk03.load("classic_labeled", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m"))
    assert os.path.join(str(tmp_path / "m"), "cuhk03_release.zip") in str(err.value)
    assert "cuhk-03.mat" in str(err.value)


def test_not_an_hdf5_file(tmp_path):
    (tmp_path / "m" / "cuhk03_release").mkdir(parents=True)
    (tmp_path / "m" / "cuhk03_release" / "cuhk-03.mat").write_bytes(b"MATLAB 5.0 MAT-file" * 20)
    with pytest.raises(ReleaseError, match=r"cannot read .*cuhk-03\.mat as a MATLAB v7\.3"):
        cuhk03.load("classic_labeled", data_dir=str(tmp_path / "d"),
                    manual_dir=str(tmp_path / "m"), check_counts=False)


def test_corrupt_cell_error_then_skip(tmp_path):
    manual = tmp_path / "m"
    fr.make_cuhk03_mat(manual / "cuhk03_release" / "cuhk-03.mat", PAIRS,
                       corrupt={("labeled", 2, 1, 3)})
    with pytest.raises(ReleaseError) as err:
        cuhk03.load("classic_labeled", data_dir=str(tmp_path / "d"), manual_dir=str(manual),
                    check_counts=False)
    assert "corrupt or truncated image" in str(err.value)
    assert "labeled{2}(1,4) (labeled/2_001_1_04.png)" in str(err.value)
    data = cuhk03.load("classic_labeled", data_dir=str(tmp_path / "d"), manual_dir=str(manual),
                       check_counts=False, skip_corrupt=True)
    assert data.info["skipped_corrupt"] == 1
    assert data.info["skipped_files"] == ["labeled/2_001_1_04.png"]
    assert len(data.table) == sum(PAIRS) * 10 - 1


def test_testset_naming_an_unknown_identity(tmp_path):
    manual = tmp_path / "m"
    fr.make_cuhk03_mat(manual / "cuhk03_release" / "cuhk-03.mat", PAIRS,
                       testsets=[[(1, 1), (2, 9)]])
    with pytest.raises(ReleaseError, match=r"testsets\{1\} names pair 2 id 9"):
        cuhk03.load("classic_labeled", data_dir=str(tmp_path / "d"), manual_dir=str(manual),
                    check_counts=False)


def test_new_protocol_config_naming_a_missing_image(tmp_path):
    manual = tmp_path / "m"
    fr.make_cuhk03_mat(manual / "cuhk03_release" / "cuhk-03.mat", PAIRS, empty=EMPTY)
    # written as if no cell were empty: it names labeled/1_002_2_08.png, which is missing
    fr.make_cuhk03_new_config(manual / "cuhk03_new_protocol_config_labeled.mat", PAIRS)
    with pytest.raises(ReleaseError, match=r"1_002_2_08\.png is not an image"):
        cuhk03.load("new_labeled", data_dir=str(tmp_path / "d"), manual_dir=str(manual),
                    check_counts=False)


# -- Market-layout conversion ---------------------------------------------------------------

def test_market_layout(tmp_path):
    files = fr.make_market_layout(tmp_path / "m")
    data = cuhk03.load("market_layout", data_dir=str(tmp_path / "d"),
                       manual_dir=str(tmp_path / "m"))
    trial, = data.trials
    table = data.table
    assert data.info["release"] == str(files["root"])
    assert len(trial.train) == len(files["train"]) == 12
    assert len(trial.query) == len(files["query"]) == 4
    assert len(trial.gallery) == len(files["gallery"]) == 8
    assert set(table.pids[trial.train].tolist()) == {1, 2, 3}
    assert set(table.pids[trial.query].tolist()) == {7, 8}
    assert set(table.pids[trial.gallery].tolist()) == {7, 8}
    assert set(table.camids.tolist()) == {1, 2}
    assert data.info["counts"]["train"] == {"images": 12, "ids": 3}


def test_market_layout_with_shared_identities_is_rejected(tmp_path):
    files = fr.make_market_layout(tmp_path / "m")
    fr.write_image(files["root"] / "query" / "0001_c1s1_999999_00.jpg", 1)
    with pytest.raises(ReleaseError, match=r"identities \[1\] are in both"):
        cuhk03.load("market_layout", data_dir=str(tmp_path / "d"),
                    manual_dir=str(tmp_path / "m"))


def test_market_layout_missing(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ReleaseError, match="cuhk03_pair1_market"):
        cuhk03.load("market_layout", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m"))
