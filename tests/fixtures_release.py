"""Writers of fake benchmark releases in their exact layouts, with tiny synthetic images.

Every image is random noise made with numpy and saved with PIL; nothing here comes from a real
data set. The writers return what they wrote so tests can compare counts.
"""
from __future__ import annotations

import itertools
import os
import pathlib
import shutil
import zipfile
import zlib

import numpy as np
from PIL import Image

SIZE = (6, 12)  # width, height: tiny, tall like a pedestrian box


def write_image(path, seed: int = 0, size: tuple[int, int] = SIZE,
                mode: str = "RGB") -> pathlib.Path:
    """Random-noise image; the format follows the extension (.jpg/.jpeg, .png, .bmp)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(array, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[path.suffix.lower()]
    image.save(path, format=fmt)
    return path


def truncate(path, keep: float = 0.5) -> None:
    """Cuts a file to a fraction of its bytes (a truncated download)."""
    data = pathlib.Path(path).read_bytes()
    pathlib.Path(path).write_bytes(data[:max(1, int(len(data) * keep))])


def zip_tree(src, zip_path, arc_root: str | None = None) -> pathlib.Path:
    """Zips folder `src` so that its entries start with `arc_root/` (default: src's name)."""
    src, zip_path = pathlib.Path(src), pathlib.Path(zip_path)
    arc_root = src.name if arc_root is None else arc_root
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                arc = "/".join(p for p in (arc_root, path.relative_to(src).as_posix()) if p)
                zf.write(path, arc)
    return zip_path


def copy_tree(src, dst) -> pathlib.Path:
    shutil.copytree(src, dst)
    return pathlib.Path(dst)


# --------------------------------------------------------------------------------------------
# Market-1501
# --------------------------------------------------------------------------------------------

def market_name(pid: int, cam: int, frame: int, box: int = 0, seq: int = 1) -> str:
    prefix = "-1" if pid == -1 else f"{pid:04d}"
    return f"{prefix}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"


def make_market(manual_dir, folder: str = "Market-1501-v15.09.15", train_ids=(2, 7, 10, 11),
                test_ids=(1, 3, 5), distractors: int = 3, junk: int = 2) -> dict:
    """A tiny Market-1501 release; returns {split: [file names]} and the root."""
    root = pathlib.Path(manual_dir) / folder
    files = {"train": [], "query": [], "gallery": [], "gt_bbox": []}
    seed = itertools.count()
    frame = itertools.count(100, 7)

    def put(split, folder_name, name):
        write_image(root / folder_name / name, next(seed))
        files[split].append(name)

    for pid in train_ids:
        for cam in (1, 2, 3):
            put("train", "bounding_box_train", market_name(pid, cam, next(frame), 1))
            put("gt_bbox", "gt_bbox", market_name(pid, cam, next(frame)))
    for pid in test_ids:
        for cam in (1, 2):
            query_frame = next(frame)
            put("query", "query", market_name(pid, cam, query_frame))
            # gt_bbox holds the query box itself and another of the same pid and camera
            put("gt_bbox", "gt_bbox", market_name(pid, cam, query_frame))
            put("gt_bbox", "gt_bbox", market_name(pid, cam, next(frame)))
        for cam in (1, 2, 4):
            put("gallery", "bounding_box_test", market_name(pid, cam, next(frame), 2))
        put("gt_bbox", "gt_bbox", market_name(pid, 5, next(frame)))  # a camera with no query
    for i in range(distractors):
        put("gallery", "bounding_box_test", market_name(0, 1 + i % 6, next(frame), 3))
    for i in range(junk):
        put("gallery", "bounding_box_test", market_name(-1, 1 + i % 6, next(frame), 4))
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image")
    return {"root": root, **files}


def make_market_layout(manual_dir, folder: str = "cuhk03_pair1_market", train_ids=(1, 2, 3),
                       test_ids=(7, 8), per_cam: int = 2) -> dict:
    """A CUHK03 conversion in the Market layout (cameras 1-2, `_00` boxes)."""
    root = pathlib.Path(manual_dir) / folder
    files = {"train": [], "query": [], "gallery": []}
    seed = itertools.count(1000)
    index = itertools.count()
    for pid in train_ids:
        for cam in (1, 2):
            for _ in range(per_cam):
                name = f"{pid:04d}_c{cam}s1_{next(index):06d}_00.jpg"
                write_image(root / "bounding_box_train" / name, next(seed))
                files["train"].append(name)
    for pid in test_ids:
        for cam in (1, 2):
            name = f"{pid:04d}_c{cam}s1_{next(index):06d}_00.jpg"
            write_image(root / "query" / name, next(seed))
            files["query"].append(name)
            for _ in range(per_cam):
                name = f"{pid:04d}_c{cam}s1_{next(index):06d}_00.jpg"
                write_image(root / "bounding_box_test" / name, next(seed))
                files["gallery"].append(name)
    return {"root": root, **files}


# --------------------------------------------------------------------------------------------
# CUHK01, GRID, VIPeR
# --------------------------------------------------------------------------------------------

def make_cuhk01(manual_dir, num_ids: int = 971, folder: str | None = None) -> pathlib.Path:
    """`campus/<pid:04d><image:03d>.png`, 4 images per identity. Returns the campus folder."""
    base = pathlib.Path(manual_dir) / folder if folder else pathlib.Path(manual_dir)
    campus = base / "campus"
    for pid in range(1, num_ids + 1):
        for image in range(1, 5):
            write_image(campus / f"{pid:04d}{image:03d}.png", pid * 10 + image, size=(4, 8))
    return campus


def grid_name(pid: int, cam: int, frame: int) -> str:
    return f"{pid:04d}_{cam}_{frame}_{10 + pid % 90}_{20 + frame % 50}_30_70.jpeg"


def make_grid(manual_dir, num_ids: int = 250, distractors: int = 775,
              folder: str = "underground_reid") -> pathlib.Path:
    """`underground_reid/{probe,gallery}`; the probe camera is lower than the gallery camera."""
    root = pathlib.Path(manual_dir) / folder
    frame = itertools.count(25000, 3)
    for pid in range(1, num_ids + 1):
        cam = 1 + pid % 4
        write_image(root / "probe" / grid_name(pid, cam, next(frame)), pid, size=(4, 8))
        write_image(root / "gallery" / grid_name(pid, cam + 1 + pid % 3, next(frame)),
                    10000 + pid, size=(4, 8))
    for i in range(distractors):
        write_image(root / "gallery" / grid_name(0, 1 + i % 8, next(frame)), 20000 + i,
                    size=(4, 8))
    return root


def grid_splits(num_ids: int = 250, num_splits: int = 10, num_train: int = 125,
                seed: int = 123) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [sorted(int(x) for x in rng.permutation(np.arange(1, num_ids + 1))[:num_train])
            for _ in range(num_splits)]


def write_grid_partitions(path, train_lists: list[list[int]], as_struct: bool = True) -> None:
    """features_and_partitions.mat with trainIdxAll: a 1xN cell (of structs, like the release)."""
    import scipy.io

    cells = np.empty((1, len(train_lists)), dtype=object)
    for i, ids in enumerate(train_lists):
        ids = np.asarray(ids, dtype=np.float64).reshape(1, -1)
        if as_struct:
            cells[0, i] = {"probeImIdx": 2 * ids, "galleryImIdx": 2 * ids - 1, "personIdx": ids}
        else:
            cells[0, i] = ids
    scipy.io.savemat(str(path), {"trainIdxAll": cells,
                                 "ftrset": np.zeros((2, 2))})


def write_grid_splits_json(path, train_lists: list[list[int]], num_ids: int = 250) -> None:
    import json

    everyone = set(range(1, num_ids + 1))
    pathlib.Path(path).write_text(json.dumps(
        [{"train_ids": ids, "test_ids": sorted(everyone - set(ids))} for ids in train_lists]))


def make_viper(manual_dir, num_ids: int = 632, folder: str = "VIPeR", seed: int = 5) -> dict:
    """`VIPeR/cam_a`, `VIPeR/cam_b`: `<number:03d>_<angle>.bmp`, numbers 000-873 with gaps."""
    root = pathlib.Path(manual_dir) / folder
    rng = np.random.default_rng(seed)
    numbers = sorted(int(n) for n in rng.choice(874, size=num_ids, replace=False))
    if 0 not in numbers:
        numbers[0] = 0
    angles = (0, 45, 90, 135, 180)
    for k, number in enumerate(numbers):
        write_image(root / "cam_a" / f"{number:03d}_{angles[k % 5]}.bmp", k, size=(4, 8))
        write_image(root / "cam_b" / f"{number:03d}_{angles[(k + 2) % 5]}.bmp", 5000 + k,
                    size=(4, 8))
    return {"root": root, "numbers": numbers}


# --------------------------------------------------------------------------------------------
# CUHK03: cuhk-03.mat (MATLAB v7.3 / HDF5) and the new-protocol configs (MATLAB v5)
# --------------------------------------------------------------------------------------------

MATLAB_HEADER = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
                 b"HDF5 schema 1.00 .")


def _ref_names():
    for n in itertools.count():
        name = ""
        while True:
            name = chr(ord("a") + n % 26) + name
            n = n // 26 - 1
            if n < 0:
                break
        yield name


def cuhk03_image_shape(source: str, pair: int, index: int, column: int) -> tuple[int, int]:
    """(height, width) of a fixture image: varies so that orientation mistakes show."""
    return 12 + (index + column) % 3 + (source == "detected"), 5 + pair % 2


def make_cuhk03_mat(path, pair_sizes=(4, 3, 3, 2, 2), empty=(), corrupt=(),
                    testsets=None) -> dict:
    """A small cuhk-03.mat laid out like MATLAB v7.3 writes it.

    Root variables `labeled`, `detected` (1x5 as stored: MATLAB 5x1 cells) and `testsets`
    hold object references into the `#refs#` group. A pair's cell is stored (10, ids); an image
    (H, W, 3) is stored transposed as (3, W, H); an empty cell is a (2,) uint64 zeros dataset
    with MATLAB_empty=1 (in `detected` without the attribute, which readers must also accept).
    A corrupt cell holds a 4x4 uint8 array. `empty` / `corrupt`: (source, pair, index, column)
    with 1-based pair and index and 0-based column. `testsets`: list of [(pair, index), ...], default 3 sets of
    3 identities. Returns {"images": {source: count}, "testsets": ...}.
    """
    import h5py

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if testsets is None:
        testsets = [[(1, 1), (2, 2), (3, 1)], [(1, 2), (1, 3), (5, 2)], [(2, 1), (4, 1), (1, 4)]]
    names = _ref_names()
    counts = {}
    with h5py.File(path, "w", userblock_size=512, libver="earliest") as f:
        refs = f.create_group("#refs#")

        def put(data, cls):
            ds = refs.create_dataset(next(names), data=data)
            ds.attrs["MATLAB_class"] = np.bytes_(cls)
            return ds

        for source in ("labeled", "detected"):
            counts[source] = 0
            pair_refs = []
            for p, n in enumerate(pair_sizes, start=1):
                cell = np.empty((10, n), dtype=h5py.ref_dtype)
                for i in range(1, n + 1):
                    for c in range(10):
                        key = (source, p, i, c)
                        if key in empty:
                            ds = put(np.zeros(2, np.uint64), "double")
                            if source == "labeled":  # detected: the bare (2,) zeros form
                                ds.attrs["MATLAB_empty"] = np.uint8(1)
                        elif key in corrupt:
                            ds = put(np.zeros((4, 4), np.uint8), "uint8")  # not an RGB image
                        else:
                            h, w = cuhk03_image_shape(source, p, i, c)
                            seed = zlib.crc32(repr(key).encode())
                            image = np.random.default_rng(seed).integers(0, 256, (h, w, 3),
                                                                         dtype=np.uint8)
                            image[0, 0] = (p, i, c)  # a marker the tests can read back
                            ds = put(image.T, "uint8")
                            counts[source] += 1
                        cell[c, i - 1] = ds.ref
                pair_refs.append(put(cell, "cell").ref)
            top = f.create_dataset(source, data=np.array([pair_refs], dtype=h5py.ref_dtype))
            top.attrs["MATLAB_class"] = np.bytes_("cell")
        test_refs = [put(np.asarray(ts, np.float64).T, "double").ref for ts in testsets]
        top = f.create_dataset("testsets", data=np.array([test_refs], dtype=h5py.ref_dtype))
        top.attrs["MATLAB_class"] = np.bytes_("cell")
    with open(path, "r+b") as fh:
        fh.write(MATLAB_HEADER.ljust(128, b" ")[:116] + b"\x00" * 8 + b"\x00\x02IM")
    return {"images": counts, "testsets": testsets, "pair_sizes": tuple(pair_sizes)}


def cuhk03_file(pair: int, index: int, column: int) -> str:
    return f"{pair}_{index:03d}_{1 if column < 5 else 2}_{column + 1:02d}.png"


def make_cuhk03_new_config(path, pair_sizes=(4, 3, 3, 2, 2), empty=(), source: str = "labeled",
                           test_people=((1, 1), (2, 2), (3, 1), (5, 1)), seed: int = 0) -> dict:
    """cuhk03_new_protocol_config_<source>.mat (MATLAB v5) for a fixture cuhk-03.mat.

    Train: every image of the other identities. Test identities: one query per view, the rest
    gallery. labels are global identity numbers (pair order), camId the view.
    """
    import scipy.io

    files, labels, cams, people = [], [], [], []
    label = 0
    for p, n in enumerate(pair_sizes, start=1):
        for i in range(1, n + 1):
            label += 1
            for c in range(10):
                if (source, p, i, c) in empty:
                    continue
                files.append(cuhk03_file(p, i, c))
                labels.append(label)
                cams.append(1 if c < 5 else 2)
                people.append((p, i))
    rng = np.random.default_rng(seed)
    train, query, gallery = [], [], []
    test_people = set(test_people)
    for person in sorted(set(people)):
        rows = [k for k, who in enumerate(people) if who == person]
        if person not in test_people:
            train += rows
            continue
        for view in (1, 2):
            mine = [k for k in rows if cams[k] == view]
            pick = int(rng.integers(len(mine)))
            query.append(mine[pick])
            gallery += [k for j, k in enumerate(mine) if j != pick]
    column = lambda v: np.asarray(v, np.float64).reshape(-1, 1)  # noqa: E731
    filelist = np.empty((len(files), 1), dtype=object)
    for k, name in enumerate(files):
        filelist[k, 0] = name
    scipy.io.savemat(str(path), {
        "filelist": filelist, "labels": column(labels), "camId": column(cams),
        "train_idx": column(np.asarray(train) + 1), "query_idx": column(np.asarray(query) + 1),
        "gallery_idx": column(np.asarray(gallery) + 1)})
    return {"train": [files[k] for k in train], "query": [files[k] for k in query],
            "gallery": [files[k] for k in gallery]}


# --------------------------------------------------------------------------------------------
# Folder data set
# --------------------------------------------------------------------------------------------

def make_folder(root, with_cameras: bool = True, train_name: str = "train",
                gallery_name: str = "gallery") -> dict:
    """train/query/gallery with Market-like names (or `<pid>_<anything>` without cameras)."""
    root = pathlib.Path(root)
    seed = itertools.count(3000)
    files = {"train": [], "query": [], "gallery": []}

    def name(pid, cam, k):
        return f"{pid}_c{cam}_{k:04d}.png" if with_cameras else f"{pid}_view{cam}x{k}.png"

    k = itertools.count()
    for pid in (11, 12, 13):
        for cam in (1, 2):
            files["train"].append(name(pid, cam, next(k)))
            write_image(root / train_name / files["train"][-1], next(seed))
    for pid in (21, 22):
        for cam in (1, 2):
            files["query"].append(name(pid, cam, next(k)))
            write_image(root / "query" / files["query"][-1], next(seed))
            for _ in range(2):
                files["gallery"].append(name(pid, cam, next(k)))
                write_image(root / gallery_name / files["gallery"][-1], next(seed))
    files["gallery"].append(name(0, 3, next(k)))
    write_image(root / gallery_name / files["gallery"][-1], next(seed))
    return {"root": root, **files}


def listing(folder) -> list[str]:
    return sorted(os.listdir(folder))
