"""LOMO features of a data set's whole image table, extracted once and kept on disk.

An entry is `<cache_dir>/<dataset>_<retinex>_<key>.npy` (float32 [N, D], rows in table order)
with a `.json` beside it (options, timing, table digest). The key hashes the LOMO options, the
decoder and a digest of every encoded image and file name, so protocols of the same data set
(which share one table) share an entry, while changed images or options never reuse a stale
one. Files are written to a temporary name and renamed, so an interrupted run leaves no
half-written entry.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import tempfile
import time

import numpy as np

from jlml_tf.features import lomo as lomo_lib

CACHE_VERSION = 1
# How pixels are obtained: the training pipeline's decoder (bilinear resize, rounded).
DECODER = "jlml_tf.data.pipeline.decode_all"


@dataclasses.dataclass
class TableFeatures:
    features: np.ndarray  # float32 [N, D], rows of the table
    info: dict  # options, timing ("wall_ms_per_image", ...), "cached", "path"


def table_digest(table) -> str:
    """SHA-256 over every (file name, encoded image) of an ImageTable, in order."""
    digest = hashlib.sha256()
    for name, image in zip(table.filenames, table.images):
        for part in (str(name).encode(), bytes(image)):
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
    return digest.hexdigest()


def entry_stem(dataset: str, cfg: lomo_lib.LomoConfig, digest: str) -> str:
    key = json.dumps({"version": CACHE_VERSION, "lomo": cfg.to_dict(), "decoder": DECODER,
                      "table": digest}, sort_keys=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in dataset)
    return f"{safe}_{cfg.retinex}_{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _write_atomic(path: pathlib.Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def compute(table, cfg: lomo_lib.LomoConfig, batch_size: int = 64,
            progress: bool = True) -> TableFeatures:
    """Decodes the table with the training pipeline's decoder and extracts LOMO."""
    from jlml_tf.data import pipeline

    start = time.perf_counter()
    images = pipeline.decode_all(table, cfg.height, cfg.width)
    decode_seconds = time.perf_counter() - start
    features, timing = lomo_lib.extract(images, cfg, batch_size, progress)
    n = max(len(table), 1)
    info = {"num_images": len(table), "feature_dim": int(features.shape[1]),
            "lomo": cfg.to_dict(), "decoder": DECODER,
            "decode_ms_per_image": 1000 * decode_seconds / n,
            "batch_size": batch_size, **timing.per_image,
            "extracted_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    return TableFeatures(features, info)


def default_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """DATA_DIR/lomo, beside the prepared data sets (DATA_DIR: data_dir, else the default)."""
    from jlml_tf_datasets.base import DEFAULT_DATA_DIR

    return pathlib.Path(data_dir or DEFAULT_DATA_DIR).expanduser() / "lomo"


def table_features(table, cfg: lomo_lib.LomoConfig, dataset: str,
                   cache_dir: str | os.PathLike | None, batch_size: int = 64,
                   progress: bool = True, log=print) -> TableFeatures:
    """The table's LOMO features: from the cache when present, else computed (and stored when
    cache_dir is given)."""
    if cache_dir is None:
        result = compute(table, cfg, batch_size, progress)
        result.info.update(cached=False, path=None)
        return result
    cache_dir = pathlib.Path(cache_dir).expanduser()
    digest = table_digest(table)
    stem = entry_stem(dataset, cfg, digest)
    array_path, info_path = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
    if array_path.is_file() and info_path.is_file():
        features = np.load(array_path)
        info = json.loads(info_path.read_text())
        if features.shape == (len(table), info.get("feature_dim")):
            info.update(cached=True, path=str(array_path))
            log(f"LOMO features of {dataset} from {array_path}")
            return TableFeatures(features, info)
        log(f"ignoring {array_path}: shape {features.shape} does not fit the table")
    result = compute(table, cfg, batch_size, progress)
    result.info["table_digest"] = digest
    cache_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(array_path, lambda f: np.save(f, result.features))
    _write_atomic(info_path, lambda f: f.write(json.dumps(result.info, indent=2).encode()))
    result.info.update(cached=False, path=str(array_path))
    log(f"LOMO features of {dataset} stored in {array_path}")
    return result
