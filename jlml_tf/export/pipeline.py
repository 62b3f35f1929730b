"""The whole export of a trained run, as `python -m jlml_tf.export` runs it.

    EXPORT_DIR/<model_name>/<version>/            SavedModel, TF Serving layout (+ assets.extra/
                                                  model_card.json)
    EXPORT_DIR/<model_name>_v<version>/           everything else about that version:
        model_card.md, model_card.json, parity.md, parity.json, threshold.json (if the run has one),
        tflite/{float32,float16,dynamic_int8,int8}.tflite

The SavedModel is staged under a hidden name, the TFLite files are converted from it and
the parity report is computed on it; only then is it renamed into place, so a model server
polling EXPORT_DIR/<model_name> only ever sees finished, checked versions.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import pathlib
import shutil
import sys
import time
from typing import Callable, Sequence

import numpy as np

from jlml_tf import tf_quiet
from jlml_tf.inference import camera_bn, embedders
from jlml_tf.inference import threshold as threshold_lib
from jlml_tf.inference import linear_map as linear_map_lib
from jlml_tf.inference import run_dir as run_dir_lib
from jlml_tf.data.types import ImageTable
from jlml_tf.export import model_card, parity, saved_model, tflite
from jlml_tf.features import lomo_graph
from jlml_tf.modeling import jlml

DEFAULT_MODEL_NAME = "jlml"


@dataclasses.dataclass
class ExportResult:
    saved_model_dir: pathlib.Path
    extras_dir: pathlib.Path
    tflite_files: dict[str, pathlib.Path]
    card: dict
    parity: dict | None


def extras_dir(export_dir: str | os.PathLike, model_name: str, version: int) -> pathlib.Path:
    return pathlib.Path(export_dir) / f"{model_name}_v{int(version)}"


def _saved_model_candidates(path: pathlib.Path, size: int) -> list[parity.Candidate]:
    pixels = embedders.SavedModelEmbedder(path)
    raw = pixels.loaded.signatures[saved_model.BYTES_SIGNATURE]

    def embed_bytes(encoded) -> np.ndarray:
        import tensorflow as tf

        outs = [raw(**{saved_model.BYTES_INPUT: tf.constant(encoded[i:i + 32])})
                [saved_model.OUTPUT].numpy() for i in range(0, len(encoded), 32)]
        return np.concatenate(outs)

    cands = [parity.Candidate(
        "saved_model", "SavedModel `serving_default` (uint8 pixels), loaded with "
        "tf.saved_model.load", lambda s: pixels.embed(s.images), pixels.embed, os.fspath(path), size)]
    cands.append(parity.Candidate(
        "saved_model_bytes", "SavedModel `serving_bytes` (encoded images, decoded in the graph; "
        "latency includes decoding)",
        lambda s: embed_bytes(s.encoded), embed_bytes, os.fspath(path), size,
        batch_input=lambda s: np.array(s.encoded, dtype=object)))
    return cands


def load_linear_map(path, cfg, flip_test: bool, checkpoint: str,
                    camera_calibrated: bool = False):
    """The --linear_map file, checked to fit this model as exported (ValueError if not)."""
    from jlml_tf.inference import gallery_index

    try:
        mapped = linear_map_lib.load(path)
    except FileNotFoundError as e:
        raise ValueError(f"--linear_map: {e}") from e
    linear_map_lib.check_applies(mapped, path, cfg.embedding_dim, flip_test,
                                 gallery_index.model_fingerprint(checkpoint), camera_calibrated,
                                 (cfg.input_height, cfg.input_width))
    return mapped


class _Steps:
    """Numbered steps with their wall time: "[3/9] converting TFLite int8 ... 41.2 s"."""

    def __init__(self, total: int, progress: Callable[[str], None]):
        self.total, self.done, self.progress = total, 0, progress

    @contextlib.contextmanager
    def step(self, what: str):
        self.done += 1
        self.progress(f"[{self.done}/{self.total}] {what}")
        start = time.perf_counter()
        yield
        self.progress(f"[{self.done}/{self.total}] {what}: done in "
                      f"{time.perf_counter() - start:.1f} s")


def _bar_factory(stream):
    """A tqdm factory drawing on `stream` (the terminal, also while output is captured)."""
    from tqdm import tqdm

    return functools.partial(tqdm, file=stream, leave=False, dynamic_ncols=True)


def _calibrate_to_camera(model, files: Sequence[str], cfg) -> int:
    """Sets the model's batch-norm statistics to those of `files` (one camera's images), in a
    fixed shuffled order: folders list a person's images together (camera_bn.calibration_rows)."""
    from jlml_tf.data import preprocessing

    files = [files[i] for i in np.random.default_rng(0).permutation(len(files))]
    try:
        pixels = preprocessing.load_images(files, cfg.input_height, cfg.input_width)
    except preprocessing.UnreadableImageError as e:
        raise ValueError(f"--camera_bn_images: {e}") from e
    batches = [pixels[i:i + 64].astype(np.float32) for i in range(0, len(pixels), 64)]
    return camera_bn.Calibrator(model).calibrate(batches)


def export_run(run_dir: str | os.PathLike, export_dir: str | os.PathLike,
               model_name: str = DEFAULT_MODEL_NAME, version: int | None = None,
               tflite_variants: Sequence[str] = tflite.VARIANTS,
               calibration: Sequence[str] | ImageTable | None = None, calibration_count: int = 200,
               eval_set: parity.EvalSet | None = None, latency_runs: tuple[int, int] = (30, 10),
               num_threads: int = 2, overwrite: bool = False, flip_test: bool = False,
               linear_map: str | os.PathLike | None = None,
               progress: Callable[[str], None] = print, progress_bars: bool = False,
               camera_images: Sequence[str] | None = None) -> ExportResult:
    """Exports a run directory (or checkpoint prefix); see the module docstring for the layout.

    `calibration` (training image files or an ImageTable) is needed for the int8 variant;
    `eval_set` (see `parity.eval_set_from_reid` / `eval_set_from_files`) for the parity report.
    `flip_test` exports unit(e(x) + e(mirror(x))) (`jlml.with_flip_test`): the embedding the
    README's rows with test-time flip rank with, at twice the compute.
    `linear_map` (RUN/linear_map.npz from `evaluate --metric=xqda_map --save_linear_map`)
    exports onto_sphere(L^T e(x), R) (`jlml.with_linear_map`): the `--metric=xqda_map` ranking;
    a map fitted with `--fuse_lomo` maps [w * e(x), LOMO(x)], LOMO computed in the graph.
    The run's threshold.json, calibrated on its own embedding, is then left out; the map's own
    threshold (`evaluate --save_linear_map --calibrate_threshold`) is shipped instead.
    `camera_images` (image files of one camera) re-estimates every batch-norm layer's statistics
    on them before export (camera_bn.Calibrator): the model of that camera. Its distances differ
    from the trained model's, so the run's threshold.json is left out of that export too.
    `progress(message)` hears each numbered step and its wall time; `progress_bars` adds tqdm
    bars on stderr inside the long steps (int8 calibration, parity embedding and timing).
    What the TFLite converter prints on its own (`fully_quantize: 0, ...`, TensorFlow's
    deprecation warnings) is kept from the terminal unless a conversion fails.
    """
    unknown = [v for v in tflite_variants if v not in tflite.VARIANTS]
    if unknown:
        raise ValueError(f"--tflite: unknown variants {unknown}; known: {list(tflite.VARIANTS)}")
    if "int8" in tflite_variants and calibration is None:
        raise ValueError("the full int8 TFLite variant needs calibration images: pass "
                         "--calibration_images or a data set (--parity_data), or leave int8 out "
                         "of --tflite")
    if camera_images is not None and len(camera_images) < camera_bn.MIN_IMAGES:
        raise ValueError(f"--camera_bn_images: {len(camera_images)} images; at least "
                         f"{camera_bn.MIN_IMAGES} are needed to estimate a camera's statistics")
    if not model_name or "/" in model_name or model_name.isdigit():
        raise ValueError(f"--model_name={model_name!r}: expected a plain, non-numeric name")
    run_path, checkpoint = run_dir_lib.resolve_checkpoint(run_dir)
    mapped = None if linear_map is None else \
        load_linear_map(linear_map, run_dir_lib.model_config(run_path), flip_test, checkpoint,
                        camera_calibrated=bool(camera_images))
    fused = bool(mapped is not None and mapped.fusion)  # LOMO in the graph, kept float in int8
    base = pathlib.Path(export_dir) / model_name
    version = saved_model.next_version(base) if version is None else int(version)
    target = saved_model.check_version(base, version, overwrite)
    extras = extras_dir(export_dir, model_name, version)
    if extras.exists() and not overwrite:
        raise FileExistsError(f"{extras} already exists: choose another --version or pass "
                              "--overwrite")

    steps = _Steps(2 + ("int8" in tflite_variants) + len(tflite_variants)
                   + (eval_set is not None) + 1, progress)
    with steps.step(f"loading {checkpoint}"):
        loaded = run_dir_lib.load_run(run_dir)
        cfg, l2 = loaded.model_cfg, loaded.embedding_model
        if camera_images:
            calibrated = _calibrate_to_camera(l2, camera_images, cfg)
        if flip_test:
            l2 = jlml.with_flip_test(l2)
        if mapped is not None:
            l2 = jlml.with_linear_map(l2, mapped.matrix, mapped.radius, mapped.fusion)
    if cfg.batch_norm_group_size and not camera_images:
        progress(f"warning: {run_path} was trained with per-camera batch norm "
                 "(--cameras_per_batch): its trained statistics are averages of per-camera "
                 "ones and rank worse than a camera's own; export one model per camera with "
                 "--camera_bn_images")
    height, width = cfg.input_height, cfg.input_width
    extras_note = (", test-time flip" if flip_test else "") + (
        f", batch norm calibrated on {calibrated} images of one camera" if camera_images
        else "") + (
        f", {mapped.source.get('metric', 'learned')} linear map {linear_map}" if mapped else "") + (
        ", LOMO in the graph" if fused else "")
    progress(f"model: {height}x{width} RGB in, {l2.output.shape[-1]}-d L2-normalised embedding "
             f"out ({l2.count_params():,} parameters{extras_note})")

    calib_images = None
    if "int8" in tflite_variants:
        with steps.step(f"decoding up to {calibration_count} calibration images"):
            calib_images = tflite.calibration_images(calibration, height, width,
                                                     calibration_count)
        progress(f"calibration: {len(calib_images)} training images")

    staged = saved_model.stage_dir(base, version)
    try:
        with steps.step(f"writing the SavedModel (staged in {staged})"):
            saved_model.write_saved_model(l2, staged)
        sm_size = saved_model.directory_size(staged)
        if extras.exists():
            shutil.rmtree(extras)
        tflite_files, tflite_info, float32_model = {}, {}, None
        float_scopes = (lomo_graph.LAYER_NAME, jlml.LINEAR_MAP_LAYER) if fused else ()
        for variant in tflite_variants:
            with steps.step(f"converting TFLite {variant}"), \
                    tf_quiet.native_output_captured() as terminal:
                content = tflite.convert(staged, variant, calib_images,
                                         bar=_bar_factory(terminal) if progress_bars else None,
                                         float_scopes=float_scopes,
                                         float_model=float32_model)
            if variant == "float32":  # int8 names the ops it keeps float from this one
                float32_model = content
            path = tflite.write(content, extras / "tflite" / f"{variant}.tflite")
            tflite_files[variant] = path
            tflite_info[variant] = {"path": os.fspath(path), "size_bytes": len(content),
                                    "description": tflite.description(variant, float_scopes),
                                    **{k: v for k, v in tflite.describe(path).items()
                                       if k in ("inputs", "outputs", "compute_op_weight_dtypes",
                                                "compute_op_activation_dtypes")}}

        report = None
        if eval_set is not None:
            keras_ref = embedders.KerasEmbedder(l2)
            reference = parity.Candidate("keras", "the Keras model restored from the checkpoint "
                                         "(float32, the reference; called eagerly)",
                                         lambda s: keras_ref.embed(s.images), keras_ref.embed,
                                         checkpoint, None)
            cands = _saved_model_candidates(staged, sm_size)
            if eval_set.encoded is None:
                cands = cands[:1]
            for variant, path in tflite_files.items():
                emb = embedders.TFLiteEmbedder(path, num_threads=num_threads)
                cands.append(parity.Candidate(f"tflite_{variant}",
                                              tflite.description(variant, float_scopes),
                                              lambda s, e=emb: e.embed(s.images), emb.embed,
                                              os.fspath(path), path.stat().st_size))
            with steps.step(f"parity report ({1 + len(cands)} formats, "
                            f"{len(eval_set.images)} images)"):
                report = parity.run(reference, cands, eval_set, latency_runs=latency_runs,
                                    num_threads=num_threads, progress=progress,
                                    bar=_bar_factory(sys.stderr) if progress_bars else None)
            # the staged path is about to be renamed: name the published one
            for row in report["formats"].values():
                if row["path"] == os.fspath(staged):
                    row["path"] = os.fspath(target)
            parity.write_report(report, extras)

        with steps.step("model card, threshold, publishing"):
            map_info = {**{k: v for k, v in mapped.source.items()
                           if k != linear_map_lib.THRESHOLD_KEY},
                        "sphere_radius": mapped.radius} if mapped else None
            card = model_card.build_card(cfg, l2, run_path, checkpoint, model_name, version,
                                         os.fspath(target), tflite_info, report, flip_test,
                                         map_info)
            if camera_images:
                card["camera_bn"] = {
                    "calibration_images": calibrated,
                    "meaning": "every batch-norm layer's statistics re-estimated on images of "
                               "one camera: serve this model for that camera only"}
            model_card.write_card(card, extras)
            extra_files = {model_card.CARD_JSON: json.dumps(card, indent=2, default=str) + "\n"}
            threshold_file = run_path / threshold_lib.FILE_NAME
            if camera_images and (threshold_file.is_file() or (
                    mapped is not None and mapped.threshold is not None)):
                progress("the threshold was set with the trained batch-norm statistics, not "
                         "this camera's: left out of this export")
            elif mapped is not None and mapped.threshold is not None:
                written = threshold_lib.save(mapped.threshold, extras / threshold_lib.FILE_NAME)
                extra_files[threshold_lib.FILE_NAME] = written.read_text()
            elif threshold_file.is_file() and mapped is not None:
                progress(f"{threshold_file} is calibrated on the run's own embedding, not the "
                         "mapped one: left out of this export (calibrate one on the mapped "
                         "embedding with `evaluate --save_linear_map --calibrate_threshold`)")
            elif threshold_file.is_file():  # the run's "no match" threshold travels with it
                extra_files[threshold_lib.FILE_NAME] = threshold_file.read_text()
                shutil.copyfile(threshold_file, extras / threshold_lib.FILE_NAME)
            saved_model.write_extra_files(staged, extra_files)
            published = saved_model.publish(staged, base, version, overwrite)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    progress(f"published {published}")
    return ExportResult(published, extras, tflite_files, card, report)
