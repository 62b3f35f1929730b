"""The synthetic data set: determinism, Market-style structure, the TFDS build, pictures."""
import collections
import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

import jlml_tf_datasets
from jlml_tf.data.types import DISTRACTOR_PID
from jlml_tf_datasets import synthetic


@pytest.fixture(scope="module")
def tiny():
    return synthetic.generate(synthetic.TINY)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_same_seed_gives_identical_bytes(tiny):
    table, rows = tiny
    again, rows_again = synthetic.generate(synthetic.TINY)
    assert list(table.images) == list(again.images)
    assert list(table.filenames) == list(again.filenames)
    assert all(np.array_equal(rows[s], rows_again[s]) for s in synthetic.SPLITS)


def test_different_seed_gives_different_images(tiny):
    table, _ = tiny
    other, _ = synthetic.generate(synthetic.make_config("tiny", seed=1))
    common = set(table.filenames) & set(other.filenames)
    assert common, "the two seeds should share some file names"
    by_name = dict(zip(other.filenames, other.images))
    differing = sum(by_name[f] != b for f, b in zip(table.filenames, table.images) if f in common)
    assert differing == len(common)


def test_identity_and_camera_structure(tiny):
    cfg = synthetic.TINY
    table, rows = tiny
    train_pids = set(table.pids[rows["train"]])
    query_pids = set(table.pids[rows["query"]])
    gallery_pids = set(table.pids[rows["gallery"]])
    assert len(train_pids) == cfg.num_train_ids
    assert len(query_pids) == cfg.num_test_ids
    assert not train_pids & (query_pids | gallery_pids)
    assert DISTRACTOR_PID not in train_pids | query_pids
    assert gallery_pids == query_pids | {DISTRACTOR_PID}
    assert (table.pids[rows["gallery"]] == DISTRACTOR_PID).sum() == cfg.num_distractors
    assert len(rows["query"]) == cfg.num_test_ids * cfg.queries_per_id
    assert set(table.camids) <= set(range(1, cfg.num_cameras + 1))
    assert len(set(table.filenames)) == len(table)

    per_pid_cam = collections.Counter(zip(table.pids[rows["train"]], table.camids[rows["train"]]))
    assert set(per_pid_cam.values()) == {cfg.images_per_camera}
    for pid in train_pids:
        cams = {c for p, c in per_pid_cam if p == pid}
        assert cfg.min_cameras_per_id <= len(cams) <= cfg.max_cameras_per_id

    g = rows["gallery"]
    for q in rows["query"]:
        pid, cam = table.pids[q], table.camids[q]
        same_pid = g[table.pids[g] == pid]
        other_cams = same_pid[table.camids[same_pid] != cam]
        assert len(other_cams) >= cfg.images_per_camera  # a true match in another camera
        assert (table.camids[same_pid] == cam).sum() <= 1  # at most one same-camera junk image


def test_same_camera_gallery_images_exist_sometimes():
    cfg = synthetic.DEFAULT
    records = synthetic.plan(cfg)
    query_cam = {r.pid: r.camid for r in records if r.split == "query"}
    junk = {r.pid for r in records if r.split == "gallery" and r.pid in query_cam
            and r.camid == query_cam[r.pid]}
    assert 0 < len(junk) < cfg.num_test_ids


def test_default_config_counts():
    cfg = synthetic.DEFAULT
    counts = collections.Counter(r.split for r in synthetic.plan(cfg))
    assert counts["query"] == 100
    assert 150 <= len({r.pid for r in synthetic.plan(cfg) if r.split == "train"}) <= 200
    assert 2000 <= sum(counts.values()) <= 5000


def test_images_decode_to_configured_size(tiny):
    table, _ = tiny
    shapes = {decode(b).shape for b in table.images}
    assert shapes == {(synthetic.TINY.height, synthetic.TINY.width, 3)}
    png, _ = synthetic.generate(synthetic.make_config("tiny", height=48, width=24,
                                                      image_format="png", num_distractors=0))
    assert png.images[0][:8] == b"\x89PNG\r\n\x1a\n"
    assert {decode(b).shape for b in png.images} == {(48, 24, 3)}
    assert all(f.endswith(".png") for f in png.filenames)


def test_images_are_not_blank(tiny):
    table, _ = tiny
    stds = [decode(b).astype(np.float32).std() for b in table.images]
    assert min(stds) > 5.0


def test_siblings_differ_in_one_body_part():
    rng = np.random.default_rng(0)
    groups = {"hair": {"hair_colour", "hair_length"}, "pattern": {"pattern"},
              "lower": {"lower_colour", "lower_type", "lower_end"}, "shoes": {"shoe_colour"},
              "bag": {"bag", "bag_colour"}}
    for _ in range(40):
        base = synthetic.random_identity(rng)
        sib = synthetic.sibling(rng, base)
        changed = {f.name for f in dataclasses.fields(base)
                   if not np.array_equal(getattr(base, f.name), getattr(sib, f.name))}
        assert changed, "a sibling must differ from its base"
        assert any(changed <= fields for fields in groups.values()), changed


def test_cameras_change_the_picture():
    cams = synthetic.make_cameras(np.random.default_rng(0), 3)
    ident = synthetic.random_identity(np.random.default_rng(1))
    pictures = [synthetic.render(ident, cam, 128, 64, np.random.default_rng(7)).astype(np.float32)
                for cam in cams]
    means = np.array([p.mean((0, 1)) for p in pictures])
    assert np.abs(means[0] - means[1]).max() > 5 and np.abs(means[1] - means[2]).max() > 5


def test_make_config_names_and_validation():
    a = synthetic.make_config("tiny", seed=5)
    b = synthetic.make_config("tiny", seed=6)
    assert a.name != b.name and a.seed == 5 and a.num_train_ids == synthetic.TINY.num_train_ids
    assert synthetic.make_config("tiny") is synthetic.TINY
    with pytest.raises(ValueError, match="unknown synthetic options"):
        synthetic.make_config("tiny", colour=3)
    with pytest.raises(ValueError, match="num_cameras"):
        synthetic.plan(synthetic.make_config("tiny", num_cameras=1))


def test_load_builds_with_tfds_and_trial_rows_point_at_splits(tiny, tmp_path):
    data = jlml_tf_datasets.load("synthetic", data_dir=str(tmp_path), config="tiny")
    assert (tmp_path / "synthetic_reid" / "tiny" / "1.0.0").is_dir()
    assert data.name == "synthetic" and data.protocol == "default" and data.same_camera_junk
    (trial,) = data.trials
    t = data.table
    for split in synthetic.SPLITS:
        rows = getattr(trial, split)
        assert len(rows) == len(tiny[1][split])
        assert all(f.startswith(split + "/") for f in t.filenames[rows])
    assert (t.pids[trial.train] > 0).all() and (t.pids[trial.query] > 0).all()
    assert (t.pids[trial.gallery] == DISTRACTOR_PID).sum() == synthetic.TINY.num_distractors
    # The TFDS build stores exactly the bytes the generator makes.
    generated = dict(zip(tiny[0].filenames, tiny[0].images))
    assert all(generated[f] == b for f, b in zip(t.filenames, t.images))
    labels, count = data.train_labels(trial)
    assert count == synthetic.TINY.num_train_ids and labels.min() == 0

    again = synthetic.load(data_dir=str(tmp_path), config="tiny")  # from the cache
    assert list(again.table.filenames) == list(t.filenames)


def test_unknown_protocol_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown protocol"):
        synthetic.load(protocol="market", data_dir=str(tmp_path), config="tiny")


def test_contact_sheet(tiny, tmp_path):
    table, rows = tiny
    path = tmp_path / "sheet.png"
    sheet = synthetic.contact_sheet(table, 3, path, max_per_row=4, cell_height=64, cell_width=32)
    assert path.is_file()
    assert decode(path.read_bytes()).shape == sheet.shape == (3 * 66 + 2, 4 * 34 + 2, 3)
    first_cell = sheet[2:66, 2:34]
    first_image = decode(table.images[np.flatnonzero(table.pids == table.pids[table.pids > 0].min())[0]])
    assert np.abs(first_cell.astype(int) - first_image.astype(int)).max() <= 1
    explicit = synthetic.contact_sheet(table, rows["query"][:2], cell_height=64, cell_width=32)
    assert explicit.shape[0] == 2 * 66 + 2
