"""The gallery index: reuse while nothing changed, incremental updates, invalidation, bad files."""
import os

import numpy as np
import pytest
from PIL import Image

from jlml_tf.inference import gallery_index as gi


class CountingEmbedder:
    """Embeds an image as its mean colour (+ a constant), counting every image it sees."""

    height, width = 16, 8

    def __init__(self, offset: float = 0.0):
        self.images_seen = 0
        self.calls = 0
        self.offset = offset

    def embed(self, pixels):
        pixels = np.asarray(pixels)
        assert pixels.shape[1:] == (16, 8, 3) and pixels.dtype == np.uint8
        self.calls += 1
        self.images_seen += len(pixels)
        return pixels.reshape(len(pixels), -1, 3).mean(axis=1) + 1.0 + self.offset


def write_png(path, colour, size=(20, 40)):
    Image.new("RGB", size, tuple(int(c) for c in colour)).save(path)


@pytest.fixture
def gallery(tmp_path):
    root = tmp_path / "gallery"
    root.mkdir()
    for i, colour in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200), (90, 90, 90)]):
        write_png(root / f"{i + 1:04d}_c1s1_000{i}_00.png", colour)
    return root


def test_first_build_embeds_everything_then_reuses_it(gallery):
    emb = CountingEmbedder()
    index, report = gi.update_index(gallery, emb, "model-A", progress=False)
    assert emb.images_seen == 4 and report.rebuilt == "no index yet"
    assert report.saved == gallery / gi.INDEX_FILE and report.saved.is_file()
    assert index.paths == sorted(p.name for p in gallery.glob("*.png"))
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, rtol=1e-5)
    # The red image's embedding points along red.
    assert np.argmax(index.embeddings[0]) == 0
    stamp = os.stat(report.saved).st_mtime_ns

    emb2 = CountingEmbedder()
    again, report2 = gi.update_index(gallery, emb2, "model-A", progress=False)
    assert emb2.images_seen == 0 and emb2.calls == 0
    assert report2.reused == 4 and not report2.embedded and report2.rebuilt is None
    assert report2.saved is None and os.stat(gallery / gi.INDEX_FILE).st_mtime_ns == stamp
    np.testing.assert_array_equal(again.embeddings, index.embeddings)
    assert again.paths == index.paths


def test_a_new_image_is_the_only_one_embedded(gallery):
    gi.update_index(gallery, CountingEmbedder(), "model-A", progress=False)
    sub = gallery / "more"
    sub.mkdir()
    write_png(sub / "0009_c2s1_0001_00.png", (250, 250, 0))
    emb = CountingEmbedder()
    index, report = gi.update_index(gallery, emb, "model-A", progress=False)
    assert emb.images_seen == 1
    assert report.embedded == ["more/0009_c2s1_0001_00.png"] and report.reused == 4
    assert len(index) == 5 and "more/0009_c2s1_0001_00.png" in index.paths
    # Index rows follow the sorted paths, each with its own embedding.
    row = index.paths.index("more/0009_c2s1_0001_00.png")
    assert index.embeddings[row][2] < index.embeddings[row][0]  # yellow: little blue


def test_a_changed_image_is_embedded_again(gallery):
    first, _ = gi.update_index(gallery, CountingEmbedder(), "model-A", progress=False)
    target = gallery / "0001_c1s1_0000_00.png"
    write_png(target, (0, 0, 255), size=(21, 40))  # other size and mtime
    emb = CountingEmbedder()
    index, report = gi.update_index(gallery, emb, "model-A", progress=False)
    assert emb.images_seen == 1 and report.embedded == [target.name]
    assert np.argmax(index.embeddings[0]) == 2 and np.argmax(first.embeddings[0]) == 0


def test_a_removed_image_is_dropped(gallery):
    gi.update_index(gallery, CountingEmbedder(), "model-A", progress=False)
    (gallery / "0002_c1s1_0001_00.png").unlink()
    emb = CountingEmbedder()
    index, report = gi.update_index(gallery, emb, "model-A", progress=False)
    assert emb.images_seen == 0
    assert report.removed == ["0002_c1s1_0001_00.png"] and report.saved is not None
    assert "0002_c1s1_0001_00.png" not in index.paths and len(index) == 3
    reloaded = gi.GalleryIndex.load(gallery / gi.INDEX_FILE, gallery)
    assert reloaded.paths == index.paths and len(reloaded.embeddings) == 3


def test_a_changed_model_fingerprint_rebuilds_everything(gallery):
    gi.update_index(gallery, CountingEmbedder(), "model-A", progress=False)
    emb = CountingEmbedder(offset=5.0)
    index, report = gi.update_index(gallery, emb, "model-B", progress=False)
    assert emb.images_seen == 4 and report.reused == 0 and report.rebuilt == "the model changed"
    assert index.model_fingerprint == "model-B"
    assert gi.GalleryIndex.load(gallery / gi.INDEX_FILE, gallery).model_fingerprint == "model-B"


def test_a_corrupt_image_is_listed_and_skipped_not_fatal(gallery):
    (gallery / "0005_c1s1_0004_00.jpg").write_bytes(b"this is not a JPEG")
    (gallery / "0006_c1s1_0005_00.png").write_bytes(b"")
    emb = CountingEmbedder()
    index, report = gi.update_index(gallery, emb, "model-A", progress=False)
    assert emb.images_seen == 4 and len(index) == 4
    skipped = dict(report.skipped)
    assert set(skipped) == {"0005_c1s1_0004_00.jpg", "0006_c1s1_0005_00.png"}
    # plain words, not TensorFlow's op decorations (issue 13 item 8)
    assert skipped["0005_c1s1_0004_00.jpg"] == \
        "not an image (expected JPEG, PNG, BMP, GIF or WebP data)"
    assert "empty" in skipped["0006_c1s1_0005_00.png"]
    # Unchanged broken files stay listed without being decoded (or embedded) again...
    emb2 = CountingEmbedder()
    _, report2 = gi.update_index(gallery, emb2, "model-A", progress=False)
    assert emb2.images_seen == 0 and dict(report2.skipped).keys() == skipped.keys()
    assert report2.saved is None
    # ...and a repaired one is picked up.
    write_png(gallery / "0006_c1s1_0005_00.png", (10, 20, 30))
    emb3 = CountingEmbedder()
    index3, report3 = gi.update_index(gallery, emb3, "model-A", progress=False)
    assert emb3.images_seen == 1 and "0006_c1s1_0005_00.png" in index3.paths
    assert [p for p, _ in report3.skipped] == ["0005_c1s1_0004_00.jpg"]


def test_a_broken_index_file_is_rebuilt(gallery, tmp_path):
    index_path = tmp_path / "elsewhere.npz"
    index_path.write_bytes(b"garbage")
    emb = CountingEmbedder()
    _, report = gi.update_index(gallery, emb, "model-A", index_path=index_path, progress=False)
    assert emb.images_seen == 4 and "unreadable index file" in report.rebuilt
    assert report.saved == index_path and not (gallery / gi.INDEX_FILE).exists()


def test_hidden_files_and_excluded_folders_are_not_gallery_images(gallery):
    write_png(gallery / ".hidden.png", (1, 2, 3))
    out = gallery / "search_results"
    out.mkdir()
    write_png(out / "00_query.png", (1, 2, 3))
    (gallery / "notes.txt").write_text("not an image")
    found = gi.scan_gallery(gallery, exclude=[out])
    assert len(found) == 4 and all(not k.startswith((".", "search_results")) for k in found)
    with pytest.raises(FileNotFoundError, match="no_such"):
        gi.scan_gallery(gallery / "no_such")


def test_model_fingerprint_follows_file_contents(tmp_path):
    saved = tmp_path / "export" / "1"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"graph")
    (saved / "variables" / "variables.data-00000-of-00001").write_bytes(b"weights-1")
    first = gi.model_fingerprint(saved)
    assert gi.model_fingerprint(saved) == first
    (saved / "variables" / "variables.data-00000-of-00001").write_bytes(b"weights-2")
    assert gi.model_fingerprint(saved) != first
    lite = tmp_path / "m.tflite"
    lite.write_bytes(b"abc")
    other = tmp_path / "n.tflite"
    other.write_bytes(b"abd")
    assert gi.model_fingerprint(lite) != gi.model_fingerprint(other)
    with pytest.raises(FileNotFoundError):
        gi.model_fingerprint(tmp_path / "missing.tflite")


def test_base_path_and_newest_version_have_one_fingerprint(tmp_path):
    """Issue 13 item 2: --model=EXPORT/jlml and --model=EXPORT/jlml/<newest> are one model."""
    base = tmp_path / "export" / "jlml"
    for version, weights in ((1, b"old"), (2, b"new")):
        (base / str(version) / "variables").mkdir(parents=True)
        (base / str(version) / "saved_model.pb").write_bytes(b"graph")
        (base / str(version) / "variables" / "v.data").write_bytes(weights)
    (base / "3").mkdir()  # a version still being copied (no saved_model.pb) is not served
    (base / ".tmp-4-x").mkdir()
    assert gi.resolve_model_path(base) == base / "2"
    assert gi.resolve_model_path(base / "1") == base / "1"
    assert gi.model_fingerprint(base) == gi.model_fingerprint(base / "2") \
        == gi.model_fingerprint(str(base / "2") + "/")
    assert gi.model_fingerprint(base) != gi.model_fingerprint(base / "1")


def test_odd_images_are_flagged_refused_and_taken_back(gallery):
    """Issue 13 item 9: a 1x1 image and a big square one are flagged (warn), left out (refuse)
    and taken back without a rebuild when the policy changes back."""
    write_png(gallery / "tiny.png", (5, 5, 5), size=(1, 1))
    write_png(gallery / "frame.png", (7, 7, 7), size=(300, 300))
    emb = CountingEmbedder()
    index, report = gi.update_index(gallery, emb, "model-A", progress=False, odd_images="warn")
    assert len(index) == 6 and emb.images_seen == 6
    assert set(index.odd) == {"tiny.png", "frame.png"} == {p for p, _ in report.odd}
    assert "1x1 px" in index.odd["tiny.png"] and "height/width 1.00" in index.odd["frame.png"]
    # reused: still known as odd, nothing embedded again
    again, report = gi.update_index(gallery, CountingEmbedder(), "model-A", progress=False,
                                    odd_images="warn")
    assert set(again.odd) == {"tiny.png", "frame.png"} and not report.odd
    # refuse: left out and listed, without embedding anything
    emb = CountingEmbedder()
    refused, report = gi.update_index(gallery, emb, "model-A", progress=False,
                                      odd_images="refuse")
    assert emb.images_seen == 0 and len(refused) == 4 and not refused.odd
    skipped = dict(report.skipped)
    assert set(skipped) == {"tiny.png", "frame.png"}
    assert skipped["tiny.png"].startswith(gi.REFUSED)
    # back to warn: the two are embedded again, the rest reused
    emb = CountingEmbedder()
    back, report = gi.update_index(gallery, emb, "model-A", progress=False, odd_images="warn")
    assert emb.images_seen == 2 and len(back) == 6 and report.reused == 4
    assert not report.skipped and report.rebuilt is None
