"""A learned metric's linear map, stored beside the model it was fitted for: RUN/linear_map.npz.

`python -m jlml_tf.evaluate --metric=xqda_map --save_linear_map` fits XQDA on a trial's training
features, evaluates onto_sphere(L^T f, R) matched by L2 and writes L and R here; `python -m
jlml_tf.export --linear_map=RUN/linear_map.npz` builds both into the exported model
(`jlml.with_linear_map`), so a server, the gallery index and a phone rank by the learned metric
with plain unit-norm embeddings (metric_learning's docstring: why and how closely). The file
records what L was fitted on, and the export refuses it for another model, another embedding
size or the other test-time flip setting. It may also hold a threshold calibrated on the mapped
embeddings (THRESHOLD_KEY), which the export ships in place of the run's own. A map fitted with
`evaluate --fuse_lomo=none` maps [w * embedding, LOMO] (FUSION_KEY: w and LOMO's parameters);
the export then computes LOMO in the graph from the same input pixels.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np

FILE_NAME = "linear_map.npz"
THRESHOLD_KEY = "threshold"  # source entry: a threshold.json calibrated on the mapped outputs
FUSION_KEY = "fusion"  # source entry: the map is of [w * embedding, LOMO] (LinearMap.fusion)


@dataclasses.dataclass
class LinearMap:
    matrix: np.ndarray  # (embedding dim, r) float32
    radius: float  # R of metric_learning.onto_sphere
    source: dict  # metric, flip_test, data set / protocol / trial, checkpoint, model_fingerprint

    @property
    def flip_test(self) -> bool:
        return bool(self.source.get("flip_test", False))

    @property
    def camera_bn(self) -> str:
        """The --camera_bn the features L was fitted on were embedded with: "off" (the trained
        statistics), or "train"/"test" (each camera's own; a map for per-camera exports)."""
        return str(self.source.get("camera_bn", "off"))

    @property
    def fusion(self) -> dict | None:
        """For a map fitted on [w * embedding, LOMO] (`evaluate --fuse_lomo`): the weight w
        ("weight") and LOMO's parameters ("lomo", a LomoConfig dict); None for an embedding's
        own map."""
        return self.source.get(FUSION_KEY)

    def input_dim(self, embedding_dim: int) -> int:
        """The length of the vectors L maps: the embedding's, plus LOMO's for a fused map."""
        if not self.fusion:
            return embedding_dim
        from jlml_tf.features import lomo

        return embedding_dim + lomo.feature_dim(lomo_config(self.fusion))

    @property
    def threshold(self):
        """The threshold.Calibration on the mapped embeddings (`evaluate --save_linear_map
        --calibrate_threshold`), or None."""
        from jlml_tf.inference import threshold as threshold_lib

        stored = self.source.get(THRESHOLD_KEY)
        return None if stored is None else threshold_lib.Calibration.from_dict(stored)


def save(linear_map: LinearMap, path: str | os.PathLike) -> pathlib.Path:
    """Writes atomically (a reader never sees half a file)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(staging, matrix=np.asarray(linear_map.matrix, np.float32),
             radius=np.float64(linear_map.radius),
             source=np.array(json.dumps(linear_map.source, default=str)))
    os.replace(staging, path)
    return path


def load(path: str | os.PathLike) -> LinearMap:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (write one with `python -m "
                                "jlml_tf.evaluate --metric=xqda_map --save_linear_map`)")
    try:
        with np.load(path, allow_pickle=False) as f:
            matrix, source = f["matrix"], json.loads(str(f["source"]))
            radius = float(f["radius"]) if "radius" in f else None
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not a linear map file written by --save_linear_map ({e})") \
            from e
    if radius is None:  # files from before the maps were put onto the sphere
        raise ValueError(f"{path}: a map without a sphere radius (an older file that normalised "
                         "instead); write it again with `python -m jlml_tf.evaluate "
                         "--metric=xqda_map --save_linear_map`")
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError(f"{path}: sphere radius {radius}, expected a positive number")
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ValueError(f"{path}: matrix of shape {matrix.shape}, expected (dim, r)")
    if FUSION_KEY in source:
        _check_fusion(source[FUSION_KEY], path)
    return LinearMap(matrix.astype(np.float32), radius, source)


def _check_fusion(fusion: dict, path) -> None:
    """ValueError naming the file unless the fusion entry holds a weight > 0 and the parameters
    of a LOMO the graph computes (no Retinex)."""
    from jlml_tf.features import retinex

    try:
        weight, cfg = float(fusion["weight"]), lomo_config(fusion)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: its fusion entry {fusion!r} is not one `evaluate "
                         f"--fuse_lomo --save_linear_map` writes ({e!r})") from e
    if not 0 < weight < float("inf"):
        raise ValueError(f"{path}: fusion weight {weight}, expected a finite number > 0")
    if cfg.retinex != retinex.NONE:
        raise ValueError(f"{path}: fitted on LOMO with Retinex {cfg.retinex!r}; the exported "
                         f"graph computes LOMO without: fit it with --fuse_lomo={retinex.NONE}")


def check_applies(linear_map: LinearMap, path, embedding_dim: int, flip_test: bool,
                  model_fingerprint: str | None = None, camera_calibrated: bool = False,
                  input_size: tuple[int, int] | None = None) -> None:
    """Raises ValueError (naming the file and the flag to change) unless the map was fitted on
    this model's embeddings as they will be computed (`camera_calibrated`: batch norm set to one
    camera's images, `export --camera_bn_images`); for a fused map, LOMO computed at the
    model's `input_size` (height, width)."""
    if linear_map.fusion and input_size is not None:
        cfg = lomo_config(linear_map.fusion)
        if (cfg.height, cfg.width) != tuple(input_size):
            raise ValueError(f"--linear_map={path}: fitted on LOMO of {cfg.height}x{cfg.width} "
                             f"images, the model takes {input_size[0]}x{input_size[1]}")
    dim, want = linear_map.matrix.shape[0], linear_map.input_dim(embedding_dim)
    if dim != want:
        lomo_part = (f" and {want - embedding_dim}-d LOMO features, {want} in all"
                     if linear_map.fusion else "")
        raise ValueError(f"--linear_map={path}: maps {dim}-d vectors, the model has "
                         f"{embedding_dim}-d embeddings{lomo_part}")
    if linear_map.flip_test != bool(flip_test):
        raise ValueError(f"--linear_map={path}: fitted on embeddings "
                         f"{'with' if linear_map.flip_test else 'without'} test-time flip: "
                         f"pass --{'' if linear_map.flip_test else 'no'}flip_test")
    if linear_map.camera_bn != "off" and not camera_calibrated:
        raise ValueError(f"--linear_map={path}: fitted on embeddings with each camera's own "
                         f"batch-norm statistics (evaluate --camera_bn={linear_map.camera_bn}): "
                         "export one model per camera with --camera_bn_images")
    if linear_map.camera_bn == "off" and camera_calibrated:
        raise ValueError(f"--linear_map={path}: fitted on embeddings with the model's trained "
                         "batch-norm statistics: fit it with `evaluate --camera_bn=train "
                         "--save_linear_map`, or drop --camera_bn_images")
    fitted_on = linear_map.source.get("model_fingerprint")
    if model_fingerprint and fitted_on and fitted_on != model_fingerprint:
        raise ValueError(f"--linear_map={path}: fitted on another model's embeddings "
                         f"({linear_map.source.get('checkpoint')}); fit it on this one")


def lomo_config(fusion: dict):
    """The LomoConfig a fused map's LOMO features were computed with."""
    from jlml_tf.features import lomo

    return lomo.LomoConfig.from_dict(fusion["lomo"])
