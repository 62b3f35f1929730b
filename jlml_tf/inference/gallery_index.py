"""A gallery folder's embeddings, kept in an index file and brought up to date incrementally.

    fingerprint = model_fingerprint("runs/market")            # or an export
    index, report = update_index("photos/", embedder, fingerprint)
    index.embeddings   # float32 [N, D], L2-normalised, one row per readable image
    index.paths        # their paths relative to the gallery folder, sorted

The index file (default GALLERY/.jlml_index.npz) records, per image, its path relative to the
gallery, its size and modification time (ns), its embedding and whether it looks odd, plus the
fingerprint of the model that made the embeddings. An update

  * rebuilds everything when the model fingerprint differs (another or a retrained model),
    or when the file is missing or unreadable;
  * keeps the embedding of every image whose (path, size, mtime) is unchanged;
  * embeds the new and changed images only, and drops the removed ones;
  * lists unreadable images (`report.skipped`) and leaves them out; they are remembered with
    their size and mtime, so an unchanged broken file is not decoded again on every search
    (it is still reported), and a fixed one is picked up;
  * remembers which images look odd for person crops (tiny, square or wide:
    `preprocessing.odd_image_reason`), so a search can mark them, or leaves them out with
    `odd_images="refuse"` (and takes them back, without a rebuild, when the policy changes).

The model fingerprint hashes the content of the files that define the model: config.json and
the checkpoint's files for a run directory (or a checkpoint), every file of a SavedModel
folder (of a TF Serving base path: its newest version's, so both spellings of one model
have one fingerprint), or the .tflite file. Images are decoded and resized exactly as the
exported models expect (`jlml_tf.data.preprocessing`), and embedded in batches behind a
progress bar.

An embedder is any object with `height`, `width` and `embed(uint8 [N, H, W, 3]) -> [N, D]`,
such as `jlml_tf.inference.Embedder` (see `search.RunEmbedder` for a training run).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import sys
from typing import Callable, Iterable

import numpy as np

from jlml_tf.config import IMAGE_EXTENSIONS

INDEX_FILE = ".jlml_index.npz"
FORMAT_VERSION = 2  # 2: odd images (jlml_tf.data.preprocessing.odd_image_reason) recorded
REFUSED = "refused as an odd image: "  # the reason of an image left out by odd_images="refuse"
_HASH_CHUNK = 1 << 20


# ----------------------------------------------------------------------------------------------
# Fingerprints and keys


def fingerprint_files(files: Iterable[str | os.PathLike],
                      root: str | os.PathLike | None = None) -> str:
    """SHA-256 over the names (relative to `root`) and contents of files, in sorted order."""
    files = sorted(pathlib.Path(f) for f in files)
    digest = hashlib.sha256()
    for f in files:
        name = f.relative_to(root).as_posix() if root is not None else f.name
        digest.update(name.encode() + b"\0" + str(f.stat().st_size).encode() + b"\0")
        with open(f, "rb") as handle:
            for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()


def newest_version_dir(base_path: str | os.PathLike) -> pathlib.Path | None:
    """The newest integer-named folder holding a saved_model.pb under a TF Serving base path
    (the version a model server would serve), or None."""
    base = pathlib.Path(base_path)
    if not base.is_dir():
        return None
    versions = [p for p in base.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)
                and (p / "saved_model.pb").is_file()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def resolve_model_path(model_path: str | os.PathLike) -> pathlib.Path:
    """A TF Serving base path -> its newest version folder; any other model path unchanged.

    `--model=EXPORT/jlml` and `--model=EXPORT/jlml/<newest>` are one SavedModel: the same
    fingerprint, the same threshold file."""
    path = pathlib.Path(model_path)
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        newest = newest_version_dir(path)
        if newest is not None:
            return newest
    return path


def model_files(model_path: str | os.PathLike) -> tuple[list[pathlib.Path], pathlib.Path]:
    """(the files that define a model, the root their names are taken relative to).

    A run directory or checkpoint prefix: config.json and the checkpoint's .index and .data
    files; a SavedModel folder: all its files (a TF Serving base path: its newest version's,
    named relative to that version, so both spellings have one fingerprint); a .tflite: itself.
    """
    path = pathlib.Path(model_path)
    from jlml_tf.inference import run_dir as run_dir_lib

    if (path / run_dir_lib.CONFIG_FILE).is_file() or path.parent.name == run_dir_lib.CHECKPOINT_DIR:
        run, ckpt = run_dir_lib.resolve_checkpoint(path)
        run, ckpt = run.resolve(), pathlib.Path(ckpt).resolve()
        files = [run / run_dir_lib.CONFIG_FILE] + sorted(ckpt.parent.glob(ckpt.name + ".*"))
        return files, run
    path = resolve_model_path(path).resolve()  # a base path: its newest version's files
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != INDEX_FILE)
        if not files:
            raise FileNotFoundError(f"{path}: an empty folder is not a model")
        return files, path
    if path.is_file():
        return [path], path.parent
    raise FileNotFoundError(f"{path}: no such model (run directory, checkpoint, SavedModel "
                            "or .tflite)")


def model_fingerprint(model_path: str | os.PathLike) -> str:
    files, root = model_files(model_path)
    return fingerprint_files(files, root)


def image_key(path: str | os.PathLike) -> tuple[int, int]:
    """(size in bytes, modification time in ns): an image is unchanged while these are."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def scan_gallery(root: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()
                 ) -> dict[str, tuple[int, int]]:
    """{relative posix path: (size, mtime_ns)} of the images under root, recursively.

    Hidden files and folders (names starting with ".") and the folders in `exclude` (e.g. an
    output folder inside the gallery) are left out.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--gallery_dir={root}: no such folder")
    excluded = {pathlib.Path(e).resolve() for e in exclude}
    found = {}
    for folder, dirs, names in os.walk(root):
        here = pathlib.Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (here / d).resolve() not in excluded)
        for name in names:
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = here / name
            try:
                found[path.relative_to(root).as_posix()] = image_key(path)
            except OSError:  # vanished between listing and stat
                continue
    return dict(sorted(found.items()))


# ----------------------------------------------------------------------------------------------
# The index


@dataclasses.dataclass
class GalleryIndex:
    root: pathlib.Path
    model_fingerprint: str
    paths: list[str]  # relative to root, posix, sorted
    keys: np.ndarray  # int64 [N, 2]: size, mtime_ns
    embeddings: np.ndarray  # float32 [N, D]
    skipped: dict[str, tuple[int, int, str]] = dataclasses.field(default_factory=dict)
    # unreadable (or refused) images: relative path -> (size, mtime_ns, reason)
    odd: dict[str, str] = dataclasses.field(default_factory=dict)
    # images in the index that look odd for person crops: relative path -> why

    def __len__(self) -> int:
        return len(self.paths)

    def absolute_paths(self) -> list[pathlib.Path]:
        return [self.root / p for p in self.paths]

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        """Writes the index atomically (a temporary file renamed into place)."""
        path = pathlib.Path(path)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        skipped = sorted(self.skipped.items())
        with open(tmp, "wb") as f:
            np.savez(f, format_version=np.int64(FORMAT_VERSION),
                     model_fingerprint=np.str_(self.model_fingerprint),
                     paths=np.array(self.paths, dtype=str),
                     keys=np.asarray(self.keys, np.int64).reshape(-1, 2),
                     embeddings=np.asarray(self.embeddings, np.float32),
                     skipped_paths=np.array([p for p, _ in skipped], dtype=str),
                     skipped_keys=np.array([v[:2] for _, v in skipped], np.int64).reshape(-1, 2),
                     skipped_reasons=np.array([v[2] for _, v in skipped], dtype=str),
                     odd_paths=np.array(sorted(self.odd), dtype=str),
                     odd_reasons=np.array([self.odd[p] for p in sorted(self.odd)], dtype=str))
        tmp.replace(path)
        return path

    @staticmethod
    def load(path: str | os.PathLike, root: str | os.PathLike) -> "GalleryIndex":
        with np.load(path, allow_pickle=False) as z:
            if int(z["format_version"]) != FORMAT_VERSION:
                raise ValueError(f"index format {int(z['format_version'])} of an older version, "
                                 f"this one reads {FORMAT_VERSION}")
            skipped = {str(p): (int(k[0]), int(k[1]), str(r)) for p, k, r in
                       zip(z["skipped_paths"], z["skipped_keys"], z["skipped_reasons"])}
            return GalleryIndex(pathlib.Path(root), str(z["model_fingerprint"]),
                                [str(p) for p in z["paths"]], z["keys"].astype(np.int64),
                                z["embeddings"].astype(np.float32), skipped,
                                {str(p): str(r) for p, r in zip(z["odd_paths"],
                                                                z["odd_reasons"])})


@dataclasses.dataclass
class UpdateReport:
    reused: int = 0
    embedded: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, reason)
    odd: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    # (path, why) of the images newly embedded that look odd for person crops
    rebuilt: str | None = None  # why everything was embedded afresh, None if incremental
    saved: pathlib.Path | None = None  # the index file written, None if unchanged or not saved

    def summary(self) -> str:
        text = (f"{self.reused} reused, {len(self.embedded)} embedded, {len(self.removed)} "
                f"removed, {len(self.skipped)} unreadable")
        return text + (f" (full rebuild: {self.rebuilt})" if self.rebuilt else "")


def default_index_path(root: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(root) / INDEX_FILE


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)


def _read_image(path: pathlib.Path, height: int, width: int) -> tuple[np.ndarray, str | None]:
    from jlml_tf.data import preprocessing

    return preprocessing.load_image_checked(path, height, width)


def _reason(error: Exception, path: pathlib.Path) -> str:
    """A one-line reason without the file name (printed beside it) or TF's op decorations."""
    text = (str(error).splitlines() or [type(error).__name__])[0]
    text = text.removeprefix(f"{path}: ")
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\][^)]*", "", text)
    return text or type(error).__name__


def embed_paths(embedder, root: pathlib.Path, paths: list[str], batch_size: int = 32,
                progress: bool = True, read: Callable | None = None,
                odd_images: str = "accept", odd: list | None = None
                ) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Embeds the images (relative to root) that can be read.

    `read(path, height, width)` returns the pixels, or (pixels, why the image looks odd for a
    person crop or None); the default decodes like the exported models and checks the size
    (`preprocessing.load_image_checked`). `odd_images`: "accept" or "warn" embed odd images
    (their (path, why) are appended to `odd`), "refuse" skips them with the reason.

    Returns (embedded paths, L2-normalised float32 [n, D], skipped (path, reason))."""
    from tqdm import tqdm

    read = read or _read_image
    done, chunks, skipped, batch, names = [], [], [], [], []

    def flush():
        if batch:
            chunks.append(np.asarray(embedder.embed(np.stack(batch)), np.float32))
            done.extend(names)
            batch.clear()
            names.clear()

    bar = tqdm(paths, unit="img", desc="embedding gallery", disable=not progress or not paths,
               file=sys.stderr, leave=False)
    for rel in bar:
        try:
            got = read(root / rel, embedder.height, embedder.width)
        except Exception as e:  # noqa: BLE001 - any undecodable file is skipped, not fatal
            skipped.append((rel, _reason(e, root / rel)))
            continue
        pixels, why = got if isinstance(got, tuple) else (got, None)
        if why is not None:
            if odd_images == "refuse":
                skipped.append((rel, REFUSED + why))
                continue
            if odd is not None:
                odd.append((rel, why))
        batch.append(pixels)
        names.append(rel)
        if len(batch) >= batch_size:
            flush()
    flush()
    bar.close()
    embeddings = _l2_normalise(np.concatenate(chunks)) if chunks else None
    return done, embeddings, skipped


def update_index(root: str | os.PathLike, embedder, fingerprint: str,
                 index_path: str | os.PathLike | None = None, batch_size: int = 32,
                 progress: bool = True, save: bool = True,
                 exclude: Iterable[str | os.PathLike] = (),
                 log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
                 odd_images: str = "accept") -> tuple[GalleryIndex, UpdateReport]:
    """Brings the index of the gallery `root` up to date for the model `fingerprint`.

    `odd_images` (see `embed_paths`): every image is checked for an odd size or shape and the
    index remembers which are odd; with "refuse" they are left out of it (listed as skipped,
    and taken in again when the policy changes).

    Returns the index (every readable image, sorted by path) and what the update did. The file
    is rewritten only when something changed; a read-only gallery still works (with a warning)
    but is embedded afresh every time unless `index_path` points somewhere writable.
    """
    root = pathlib.Path(root)
    index_path = pathlib.Path(index_path) if index_path else default_index_path(root)
    current = scan_gallery(root, exclude)
    report = UpdateReport()
    old = None
    if index_path.is_file():
        try:
            old = GalleryIndex.load(index_path, root)
        except Exception as e:  # noqa: BLE001 - a broken index is rebuilt, never fatal
            report.rebuilt = f"unreadable index file {index_path} ({e})"
    else:
        report.rebuilt = "no index yet"
    if old is not None and old.model_fingerprint != fingerprint:
        report.rebuilt, old = "the model changed", None

    reuse_rows, to_embed, skipped = {}, [], {}
    if old is not None:
        old_rows = {p: i for i, p in enumerate(old.paths)}
        for rel, key in current.items():
            i = old_rows.get(rel)
            if i is not None and tuple(old.keys[i]) == key:
                reuse_rows[rel] = i
            elif rel in old.skipped and old.skipped[rel][:2] == key and (
                    odd_images == "refuse" or not old.skipped[rel][2].startswith(REFUSED)):
                skipped[rel] = old.skipped[rel]  # still the same broken (or refused) file
            else:
                to_embed.append(rel)
        report.removed = sorted(set(old.paths) - set(current))
    else:
        to_embed = list(current)
    odd = {rel: old.odd[rel] for rel in reuse_rows if rel in old.odd} if old is not None else {}
    if odd_images == "refuse":  # odd images embedded under another policy: leave them out now
        for rel in list(odd):
            skipped[rel] = (*current[rel], REFUSED + odd.pop(rel))
            del reuse_rows[rel]
    report.reused = len(reuse_rows)

    newly_odd = []
    done, new_embeddings, newly_skipped = embed_paths(embedder, root, to_embed, batch_size,
                                                      progress, odd_images=odd_images,
                                                      odd=newly_odd)
    report.embedded = done
    if old is not None and new_embeddings is not None and reuse_rows \
            and new_embeddings.shape[1] != old.embeddings.shape[1]:
        # Cannot happen while the fingerprint covers the model, but never mix sizes.
        report.rebuilt = "the embedding size changed"
        more, more_embeddings, more_skipped = embed_paths(embedder, root, sorted(reuse_rows),
                                                          batch_size, progress,
                                                          odd_images=odd_images, odd=newly_odd)
        if more_embeddings is not None:
            new_embeddings = np.concatenate([new_embeddings, more_embeddings])
        done = done + more
        newly_skipped += more_skipped
        report.embedded, report.reused, reuse_rows = done, 0, {}
    for rel, reason in newly_skipped:
        skipped[rel] = (*current[rel], reason)

    new_rows = {p: i for i, p in enumerate(done)}
    paths = sorted(set(reuse_rows) | set(new_rows))
    dim = (new_embeddings.shape[1] if new_embeddings is not None
           else old.embeddings.shape[1] if old is not None and len(old.embeddings) else 0)
    embeddings = np.zeros((len(paths), dim), np.float32)
    for row, rel in enumerate(paths):
        embeddings[row] = (old.embeddings[reuse_rows[rel]] if rel in reuse_rows
                           else new_embeddings[new_rows[rel]])
    keys = np.array([current[p] for p in paths], np.int64).reshape(-1, 2)
    odd.update(newly_odd)
    odd = {rel: why for rel, why in sorted(odd.items()) if rel in new_rows or rel in reuse_rows}
    index = GalleryIndex(root, fingerprint, paths, keys, embeddings, skipped, odd)
    report.skipped = [(p, v[2]) for p, v in sorted(skipped.items())]
    report.odd = sorted(newly_odd)

    changed = (old is None or report.embedded or report.removed or newly_skipped
               or set(old.skipped) != set(skipped) or set(old.odd) != set(odd))
    if save and changed:
        try:
            report.saved = index.save(index_path)
        except OSError as e:
            log(f"warning: cannot write the gallery index {index_path} ({e.strerror}); pass "
                "--index_path somewhere writable to reuse embeddings")
    return index, report
