"""What every re-id TFDS builder shares: the example features and reading a build back.

Builders store the release's encoded image bytes untouched (no re-encoding) with pid, camid and
the file name relative to the release root. `read_table` reads prepared splits back into one
`ImageTable` without decoding, so the input pipeline decodes in parallel later.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from jlml_tf.data.types import ImageTable

DEFAULT_DATA_DIR = os.environ.get("JLML_DATA_DIR", os.path.expanduser("~/jlml_data"))


def reid_features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "pid": tfds.features.Scalar(dtype=np.int64),
        "camid": tfds.features.Scalar(dtype=np.int64),
        "filename": tfds.features.Text(),
    })


def example(path: pathlib.Path | str | bytes, pid: int, camid: int, filename: str) -> dict:
    """One example. `path` is a file (stored as-is) or already-encoded image bytes."""
    image = path if isinstance(path, bytes) else os.fspath(path)
    return {"image": image, "pid": int(pid), "camid": int(camid), "filename": filename}


def prepare(builder_cls, data_dir: str | None = None, manual_dir: str | None = None,
            config: str | None = None, **builder_kwargs) -> tfds.core.DatasetBuilder:
    """Builds once into `data_dir` (a cache) and returns the builder; later calls reuse it."""
    builder = builder_cls(data_dir=data_dir or DEFAULT_DATA_DIR, config=config, **builder_kwargs)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(download_config=download_config)
    return builder


def read_table(builder: tfds.core.DatasetBuilder, splits: list[str]) -> tuple[ImageTable, dict]:
    """Reads splits in order into one table; returns it and {split: row indices}."""
    columns = {"images": [], "pids": [], "camids": [], "filenames": []}
    rows, start = {}, 0
    for split in splits:
        ds = builder.as_dataset(split=split, shuffle_files=False,
                                decoders={"image": tfds.decode.SkipDecoding()},
                                read_config=tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1))
        count = 0
        for ex in ds.as_numpy_iterator():
            columns["images"].append(ex["image"])
            columns["pids"].append(ex["pid"])
            columns["camids"].append(ex["camid"])
            columns["filenames"].append(ex["filename"].decode())
            count += 1
        rows[split] = np.arange(start, start + count, dtype=np.int64)
        start += count
    table = ImageTable(np.array(columns["images"] + [b""], dtype=object)[:-1],
                       columns["pids"], columns["camids"], columns["filenames"])
    # TFDS shards do not promise file order: sort each split by file name for stable row ids.
    order = np.concatenate([r[np.argsort(table.filenames[r], kind="stable")] for r in rows.values()]
                           ) if rows else np.zeros(0, np.int64)
    return table.subset(order), rows
