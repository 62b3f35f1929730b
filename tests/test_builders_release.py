"""The shared release helpers: locating a release, names, duplicates, images, seeded splits."""
import io
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

import fixtures_release as fr
from jlml_tf.data.types import ImageTable
from jlml_tf_datasets import release as rl


def _release_tree(tmp_path):
    root = tmp_path / "manual" / "MyData-v1"
    fr.write_image(root / "imgs" / "0001_a.jpg", 1)
    fr.write_image(root / "imgs" / "0002_b.jpg", 2)
    (root / "imgs" / "Thumbs.db").write_bytes(b"clutter")
    (root / "imgs" / ".DS_Store").write_bytes(b"clutter")
    (root / "labels.txt").write_text("x")
    return tmp_path / "manual", root


def _find(manual_dir, **kw):
    return rl.find_release(manual_dir, dataset="MyData", required=["imgs", "labels.txt"],
                           folder_names=["MyData-v1"], zip_names=["MyData-v1.zip"],
                           download="Get it from example.org.", **kw)


def test_release_error_is_a_value_error():
    assert issubclass(rl.ReleaseError, ValueError)


def test_finds_extracted_folder_and_ignores_os_clutter(tmp_path):
    manual, root = _release_tree(tmp_path)
    release = _find(manual)
    assert release.where() == str(root)
    assert release.list_files("imgs") == ["0001_a.jpg", "0002_b.jpg"]
    assert release.read("imgs/0001_a.jpg") == (root / "imgs" / "0001_a.jpg").read_bytes()


def test_finds_release_directly_in_manual_dir(tmp_path):
    _, root = _release_tree(tmp_path)
    assert _find(root).where() == str(root)


@pytest.mark.parametrize("arc_root", ["MyData-v1", "", "outer/MyData-v1"])
def test_finds_release_inside_zip_at_any_shallow_prefix(tmp_path, arc_root):
    _, root = _release_tree(tmp_path)
    zips = tmp_path / "zips"
    zips.mkdir()
    fr.zip_tree(root, zips / "MyData-v1.zip", arc_root=arc_root)
    release = _find(zips)
    assert release.zip_path == str(zips / "MyData-v1.zip")
    assert release.root == arc_root
    assert release.list_files("imgs") == ["0001_a.jpg", "0002_b.jpg"]
    assert release.read("imgs/0002_b.jpg") == (root / "imgs" / "0002_b.jpg").read_bytes()
    with release.local_file("labels.txt") as path:
        assert open(path).read() == "x"
    assert not os.path.exists(path)  # the extracted copy is removed


def test_missing_release_names_download_and_expected_paths(tmp_path):
    manual = tmp_path / "empty"
    manual.mkdir()
    with pytest.raises(rl.ReleaseError) as err:
        _find(manual)
    message = str(err.value)
    assert "MyData release not found" in message
    assert os.path.join(str(manual), "MyData-v1.zip") in message
    assert "example.org" in message


def test_missing_manual_dir_is_a_release_error(tmp_path):
    with pytest.raises(rl.ReleaseError, match="not found"):
        _find(tmp_path / "does-not-exist")


def test_incomplete_release_names_the_missing_path(tmp_path):
    manual, root = _release_tree(tmp_path)
    (root / "labels.txt").unlink()
    with pytest.raises(rl.ReleaseError) as err:
        _find(manual)
    assert "incomplete MyData release" in str(err.value)
    assert str(root / "labels.txt") in str(err.value)


def test_zip_without_the_release_is_an_error(tmp_path):
    zips = tmp_path / "zips"
    zips.mkdir()
    with zipfile.ZipFile(zips / "MyData-v1.zip", "w") as zf:
        zf.writestr("something/else.txt", "x")
    with pytest.raises(rl.ReleaseError, match="does not hold the MyData release"):
        _find(zips)


def test_zip_listing_a_file_twice_is_a_duplicate(tmp_path):
    zips = tmp_path / "zips"
    zips.mkdir()
    with pytest.warns(UserWarning):  # zipfile warns about the duplicate name itself
        with zipfile.ZipFile(zips / "MyData-v1.zip", "w") as zf:
            zf.writestr("MyData-v1/labels.txt", "x")
            zf.writestr("MyData-v1/imgs/a.jpg", "1")
            zf.writestr("MyData-v1/imgs/a.jpg", "2")
    with pytest.raises(rl.ReleaseError, match=r"duplicate file .*imgs/a\.jpg"):
        _find(zips)


def test_broken_zip_is_a_release_error(tmp_path):
    zips = tmp_path / "zips"
    zips.mkdir()
    (zips / "MyData-v1.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(rl.ReleaseError, match="cannot read the zip"):
        _find(zips)


def _parse(name):
    stem = name.split(".")[0]
    pid, _, rest = stem.partition("_")
    return (int(pid), 1, ()) if pid.isdigit() and rest else None


def test_scan_folder_rejects_unexpected_names(tmp_path):
    manual, root = _release_tree(tmp_path)
    fr.write_image(root / "imgs" / "oops.jpg", 3)
    with pytest.raises(rl.ReleaseError) as err:
        rl.scan_folder(_find(manual), "imgs", _parse, "names <pid>_<x>.jpg")
    assert str(root / "imgs" / "oops.jpg") in str(err.value)
    assert "expected names <pid>_<x>.jpg" in str(err.value)


def test_scan_folder_rejects_same_name_with_other_case_or_extension(tmp_path):
    manual, root = _release_tree(tmp_path)
    fr.write_image(root / "imgs" / "0001_a.png", 3)
    with pytest.raises(rl.ReleaseError, match=r"duplicate file .*0001_a"):
        rl.scan_folder(_find(manual), "imgs", _parse, "names")


def test_scan_folder_records(tmp_path):
    manual, _ = _release_tree(tmp_path)
    records = rl.scan_folder(_find(manual), "imgs", _parse, "names")
    assert [(r.relpath, r.pid) for r in records] == [("imgs/0001_a.jpg", 1), ("imgs/0002_b.jpg", 2)]


def test_check_unique_and_count(tmp_path):
    manual, _ = _release_tree(tmp_path)
    release = _find(manual)
    recs = [rl.Record("imgs/x.jpg", 5, 1), rl.Record("imgs/y.jpg", 5, 1)]
    with pytest.raises(rl.ReleaseError, match=r"duplicate file .*y\.jpg.*identity 5"):
        rl.check_unique(recs, lambda r: r.pid, release, "the image of identity")
    with pytest.raises(rl.ReleaseError, match="expected 3 images, found 2.*check_counts=False"):
        rl.check_count(2, 3, "images", "somewhere")
    rl.check_count(3, 3, "images", "somewhere")


def _encoded(fmt, mode="RGB"):
    out = io.BytesIO()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 8, 3), np.uint8))
    image.convert(mode).save(out, format=fmt)
    return out.getvalue()


def test_inspect_image_accepts_good_and_flags_truncated_images():
    assert rl.inspect_image(_encoded("JPEG")) == (None, False)
    assert rl.inspect_image(_encoded("PNG")) == (None, False)
    assert rl.inspect_image(_encoded("BMP")) == (None, False)
    data = _encoded("JPEG")
    problem, _ = rl.inspect_image(data[:len(data) // 2])
    assert problem and "cannot be decoded" in problem
    problem, _ = rl.inspect_image(b"hello, not an image")
    assert problem and "cannot be decoded" in problem


def test_non_rgb_images_are_converted_to_rgb_png():
    grey = _encoded("PNG", mode="L")
    assert rl.inspect_image(grey) == (None, True)
    converted = Image.open(io.BytesIO(rl.to_rgb_png(grey)))
    assert converted.mode == "RGB" and converted.size == (8, 16)


def _table(pids, camids):
    n = len(pids)
    return ImageTable(np.array([b""] * n + [b"x"], dtype=object)[:-1], pids, camids,
                      [f"f{i:03d}.png" for i in range(n)])


def test_split_ids_is_seeded_disjoint_and_sized():
    a = rl.split_ids(range(1, 21), 12, 8, np.random.default_rng(3))
    b = rl.split_ids(range(1, 21), 12, 8, np.random.default_rng(3))
    c = rl.split_ids(range(1, 21), 12, 8, np.random.default_rng(4))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert len(a[0]) == 12 and len(a[1]) == 8 and not set(a[0]) & set(a[1])
    with pytest.raises(rl.ReleaseError, match="cannot split 20 identities"):
        rl.split_ids(range(1, 21), 15, 8, np.random.default_rng(0))


def test_one_per_id_picks_one_row_per_identity():
    table = _table([1, 1, 1, 2, 2, 3], [1, 1, 2, 1, 2, 1])
    rows = rl.one_per_id(table, np.arange(6), np.random.default_rng(0))
    assert sorted(table.pids[rows].tolist()) == [1, 2, 3]
    picks = {tuple(rl.one_per_id(table, np.arange(6), np.random.default_rng(s))) for s in range(20)}
    assert len(picks) > 1  # the choice depends on the generator
    assert rl.rows_of(table, [1], camids=[2]).tolist() == [2]


def test_resolve_protocol():
    protocols = {"a": "", "b": ""}
    assert rl.resolve_protocol(protocols, None, "x") == "a"
    assert rl.resolve_protocol(protocols, "b", "x") == "b"
    with pytest.raises(ValueError, match="unknown protocol 'c'"):
        rl.resolve_protocol(protocols, "c", "x")
