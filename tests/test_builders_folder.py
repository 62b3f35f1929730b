"""The folder data set: your own images in train/query/gallery with Market-like names."""
import os

import numpy as np
import pytest
import tensorflow as tf

import fixtures_release as fr
import jlml_tf_datasets
from jlml_tf.data.types import UNKNOWN_CAMERA
from jlml_tf_datasets import folder
from jlml_tf_datasets.release import ReleaseError


def _names(data, rows):
    return sorted(os.path.basename(f) for f in data.table.filenames[rows])


def test_folder_with_cameras(tmp_path):
    files = fr.make_folder(tmp_path / "mine")
    data = jlml_tf_datasets.load("folder", data_dir=str(tmp_path / "d"),
                                 manual_dir=str(tmp_path / "mine"))
    trial, = data.trials
    assert data.name == "folder" and data.protocol == "default"
    for split, rows in (("train", trial.train), ("query", trial.query), ("gallery", trial.gallery)):
        assert _names(data, rows) == sorted(files[split])
    table = data.table
    assert set(table.camids.tolist()) == {1, 2, 3}
    assert data.same_camera_junk
    assert 0 in table.pids[trial.gallery]  # the distractor
    assert data.info["counts"]["query"] == {"images": 4, "ids": 2}
    assert data.info["unknown_camera_images"] == 0
    image = tf.io.decode_image(table.images[trial.query[0]])
    assert tuple(image.shape) == (fr.SIZE[1], fr.SIZE[0], 3)


def test_folder_without_cameras_turns_same_camera_filtering_off(tmp_path):
    fr.make_folder(tmp_path / "mine", with_cameras=False)
    data = folder.load(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "mine"))
    assert (data.table.camids == UNKNOWN_CAMERA).all()
    assert data.same_camera_junk is False
    assert data.info["unknown_camera_images"] == len(data.table)
    assert sorted(np.unique(data.table.pids).tolist()) == [0, 11, 12, 13, 21, 22]
    assert "inflates the scores" in folder.__doc__


def test_market_folder_names_and_optional_train(tmp_path):
    files = fr.make_folder(tmp_path / "mine", train_name="bounding_box_train",
                           gallery_name="bounding_box_test")
    data = folder.load(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "mine"))
    assert data.info["folders"] == {"train": "bounding_box_train", "query": "query",
                                    "gallery": "bounding_box_test"}
    assert len(data.trials[0].train) == len(files["train"])
    import shutil
    shutil.rmtree(tmp_path / "mine" / "bounding_box_train")
    data = folder.load(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "mine"))
    assert len(data.trials[0].train) == 0 and len(data.trials[0].query) == 4


def test_edited_folder_is_rebuilt(tmp_path):
    fr.make_folder(tmp_path / "mine")
    first = folder.load(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "mine"))
    fr.write_image(tmp_path / "mine" / "gallery" / "0_c4_extra.png", 77)
    second = folder.load(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "mine"))
    assert len(second.table) == len(first.table) + 1
    assert second.info["prepared_at"] != first.info["prepared_at"]
    assert "gallery/0_c4_extra.png" in set(second.table.filenames)


def test_zip_of_the_folder(tmp_path):
    files = fr.make_folder(tmp_path / "mine")
    zip_path = fr.zip_tree(tmp_path / "mine", tmp_path / "mine.zip", arc_root="export")
    data = folder.load(data_dir=str(tmp_path / "d"), manual_dir=str(zip_path))
    assert _names(data, data.trials[0].gallery) == sorted(files["gallery"])
    assert data.info["release"] == f"{zip_path}:export"


def test_non_rgb_images_are_converted(tmp_path):
    fr.make_folder(tmp_path / "mine")
    fr.write_image(tmp_path / "mine" / "gallery" / "21_c2_grey.png", 5, mode="L")
    data = folder.load(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "mine"))
    row = list(data.table.filenames).index("gallery/21_c2_grey.png")
    assert tf.io.decode_image(data.table.images[row]).shape[-1] == 3
    assert data.info["converted_to_rgb"] == 1


def test_junk_in_train_is_left_out_and_overlap_reported(tmp_path):
    fr.make_folder(tmp_path / "mine")
    fr.write_image(tmp_path / "mine" / "train" / "-1_c1_x.png", 1)
    fr.write_image(tmp_path / "mine" / "train" / "21_c1_x.png", 2)
    data = folder.load(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "mine"))
    assert data.info["excluded_train_images"] == 1
    assert -1 not in data.table.pids[data.trials[0].train]
    assert data.info["train_query_overlap_ids"] == [21]


def test_bad_input(tmp_path):
    with pytest.raises(ReleaseError, match="needs manual_dir"):
        folder.load(data_dir=str(tmp_path / "d"))
    with pytest.raises(ReleaseError, match="not found"):
        folder.load(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "nowhere"))
    fr.make_folder(tmp_path / "mine")
    import shutil
    shutil.rmtree(tmp_path / "mine" / "query")
    with pytest.raises(ReleaseError, match=r"missing folder .*mine/query"):
        folder.load(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "mine"))


def test_bad_name_duplicate_and_corrupt(tmp_path):
    fr.make_folder(tmp_path / "mine")
    gallery = tmp_path / "mine" / "gallery"
    fr.write_image(gallery / "person.png", 1)
    with pytest.raises(ReleaseError, match=r"unexpected file .*gallery/person\.png"):
        folder.load(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "mine"))
    (gallery / "person.png").unlink()
    existing = sorted(os.listdir(gallery))[0]
    fr.write_image(gallery / existing.replace(".png", ".jpg"), 2)
    with pytest.raises(ReleaseError, match=r"duplicate file .*gallery/"):
        folder.load(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "mine"))
    (gallery / existing.replace(".png", ".jpg")).unlink()
    fr.truncate(gallery / existing, keep=0.5)
    with pytest.raises(ReleaseError, match=rf"corrupt or truncated image .*{existing}"):
        folder.load(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "mine"))
    data = folder.load(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "mine"),
                       skip_corrupt=True)
    assert data.info["skipped_corrupt"] == 1
    assert f"gallery/{existing}" not in set(data.table.filenames)
