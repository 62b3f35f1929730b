"""The TF Serving SavedModel: DIR/<model_name>/<version>/ with two signatures.

- `serving_default`: `images` uint8 [N, H, W, 3] RGB pixels -> `embeddings` float32 [N, D],
  L2-normalised. Only the network's own ops (plus a cast): fit for a TPU or GPU host.
- `serving_bytes`: `image_bytes` string [N] (encoded JPEG/PNG/BMP/GIF) -> `embeddings`; decodes
  and resizes inside the graph (`preprocessing.decode_batch`), so it runs on the host CPU.

The version directory is written under a hidden temporary name and renamed into place, so a
model server polling the base path never sees half a model.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import tempfile

import keras
import tensorflow as tf

from jlml_tf.data import preprocessing
from jlml_tf.modeling import jlml

DEFAULT_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
PIXELS_INPUT = "images"
BYTES_INPUT = "image_bytes"
OUTPUT = "embeddings"
EXTRA_DIR = "assets.extra"  # TF Serving ignores it except for warm-up requests


def version_dirs(base_path: str | os.PathLike) -> dict[int, pathlib.Path]:
    """Integer-named subdirectories of a model base path, as TF Serving sees them."""
    base = pathlib.Path(base_path)
    if not base.is_dir():
        return {}
    return {int(p.name): p for p in base.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)}


def next_version(base_path: str | os.PathLike) -> int:
    versions = version_dirs(base_path)
    return max(versions) + 1 if versions else 1


def write_saved_model(embedding_model: keras.Model, path: str | os.PathLike) -> pathlib.Path:
    """Writes the SavedModel with both signatures into `path` (a fresh directory)."""
    model = jlml.with_l2_normalization(embedding_model)
    _, height, width, channels = model.input.shape

    archive = keras.export.ExportArchive()
    archive.track(model)

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.uint8,
                                                name=PIXELS_INPUT)])
    def serve_pixels(images):
        return {OUTPUT: model(tf.cast(images, tf.float32), training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
    def serve_bytes(image_bytes):
        pixels = preprocessing.decode_batch(image_bytes, height, width)
        return {OUTPUT: model(tf.cast(pixels, tf.float32), training=False)}

    archive.add_endpoint(DEFAULT_SIGNATURE, serve_pixels)  # the first endpoint is the default
    archive.add_endpoint(BYTES_SIGNATURE, serve_bytes)
    archive.write_out(os.fspath(path), verbose=False)
    return pathlib.Path(path)


def stage_dir(base_path: str | os.PathLike, version: int) -> pathlib.Path:
    """A fresh hidden directory beside the versions (same file system, so the rename is atomic).

    Its name is not a number: TF Serving and `jlml_tf.serving` ignore it.
    """
    base = pathlib.Path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    return pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base))


def check_version(base_path: str | os.PathLike, version: int, overwrite: bool) -> pathlib.Path:
    if int(version) < 1:
        raise ValueError(f"--version={version}: TF Serving versions are positive integers")
    target = pathlib.Path(base_path) / str(int(version))
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists: choose another --version or pass "
                              "--overwrite")
    return target


def publish(staged: str | os.PathLike, base_path: str | os.PathLike, version: int,
            overwrite: bool = False) -> pathlib.Path:
    """Renames a staged SavedModel to base_path/<version> in one step."""
    target = check_version(base_path, version, overwrite)
    staged = pathlib.Path(staged)
    staged.chmod(0o755)  # mkdtemp makes it private; a model server may run as another user
    if target.exists():
        shutil.rmtree(target)
    os.replace(staged, target)
    return target


def export_saved_model(embedding_model: keras.Model, base_path: str | os.PathLike,
                       version: int | None = None, overwrite: bool = False,
                       extra_files: dict[str, str] | None = None) -> pathlib.Path:
    """Writes base_path/<version>/ and returns it. `version=None` takes the next free number.

    `extra_files` ({name: text}) are written into the version's assets.extra/ (e.g. the card).
    """
    version = next_version(base_path) if version is None else int(version)
    check_version(base_path, version, overwrite)
    staged = stage_dir(base_path, version)
    try:
        write_saved_model(embedding_model, staged)
        write_extra_files(staged, extra_files or {})
        return publish(staged, base_path, version, overwrite)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)


def write_extra_files(saved_model_dir: str | os.PathLike, files: dict[str, str]) -> None:
    if not files:
        return
    extra = pathlib.Path(saved_model_dir) / EXTRA_DIR
    extra.mkdir(exist_ok=True)
    for name, text in files.items():
        (extra / name).write_text(text)


def directory_size(path: str | os.PathLike) -> int:
    path = pathlib.Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
