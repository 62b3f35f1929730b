"""CAVIAR4REID builder on a full-size generated release (1,220 tiny JPEGs of 72 identities).

The fixture's identities are made up: 0001-0050 have 20 images (both cameras), 0051-0072 have
10 (one camera); image sizes vary; 0003002.jpg and 0003003.jpg are byte-identical.
"""
import collections
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf

import fixtures_release as fr
import jlml_tf_datasets
from jlml_tf.data import pipeline
from jlml_tf.data.types import UNKNOWN_CAMERA, union_for_training
from jlml_tf_datasets import caviar4reid
from jlml_tf_datasets.release import ReleaseError

TWO_CAMERA_IDS = range(1, 51)
ONE_CAMERA_IDS = range(51, 73)
IDENTICAL = ("caviarRAW/0003002.jpg", "caviarRAW/0003003.jpg")


def make_caviar4reid(manual_dir, two_camera_ids=TWO_CAMERA_IDS, one_camera_ids=ONE_CAMERA_IDS,
                     folder: str = "CAVIAR4REID") -> pathlib.Path:
    """`CAVIAR4REID/caviarRAW/<pid:04d><image:03d>.jpg`; returns the CAVIAR4REID folder."""
    root = pathlib.Path(manual_dir) / folder
    raw = root / "caviarRAW"
    for pid in sorted([*two_camera_ids, *one_camera_ids]):
        last = 20 if pid in two_camera_ids else 10
        for image in range(1, last + 1):
            size = (3 + (pid + image) % 4, 7 + (pid * image) % 5)  # sizes vary, like the release
            fr.write_image(raw / f"{pid:04d}{image:03d}.jpg", pid * 100 + image, size=size)
    if 3 in two_camera_ids:
        (raw / "0003003.jpg").write_bytes((raw / "0003002.jpg").read_bytes())
    return root


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    manual = tmp_path_factory.mktemp("caviar_manual")
    return manual, make_caviar4reid(manual)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("caviar_data"))


@pytest.fixture(scope="module")
def loaded(release, data_dir):
    manual, _ = release
    return {p: caviar4reid.load(p, data_dir=data_dir, manual_dir=str(manual))
            for p in caviar4reid.PROTOCOLS}


def test_registered_and_default_protocol_is_the_evaluation_protocol():
    from jlml_tf import flags as jflags

    assert "caviar4reid" in jflags.DATASETS
    assert jlml_tf_datasets.protocols("caviar4reid") == caviar4reid.PROTOCOLS
    assert next(iter(caviar4reid.PROTOCOLS)) == "25_25_multi_shot"


def test_table_holds_the_whole_release_with_cameras(loaded, release):
    _, root = release
    data = loaded["25_25_multi_shot"]
    table = data.table
    assert len(table) == 1220 and len(np.unique(table.pids)) == 72
    assert data.info["counts_checked"] is True and data.info["num_ids"] == 72
    for name, pid, camid in zip(table.filenames, table.pids, table.camids):
        folder, base = name.split("/")
        assert folder == "caviarRAW" and pid == int(base[:4])
        image = int(base[4:7])
        expected = UNKNOWN_CAMERA if pid in ONE_CAMERA_IDS else (1 if image <= 10 else 2)
        assert camid == expected, name
    assert collections.Counter(table.camids.tolist()) == {1: 500, 2: 500, UNKNOWN_CAMERA: 220}
    assert data.info["one_camera_ids"] == list(ONE_CAMERA_IDS)
    # the byte-identical pair of one person is kept and reported, not rejected
    assert data.info["identical_images"] == [list(IDENTICAL)]
    assert set(IDENTICAL) <= set(table.filenames.tolist())
    # JPEGs are stored as they are; sizes vary and decode to the release pixels' size
    assert table.images[0] == (root / table.filenames[0]).read_bytes()
    shapes = {tuple(tf.io.decode_image(table.images[r]).shape) for r in range(0, 1220, 37)}
    assert len(shapes) > 3 and all(s[2] == 3 for s in shapes)


def test_25_25_multi_shot_trials(loaded):
    data = loaded["25_25_multi_shot"]
    table = data.table
    assert data.protocol == "25_25_multi_shot"
    assert len(data.trials) == 10 and data.info["num_two_camera_ids"] == 50
    for t, trial in enumerate(data.trials):
        train_ids = np.unique(table.pids[trial.train])
        query_ids = np.unique(table.pids[trial.query])
        assert len(train_ids) == 25 and len(trial.train) == 25 * 20
        assert len(query_ids) == 25 and len(trial.query) == 250 and len(trial.gallery) == 250
        assert set(train_ids.tolist()).isdisjoint(query_ids.tolist())
        assert set(train_ids.tolist()) | set(query_ids.tolist()) == set(TWO_CAMERA_IDS)
        assert (table.camids[trial.query] == 1).all() and (table.camids[trial.gallery] == 2).all()
        assert collections.Counter(table.pids[trial.gallery].tolist()) == {
            p: 10 for p in query_ids.tolist()}
        perm = np.random.default_rng(t).permutation(np.arange(1, 51))
        assert set(query_ids.tolist()) == set(perm[25:50].tolist())
    assert not np.array_equal(data.trials[0].query, data.trials[1].query)


def test_train_all_protocol_for_extra_train(loaded):
    data = loaded["train_all"]
    trial, = data.trials
    assert len(trial.train) == 1220 and len(trial.query) == 0 and len(trial.gallery) == 0
    labels, count = data.train_labels(trial)
    assert count == 72 and sorted(set(labels.tolist())) == list(range(72))


def test_every_image_decodes_with_the_pipeline(loaded):
    table = loaded["train_all"].table
    decoded = pipeline.decode_all(table, 16, 8)
    assert decoded.shape == (1220, 16, 8, 3) and decoded.std() > 0


@pytest.fixture
def copy(release, tmp_path):
    _, root = release
    manual = tmp_path / "manual"
    return manual, fr.copy_tree(root, manual / "CAVIAR4REID") / "caviarRAW"


@pytest.mark.parametrize("bad", ["0001021.jpg", "0000001.jpg", "001001.jpg", "0001001.png",
                                 "0001001_.jpg"])
def test_unexpected_names_are_named(copy, tmp_path, bad):
    manual, raw = copy
    (raw / bad).write_bytes((raw / "0001001.jpg").read_bytes())
    with pytest.raises(ReleaseError, match=rf"unexpected file .*caviarRAW/{bad}.*0001001\.jpg"):
        caviar4reid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))


def test_duplicate_name(copy, tmp_path):
    manual, raw = copy
    (raw / "0004005.JPG").write_bytes((raw / "0004006.jpg").read_bytes())
    with pytest.raises(ReleaseError, match=r"duplicate file .*0004005"):
        caviar4reid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))


def test_wrong_counts(copy, tmp_path):
    manual, raw = copy
    (raw / "0003015.jpg").unlink()
    with pytest.raises(ReleaseError, match=r"caviarRAW: expected 1220 images, found 1219; pass "
                                           r"check_counts=False"):
        caviar4reid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    fr.write_image(raw / "0073001.jpg", 1)  # 1,220 images again, but of 73 identities
    with pytest.raises(ReleaseError, match="expected 72 identities, found 73"):
        caviar4reid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    (raw / "0073001.jpg").unlink()
    fr.write_image(raw / "0060011.jpg", 1)  # 1,220 images of 72 identities, badly spread
    with pytest.raises(ReleaseError, match=r"identity 0003 has 19 images, missing 0003015\.jpg; "
                                           r"expected images 001-010 .* or 001-020"):
        caviar4reid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    # the same files load as a subset on purpose; pid 60 now has a camera-2 image
    data = caviar4reid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual),
                            check_counts=False, num_trials=2)
    table = data.table
    assert len(table) == 1220 and data.info["counts_checked"] is False
    assert set(table.camids[table.pids == 60].tolist()) == {1, 2}
    assert data.info["num_two_camera_ids"] == 51 and len(data.trials) == 2


def test_identical_images_of_different_people(copy, tmp_path):
    manual, raw = copy
    (raw / "0007004.jpg").write_bytes((raw / "0008004.jpg").read_bytes())
    with pytest.raises(ReleaseError, match=r"identical files .*0007004\.jpg.*0008004\.jpg.*"
                                           r"different people \(0007, 0008\)"):
        caviar4reid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    data = caviar4reid.load("train_all", data_dir=str(tmp_path / "d"), manual_dir=str(manual),
                            check_counts=False)
    assert data.info["identical_images"] == [
        list(IDENTICAL), ["caviarRAW/0007004.jpg", "caviarRAW/0008004.jpg"]]


def test_corrupt_image_raises_or_is_skipped(copy, tmp_path):
    manual, raw = copy
    fr.truncate(raw / "0010012.jpg", keep=0.4)
    with pytest.raises(ReleaseError, match=r"corrupt or truncated image .*caviarRAW/0010012\.jpg"):
        caviar4reid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    data = caviar4reid.load(data_dir=str(tmp_path / "d2"), manual_dir=str(manual),
                            skip_corrupt=True, num_trials=1)
    assert len(data.table) == 1219 and data.info["skipped_files"] == ["caviarRAW/0010012.jpg"]


def test_small_subset_with_overridden_split_sizes(tmp_path):
    manual = tmp_path / "manual"
    make_caviar4reid(manual, two_camera_ids=range(1, 7), one_camera_ids=range(7, 9))
    data = caviar4reid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual),
                            check_counts=False, num_train_ids=3, num_test_ids=3)
    assert all(len(t.train) == 60 and len(t.query) == 30 and len(t.gallery) == 30
               for t in data.trials)
    with pytest.raises(ReleaseError, match="cannot split 6 identities into 25"):
        caviar4reid.load(data_dir=str(tmp_path / "d"), manual_dir=str(manual), check_counts=False)


def test_zip_release_and_missing_release(tmp_path):
    src = tmp_path / "src"
    root = make_caviar4reid(src, two_camera_ids=range(1, 5), one_camera_ids=range(5, 6))
    zips = tmp_path / "zips"
    zips.mkdir()
    fr.zip_tree(root, zips / "CAVIAR4REID.zip")
    data = caviar4reid.load("train_all", data_dir=str(tmp_path / "d"), manual_dir=str(zips),
                            check_counts=False)
    assert len(data.table) == 90 and data.info["release"].endswith("CAVIAR4REID.zip:CAVIAR4REID")
    (tmp_path / "none").mkdir()
    with pytest.raises(ReleaseError) as err:
        caviar4reid.load(data_dir=str(tmp_path / "d2"), manual_dir=str(tmp_path / "none"))
    assert os.path.join(str(tmp_path / "none"), "CAVIAR4REID.zip") in str(err.value)
    assert "caviarRAW" in str(err.value)


def test_extra_train_joins_cuhk01_and_caviar4reid_with_disjoint_labels(release, data_dir,
                                                                      tmp_path):
    """`--extra_train=caviar4reid:train_all:<dir>` through train.py's own flag parsing."""
    import jlml_tf.train as train

    cuhk01_manual = tmp_path / "cuhk01"
    fr.make_cuhk01(cuhk01_manual)  # full size: --extra_train loads with the count checks on
    cuhk01 = jlml_tf_datasets.load("cuhk01", "485_486_single_shot", data_dir=data_dir,
                                   manual_dir=str(cuhk01_manual), num_trials=1)
    caviar_manual, _ = release
    fv = train.define_flags()
    fv(["train", f"--data_dir={data_dir}", f"--extra_train=caviar4reid:train_all:{caviar_manual}"])
    extras = train.extra_training_sets(fv)
    (caviar, caviar_trial), = extras
    assert caviar.name == "caviar4reid" and len(caviar_trial.train) == 1220
    table, labels, num_classes = union_for_training([(cuhk01, cuhk01.trials[0])] + extras)
    assert num_classes == 485 + 72 and len(table) == len(labels) == 485 * 4 + 1220
    assert sorted(set(labels.tolist())) == list(range(num_classes))
    source = np.r_[np.zeros(485 * 4, int), np.ones(1220, int)]
    # CUHK01 and CAVIAR4REID pids overlap as numbers (both start at 0001) ...
    assert set(table.pids[source == 0].tolist()) & set(table.pids[source == 1].tolist())
    # ... but every label belongs to one (data set, pid)
    owners = collections.defaultdict(set)
    for label, src, pid in zip(labels.tolist(), source.tolist(), table.pids.tolist()):
        owners[label].add((src, pid))
    assert all(len(o) == 1 for o in owners.values())
    assert set(labels[source == 0].tolist()) == set(range(485))
    assert set(labels[source == 1].tolist()) == set(range(485, 557))
