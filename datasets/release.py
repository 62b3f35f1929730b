"""Shared helpers for the benchmark builders: finding a release, checking it, seeded splits.

A *release* is a data set as its authors distribute it, found under the TFDS manual directory
either extracted (a folder) or still packed (the official zip). `find_release` locates it and
returns a `Release`, which lists and reads files the same way in both cases.

Every builder checks what it reads and raises `ReleaseError` (a `ValueError`) naming the file or
folder at fault: a missing release (with what to download and where to put it), a file name the
release never uses, a duplicate, an image or identity count that differs from the published
totals (`check_counts=False` turns the count checks off, for subsets and test fixtures) and a
corrupt or truncated image (`skip_corrupt=True` skips it instead, with a warning, and the
skipped files are reported in `ReidData.info`). A data set is never silently partial.

`ReleaseBuilder` is the TFDS `GeneratorBasedBuilder` the data set modules derive from: a module
supplies `_plan(manual_dir)` (find the release, parse and check its names, return the records
of every split) and the rest (image checks, metadata, generation) is shared.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import pathlib
import shutil
import tempfile
import zipfile
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from jlml_tf.data.types import DISTRACTOR_PID, ImageTable, ReidData, Trial
from jlml_tf_datasets import base

# Files that operating systems drop into image folders; never part of a release.
IGNORED_FILE_NAMES = {"thumbs.db", ".ds_store", "desktop.ini"}
IMAGE_FORMATS = ("JPEG", "PNG", "BMP")
CHECK_COUNTS_HINT = ("pass check_counts=False to load a subset or a modified copy of the "
                     "release on purpose")


class ReleaseError(ValueError):
    """The release on disk is missing, incomplete or not what the builder expects."""


def is_ignored(name: str) -> bool:
    """True for OS clutter (Thumbs.db, .DS_Store, hidden and macOS resource files)."""
    parts = name.replace("\\", "/").split("/")
    leaf = parts[-1]
    return ("__MACOSX" in parts or leaf.lower() in IGNORED_FILE_NAMES or leaf.startswith("."))


# --------------------------------------------------------------------------------------------
# Finding and reading a release
# --------------------------------------------------------------------------------------------

class Release:
    """A release root: a folder on disk, or a folder inside a zip file ('' = the zip root).

    Relative paths always use '/' and are relative to the release root; `where(rel)` gives the
    full location for error messages.
    """

    def __init__(self, root: str | os.PathLike, zip_path: str | os.PathLike | None = None,
                 zip_files: dict[str, zipfile.ZipInfo] | None = None):
        self.zip_path = os.fspath(zip_path) if zip_path else None
        self.root = os.fspath(root) if not zip_path else str(root).strip("/")
        self._zip: zipfile.ZipFile | None = None
        self._zip_files = zip_files
        if self.zip_path and self._zip_files is None:
            self._zip_files = zip_index(self.zip_path)

    # -- description ---------------------------------------------------------------------
    def where(self, rel: str = "") -> str:
        rel = rel.strip("/")
        if self.zip_path:
            inner = "/".join(p for p in (self.root, rel) if p)
            return f"{self.zip_path}:{inner}" if inner else self.zip_path
        return os.path.join(self.root, *rel.split("/")) if rel else self.root

    def __repr__(self) -> str:
        return f"Release({self.where()!r})"

    # -- queries ---------------------------------------------------------------------------
    def _inner(self, rel: str) -> str:
        rel = rel.strip("/")
        return "/".join(p for p in (self.root, rel) if p)

    def is_file(self, rel: str) -> bool:
        if self.zip_path:
            return self._inner(rel) in self._zip_files
        return os.path.isfile(self.where(rel))

    def is_dir(self, rel: str) -> bool:
        if self.zip_path:
            inner = self._inner(rel)
            prefix = inner + "/" if inner else ""
            return any(name.startswith(prefix) for name in self._zip_files)
        return os.path.isdir(self.where(rel))

    def exists(self, rel: str) -> bool:
        return self.is_file(rel) or self.is_dir(rel)

    def list_files(self, folder: str) -> list[str]:
        """Names of the files directly inside `folder` (sorted, OS clutter left out)."""
        if not self.is_dir(folder):
            raise ReleaseError(f"missing folder {self.where(folder)} in the release at "
                               f"{self.where()}")
        if self.zip_path:
            prefix = self._inner(folder)
            prefix = prefix + "/" if prefix else ""
            names = [n[len(prefix):] for n in self._zip_files if n.startswith(prefix)]
            names = [n for n in names if n and "/" not in n]
        else:
            with os.scandir(self.where(folder)) as it:
                names = [e.name for e in it if e.is_file()]
        return sorted(n for n in names if not is_ignored(n))

    def read(self, rel: str) -> bytes:
        if self.zip_path:
            if self._zip is None:
                self._zip = zipfile.ZipFile(self.zip_path)
            return self._zip.read(self._zip_files[self._inner(rel)])
        with open(self.where(rel), "rb") as f:
            return f.read()

    @contextlib.contextmanager
    def local_file(self, rel: str) -> Iterator[str]:
        """A path on disk for `rel` (extracted to a temporary folder when inside a zip)."""
        if not self.zip_path:
            yield self.where(rel)
            return
        tmp = tempfile.mkdtemp(prefix="jlml_release_")
        try:
            target = os.path.join(tmp, rel.strip("/").split("/")[-1])
            with zipfile.ZipFile(self.zip_path) as zf, zf.open(
                    self._zip_files[self._inner(rel)]) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            yield target
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def fingerprint(self, folders: Iterable[str]) -> str:
        """A short hash of the names, sizes and times of the files in `folders`."""
        digest = hashlib.sha1()
        for folder in folders:
            if not self.is_dir(folder):
                continue
            for name in self.list_files(folder):
                rel = f"{folder}/{name}"
                if self.zip_path:
                    info = self._zip_files[self._inner(rel)]
                    stamp = (info.file_size, info.date_time, info.CRC)
                else:
                    st = os.stat(self.where(rel))
                    stamp = (st.st_size, st.st_mtime_ns)
                digest.update(f"{rel}|{stamp}\n".encode())
        digest.update(self.where().encode())
        return digest.hexdigest()[:12]


def zip_index(zip_path: str) -> dict[str, zipfile.ZipInfo]:
    """File entries of a zip by name; an entry listed twice is a ReleaseError."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ReleaseError(f"cannot read the zip file {zip_path}: {e}. Download it again.") from e
    files: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if info.is_dir():
            continue
        name = info.filename.replace("\\", "/")
        if name in files:
            raise ReleaseError(f"duplicate file {zip_path}:{name}: the zip lists it twice; "
                               "expected every file once")
        files[name] = info
    return files


def _zip_prefixes(files: dict[str, zipfile.ZipInfo], depth: int = 2) -> list[str]:
    """'' and every folder of the zip up to `depth` levels deep, shallowest first."""
    prefixes = {""}
    for name in files:
        parts = name.split("/")[:-1]
        for d in range(1, min(depth, len(parts)) + 1):
            prefixes.add("/".join(parts[:d]))
    return sorted(prefixes, key=lambda p: (p.count("/") + bool(p), p))


def find_release(manual_dir: str | os.PathLike | None, *, dataset: str, required: Sequence[str],
                 folder_names: Sequence[str] = (), zip_names: Sequence[str] = (),
                 download: str = "") -> Release:
    """Finds a release under `manual_dir`: the folder itself, a named sub-folder or a zip.

    `required` lists paths (files or folders) that must all exist at the release root. Looks,
    in order, at `manual_dir`, `manual_dir/<folder_name>` and `manual_dir/<zip_name>` (at its
    root or in one of its folders up to two levels deep). Raises ReleaseError naming what is
    missing and where to put the download.
    """
    looked: list[str] = []
    partial: tuple[str, list[str]] | None = None
    if manual_dir is not None and os.path.isdir(manual_dir):
        for candidate in [os.fspath(manual_dir)] + [os.path.join(manual_dir, n)
                                                    for n in folder_names]:
            if not os.path.isdir(candidate):
                looked.append(candidate)
                continue
            release = Release(candidate)
            missing = [r for r in required if not release.exists(r)]
            if not missing:
                return release
            looked.append(candidate)
            if len(missing) < len(required) and partial is None:
                partial = (candidate, missing)
        for zip_name in zip_names:
            zip_path = os.path.join(manual_dir, zip_name)
            looked.append(zip_path)
            if not os.path.isfile(zip_path):
                continue
            files = zip_index(zip_path)
            for prefix in _zip_prefixes(files):
                release = Release(prefix, zip_path=zip_path, zip_files=files)
                if all(release.exists(r) for r in required):
                    return release
            raise ReleaseError(
                f"{zip_path} does not hold the {dataset} release: expected "
                f"{', '.join(required)} at its root or in one of its folders. {download}")
    if partial is not None:
        candidate, missing = partial
        raise ReleaseError(
            f"incomplete {dataset} release at {candidate}: missing "
            f"{', '.join(os.path.join(candidate, m) for m in missing)}. {download}")
    where = os.fspath(manual_dir) if manual_dir is not None else "<manual_dir>"
    targets = [os.path.join(where, z) for z in zip_names] + [
        os.path.join(where, f) + os.sep for f in folder_names]
    raise ReleaseError(
        f"{dataset} release not found under {where}. {download} Put it at "
        f"{' or '.join(targets) if targets else where} (a folder holding "
        f"{', '.join(required)}). Looked in: {', '.join(looked) or where}.")


def find_file(manual_dir: str | os.PathLike | None, names: Sequence[str],
              release: Release | None = None) -> tuple[Release, str] | None:
    """An optional extra file: in the release root, or loose in `manual_dir`."""
    for name in names:
        if release is not None and release.is_file(name):
            return release, name
        if manual_dir is not None and os.path.isfile(os.path.join(manual_dir, name)):
            return Release(manual_dir), name
    return None


# --------------------------------------------------------------------------------------------
# Names, duplicates, counts
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Record:
    """One image of a release: where it is and what it shows."""

    relpath: str  # relative to the release root, '/'-separated; the example key
    pid: int
    camid: int
    fields: tuple = ()  # parsed name fields a builder needs for its own checks


def scan_folder(release: Release, folder: str,
                parse: Callable[[str], tuple[int, int, tuple] | None],
                expected: str) -> list[Record]:
    """Records of every file in `folder`, parsed by `parse(name) -> (pid, camid, fields)`.

    `parse` returns None for a name the release never uses: a ReleaseError naming the file and
    `expected` (a description of the valid names). Two files with the same name up to case and
    extension (e.g. `a.jpg` and `a.JPG`) are duplicates.
    """
    records, seen = [], {}
    for name in release.list_files(folder):
        parsed = parse(name)
        if parsed is None:
            raise ReleaseError(f"unexpected file {release.where(folder + '/' + name)}: "
                               f"expected {expected}")
        key = os.path.splitext(name)[0].lower()
        if key in seen:
            raise ReleaseError(
                f"duplicate file {release.where(folder + '/' + name)}: "
                f"{release.where(folder + '/' + seen[key])} is the same image name; expected "
                "each image once")
        seen[key] = name
        pid, camid, fields = parsed
        records.append(Record(f"{folder}/{name}", int(pid), int(camid), tuple(fields)))
    return records


def check_unique(records: Sequence[Record], key: Callable[[Record], Any], release: Release,
                 what: str) -> None:
    """ReleaseError if two records share `key` (e.g. two probe images of one identity)."""
    seen: dict[Any, Record] = {}
    for rec in records:
        k = key(rec)
        if k in seen:
            raise ReleaseError(f"duplicate file {release.where(rec.relpath)}: "
                               f"{release.where(seen[k].relpath)} is already {what} {k}; "
                               "expected one such image")
        seen[k] = rec


def check_count(actual: int, expected: int, what: str, where: str) -> None:
    if actual != expected:
        raise ReleaseError(f"{where}: expected {expected} {what}, found {actual}; "
                           f"{CHECK_COUNTS_HINT}")


def pid_count(records: Iterable[Record], exclude: Sequence[int] = (0, -1)) -> int:
    return len({r.pid for r in records if r.pid not in exclude})


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

def inspect_image(data: bytes) -> tuple[str | None, bool]:
    """(problem or None, needs RGB conversion). Decodes fully, so truncation is caught."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            im.load()
            mode, size = im.mode, im.size
    except Exception as e:  # noqa: BLE001 - any decoder failure means a broken file
        return f"cannot be decoded ({type(e).__name__}: {e})", False
    if fmt not in IMAGE_FORMATS:
        return f"format {fmt} is not one of {', '.join(IMAGE_FORMATS)}", False
    if min(size) < 1:
        return f"has an empty size {size}", False
    return None, mode != "RGB"


def to_rgb_png(data: bytes) -> bytes:
    """Re-encodes an image that is not 3-channel RGB (grey, palette, RGBA, CMYK) as RGB PNG."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    out = io.BytesIO()
    rgb.save(out, format="PNG")
    return out.getvalue()


def encode_png(array: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="RGB").save(out, "PNG")
    return out.getvalue()


def corrupt_message(where: str, problem: str) -> str:
    return (f"corrupt or truncated image {where}: {problem}. Replace it from the original "
            "release, or pass skip_corrupt=True to skip it (skipped files are listed in "
            "ReidData.info['skipped_files'])")


# --------------------------------------------------------------------------------------------
# The TFDS builder every release module derives from
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Plan:
    """What `_plan` found: the release, each split's records, and metadata to store."""

    release: Release | None
    splits: dict[str, list[Record]]
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    # For images that are not release files (e.g. arrays in a .mat): a callable that takes a
    # split's records and yields (record, encoded bytes), leaving out the records it skips.
    reader: Callable[[list[Record]], Iterator[bytes]] | None = None


class ReleaseBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the release builders. Builder kwargs: check_counts, skip_corrupt."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "See the module documentation."
    HOMEPAGE = ""
    DATASET = "release"

    def __init__(self, *, check_counts: bool = True, skip_corrupt: bool = False, **kwargs):
        self.check_counts = bool(check_counts)
        self.skip_corrupt = bool(skip_corrupt)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=(type(self).__doc__ or "").strip(),
                                     features=base.reid_features(), homepage=self.HOMEPAGE,
                                     metadata=tfds.core.MetadataDict())

    # -- to implement -----------------------------------------------------------------------
    def _plan(self, manual_dir: str | None) -> Plan:
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------
    def _split_generators(self, dl_manager):
        manual_dir = getattr(dl_manager, "_manual_dir", None)
        if manual_dir is None:
            try:
                manual_dir = dl_manager.manual_dir
            except (AssertionError, ValueError):  # not set, or missing/empty: _plan reports it
                manual_dir = None
        plan = self._plan(os.fspath(manual_dir) if manual_dir else None)
        skipped, converted = [], set()
        if plan.reader is None:
            for records in plan.splits.values():
                for rec in records:
                    problem, needs_rgb = inspect_image(plan.release.read(rec.relpath))
                    if problem is None:
                        if needs_rgb:
                            converted.add(rec.relpath)
                        continue
                    where = plan.release.where(rec.relpath)
                    if not self.skip_corrupt:
                        raise ReleaseError(corrupt_message(where, problem))
                    logging.warning("skipping corrupt image %s: %s", where, problem)
                    skipped.append(rec.relpath)
        else:
            skipped = list(plan.metadata.pop("skipped_files", []))
        drop = set(skipped)
        metadata = dict(plan.metadata)
        metadata.update(release=plan.release.where() if plan.release else None,
                        check_counts=self.check_counts, skip_corrupt=self.skip_corrupt,
                        skipped_files=sorted(skipped), converted_to_rgb=sorted(converted))
        self.info.metadata.update(metadata)
        return {split: self._generate_examples(plan, [r for r in records if r.relpath not in drop],
                                               converted)
                for split, records in plan.splits.items()}

    def _generate_examples(self, plan: Plan, records: list[Record], converted: set[str]):
        if plan.reader is not None:
            for rec, data in plan.reader(records):
                yield rec.relpath, base.example(data, rec.pid, rec.camid, rec.relpath)
            return
        for rec in records:
            data = plan.release.read(rec.relpath)
            if rec.relpath in converted:
                data = to_rgb_png(data)
            yield rec.relpath, base.example(data, rec.pid, rec.camid, rec.relpath)


def default_manual_dir(data_dir: str | None) -> str:
    return os.path.join(data_dir or base.DEFAULT_DATA_DIR, "downloads", "manual")


def prepare_release(builder_cls, *, data_dir: str | None, manual_dir: str | None,
                    config=None, check_counts: bool = True, skip_corrupt: bool = False,
                    **builder_kwargs) -> tfds.core.DatasetBuilder:
    """Builds (once) and returns the builder; refuses a cache built with weaker checks."""
    manual_dir = os.fspath(manual_dir) if manual_dir else default_manual_dir(data_dir)
    builder = base.prepare(builder_cls, data_dir=data_dir, manual_dir=manual_dir, config=config,
                           check_counts=check_counts, skip_corrupt=skip_corrupt, **builder_kwargs)
    meta = builder.info.metadata
    if check_counts and not meta.get("check_counts", True):
        raise ReleaseError(
            f"the prepared data at {builder.data_dir} was built with check_counts=False (a "
            "subset or modified release); delete that folder to rebuild from the full release, "
            "or pass check_counts=False")
    if meta.get("skipped_files") and not skip_corrupt:
        raise ReleaseError(
            f"the prepared data at {builder.data_dir} was built with skip_corrupt=True and "
            f"lacks {len(meta['skipped_files'])} corrupt images "
            f"({', '.join(meta['skipped_files'][:5])}); pass skip_corrupt=True to use it, or "
            "delete that folder and rebuild from a repaired release")
    return builder


def read_splits(builder, splits: Sequence[str]) -> tuple[ImageTable, dict[str, np.ndarray]]:
    return base.read_table(builder, list(splits))


def base_info(builder, protocol_description: str) -> dict[str, Any]:
    meta = builder.info.metadata
    skipped = list(meta.get("skipped_files", []))
    return {
        "release": meta.get("release"),
        "prepared_at": os.fspath(builder.data_dir),
        "protocol_description": protocol_description,
        "counts_checked": bool(meta.get("check_counts", True)),
        "skipped_corrupt": len(skipped),
        "skipped_files": skipped,
        "converted_to_rgb": len(meta.get("converted_to_rgb", [])),
    }


# --------------------------------------------------------------------------------------------
# Seeded splits
# --------------------------------------------------------------------------------------------

def split_ids(ids: Iterable[int], num_train: int, num_test: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random partition of `ids` (sorted first) into num_train and num_test identities."""
    ids = np.unique(np.asarray(list(ids), dtype=np.int64))
    if num_train + num_test > len(ids):
        raise ReleaseError(f"cannot split {len(ids)} identities into {num_train} train and "
                           f"{num_test} test identities")
    perm = rng.permutation(ids)
    return np.sort(perm[:num_train]), np.sort(perm[num_train:num_train + num_test])


def rows_of(table: ImageTable, pids: Iterable[int], rows: np.ndarray | None = None,
            camids: Iterable[int] | None = None) -> np.ndarray:
    """Rows (of `rows`, default all) whose pid is in `pids` (and camid in `camids`)."""
    rows = np.arange(len(table)) if rows is None else np.asarray(rows, np.int64)
    keep = np.isin(table.pids[rows], np.asarray(list(pids), np.int64))
    if camids is not None:
        keep &= np.isin(table.camids[rows], np.asarray(list(camids), np.int64))
    return rows[keep]


def one_per_id(table: ImageTable, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly chosen row per identity among `rows` (identities in sorted order)."""
    rows = np.asarray(rows, np.int64)
    rows = rows[np.lexsort((table.filenames[rows], table.pids[rows]))]
    pids = table.pids[rows]
    chosen = []
    for pid in np.unique(pids):
        mine = rows[pids == pid]
        chosen.append(mine[rng.integers(len(mine))])
    return np.asarray(chosen, np.int64)


def make_reid_data(name: str, protocol: str, table: ImageTable, trials: list[Trial],
                   info: dict[str, Any], **flags) -> ReidData:
    return ReidData(name=name, protocol=protocol, table=table, trials=trials, info=info, **flags)


TRAIN_ALL = "train_all"
TRAIN_ALL_DESCRIPTION = ("training only (for --extra_train): every identity, one trial with "
                         "empty query and gallery")


def train_all_trial(table: ImageTable) -> Trial:
    """The `train_all` protocol's one trial: every labelled image (no distractors, no junk)."""
    empty = np.zeros(0, np.int64)
    labelled = np.flatnonzero(table.pids > DISTRACTOR_PID).astype(np.int64)
    return Trial("all", labelled, empty, empty)


def resolve_protocol(protocols: dict[str, str], protocol: str | None, dataset: str) -> str:
    if protocol is None:
        return next(iter(protocols))
    if protocol not in protocols:
        raise ValueError(f"unknown protocol {protocol!r} for {dataset}; known: "
                         f"{sorted(protocols)}")
    return protocol


def as_path(p: str | os.PathLike | None) -> str | None:
    return None if p is None else os.fspath(pathlib.Path(p).expanduser())
