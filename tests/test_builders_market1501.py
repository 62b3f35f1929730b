"""Market-1501 builder on a tiny generated release in the official layout."""
import os
import zipfile

import numpy as np
import pytest
import tensorflow as tf

import fixtures_release as fr
import jlml_tf_datasets
from jlml_tf_datasets import market1501
from jlml_tf_datasets.release import ReleaseError


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    manual = tmp_path_factory.mktemp("market_manual")
    return manual, fr.make_market(manual)


@pytest.fixture(scope="module")
def built(release, tmp_path_factory):
    manual, files = release
    data_dir = tmp_path_factory.mktemp("market_data")
    single = market1501.load("single_query", data_dir=str(data_dir), manual_dir=str(manual),
                             check_counts=False)
    multi = market1501.load("multi_query", data_dir=str(data_dir), manual_dir=str(manual),
                            check_counts=False)
    return single, multi, files


def _pid_cam(data, rows):
    return set(zip(data.table.pids[rows].tolist(), data.table.camids[rows].tolist()))


def test_protocols_and_registry():
    assert set(market1501.PROTOCOLS) == {"single_query", "multi_query"}
    assert jlml_tf_datasets.protocols("market1501") == market1501.PROTOCOLS


def test_single_query_splits_match_the_release(built):
    single, _, files = built
    trial, = single.trials
    table = single.table
    assert single.name == "market1501" and single.protocol == "single_query"
    for split, rows in (("train", trial.train), ("query", trial.query),
                        ("gallery", trial.gallery)):
        assert sorted(os.path.basename(f) for f in table.filenames[rows]) == sorted(files[split])
    assert len(trial.multi_query) == 0
    assert len(table) == len(files["train"]) + len(files["query"]) + len(files["gallery"])
    assert not any("Thumbs" in f for f in table.filenames)
    assert single.same_camera_junk
    assert single.info["counts_checked"] is False and single.info["skipped_corrupt"] == 0


def test_pids_cameras_distractors_and_junk(built):
    single, _, _ = built
    trial, = single.trials
    table = single.table
    gallery_pids = table.pids[trial.gallery]
    assert np.sum(gallery_pids == 0) == 3 and np.sum(gallery_pids == -1) == 2
    assert not np.isin(table.pids[trial.train], [0, -1]).any()
    assert set(table.pids[trial.train].tolist()).isdisjoint(table.pids[trial.query].tolist())
    assert set(table.pids[trial.query].tolist()) <= set(gallery_pids.tolist())
    for name, pid, camid in zip(table.filenames, table.pids, table.camids):
        pid_text, cam_text = os.path.basename(name).split("_")[:2]
        assert pid == int(pid_text) and camid == int(cam_text[1])
    assert set(table.camids.tolist()) <= {1, 2, 3, 4, 5, 6}


def test_multi_query_rows_share_a_query_pid_and_camera(built):
    single, multi, files = built
    trial, = multi.trials
    assert len(trial.multi_query) == 2 * len(trial.query)  # the query box and one more each
    assert _pid_cam(multi, trial.multi_query) == _pid_cam(multi, trial.query)
    assert all(f.startswith("gt_bbox/") for f in multi.table.filenames[trial.multi_query])
    # gt_bbox images of cameras without a query (here camera 5) are left out
    assert 5 not in multi.table.camids[trial.multi_query]
    assert len(files["gt_bbox"]) > len(trial.multi_query)
    assert np.array_equal(multi.table.filenames[trial.query], single.table.filenames[
        single.trials[0].query])
    assert multi.info["multi_query_images"] == len(trial.multi_query)


def test_images_decode(built):
    single, _, _ = built
    for data in single.table.images[:4]:
        image = tf.io.decode_image(data)
        assert image.dtype == tf.uint8 and tuple(image.shape) == (fr.SIZE[1], fr.SIZE[0], 3)


def test_full_release_counts_are_checked_by_default(release, tmp_path):
    manual, _ = release
    with pytest.raises(ReleaseError, match=r"bounding_box_train: expected 12936 images, found 12"):
        market1501.load(data_dir=str(tmp_path), manual_dir=str(manual))


def test_cache_built_without_count_checks_is_refused_for_checked_load(built, release):
    single, _, _ = built
    manual, _ = release
    data_dir = os.path.dirname(os.path.dirname(single.info["prepared_at"]))
    with pytest.raises(ReleaseError, match="built with check_counts=False"):
        market1501.load(data_dir=data_dir, manual_dir=str(manual))


def test_official_zip_gives_the_same_data(built, release, tmp_path):
    single, _, _ = built
    manual, files = release
    zips = tmp_path / "zips"
    zips.mkdir()
    fr.zip_tree(files["root"], zips / "Market-1501-v15.09.15.zip")
    from_zip = market1501.load(data_dir=str(tmp_path / "data"), manual_dir=str(zips),
                               check_counts=False)
    assert from_zip.info["release"].endswith("Market-1501-v15.09.15.zip:Market-1501-v15.09.15")
    assert np.array_equal(from_zip.table.filenames, single.table.filenames)
    assert list(from_zip.table.images) == list(single.table.images)


def test_missing_release_says_what_to_download_and_where(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with pytest.raises(ReleaseError) as err:
        market1501.load(data_dir=str(tmp_path / "data"), manual_dir=str(manual))
    assert os.path.join(str(manual), "Market-1501-v15.09.15.zip") in str(err.value)
    assert "Download Market-1501-v15.09.15.zip" in str(err.value)


@pytest.fixture
def copy(release, tmp_path):
    _, files = release
    manual = tmp_path / "manual"
    root = fr.copy_tree(files["root"], manual / "Market-1501-v15.09.15")
    return manual, root


def test_unexpected_file_name_is_named(copy, tmp_path):
    manual, root = copy
    fr.write_image(root / "query" / "0001_c1_holiday.jpg", 1)
    with pytest.raises(ReleaseError) as err:
        market1501.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual), check_counts=False)
    assert str(root / "query" / "0001_c1_holiday.jpg") in str(err.value)
    assert "0002_c1s1_000451_03.jpg" in str(err.value)


def test_duplicate_image_in_the_zip_is_named(copy, tmp_path):
    _, root = copy
    zips = tmp_path / "zips"
    zips.mkdir()
    zip_path = fr.zip_tree(root, zips / "Market-1501-v15.09.15.zip")
    name = sorted(os.listdir(root / "query"))[0]
    with pytest.warns(UserWarning), zipfile.ZipFile(zip_path, "a") as zf:
        zf.write(root / "query" / name, f"Market-1501-v15.09.15/query/{name}")
    with pytest.raises(ReleaseError, match=rf"duplicate file .*query/{name}"):
        market1501.load(data_dir=str(tmp_path / "d"), manual_dir=str(zips), check_counts=False)


def test_junk_in_training_folder_is_rejected(copy, tmp_path):
    manual, root = copy
    fr.write_image(root / "bounding_box_train" / fr.market_name(-1, 1, 5), 9)
    with pytest.raises(ReleaseError, match=r"unexpected file .*-1_c1s1_000005_00\.jpg"):
        market1501.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual), check_counts=False)


def test_corrupt_image_error_then_skip(copy, tmp_path):
    manual, root = copy
    victim = root / "bounding_box_test" / sorted(os.listdir(root / "bounding_box_test"))[0]
    fr.truncate(victim)
    with pytest.raises(ReleaseError) as err:
        market1501.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual), check_counts=False)
    assert "corrupt or truncated image" in str(err.value) and str(victim) in str(err.value)
    data = market1501.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual),
                           check_counts=False, skip_corrupt=True)
    assert data.info["skipped_corrupt"] == 1
    assert data.info["skipped_files"] == [f"bounding_box_test/{victim.name}"]
    assert f"bounding_box_test/{victim.name}" not in set(data.table.filenames)
    # the cache now lacks an image: loading it without skip_corrupt is refused, not partial
    with pytest.raises(ReleaseError, match="skip_corrupt=True"):
        market1501.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual), check_counts=False)


def test_without_gt_bbox_only_single_query_works(copy, tmp_path):
    manual, root = copy
    import shutil
    shutil.rmtree(root / "gt_bbox")
    data = market1501.load("single_query", data_dir=str(tmp_path / "d"), manual_dir=str(manual),
                           check_counts=False)
    assert len(data.trials[0].query) == 6
    with pytest.raises(ReleaseError, match="no gt_bbox"):
        market1501.load("multi_query", data_dir=str(tmp_path / "d"), manual_dir=str(manual),
                        check_counts=False)
    with pytest.raises(ReleaseError, match=r"missing folder .*gt_bbox"):
        market1501.load(data_dir=str(tmp_path / "d2"), manual_dir=str(manual))


def test_unknown_protocol():
    with pytest.raises(ValueError, match="unknown protocol"):
        market1501.load("triple_query")
