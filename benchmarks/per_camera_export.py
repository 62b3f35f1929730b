"""Per-camera exports against the per-camera evaluation, on the split a run was trained for.

A model read out per camera (`evaluate --camera_bn=train`) is deployed as one export per camera,
each with its batch norm calibrated on that camera's images (`export --camera_bn_images`) and,
optionally, XQDA's map fitted on the per-camera features (`evaluate --camera_bn=train
--metric=xqda_map --save_linear_map [--fuse_lomo=none]`, then `export --linear_map`; a
fused map's LOMO is computed in the exported graph, the evaluation's by the NumPy code).
Here every camera of the split is exported so (SavedModel only, with the run's test-time flip),
on the split's training images of that camera, and the split's query and gallery images are
embedded by their own camera's SavedModel: R1 and mAP of that ranking, beside the evaluation's
features ranked the same way, and the largest embedding difference between the two.

    python -m jlml_tf.evaluate --run_dir=RUN/trial_00 --flip_test --camera_bn=train \
        --metric=xqda_map --save_linear_map --suffix=xqda_map_cbn-train
    python benchmarks/per_camera_export.py --run_dir=RUN/trial_00 \
        --linear_map=RUN/trial_00/linear_map.npz --out=results/.../per_camera_export.json

Direct transfer (a map fitted with `evaluate --dataset=D ... --save_linear_map --output_dir=OUT`
on a data set that did not train the run): add --dataset=D --protocol=P --manual_dir=...; the
split is the map's.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import numpy as np  # noqa: E402


def evaluation_features(loaded, data, calibration, rows, flip, mapped, data_dir=None):
    """The split's features as `evaluate --camera_bn=train [--metric=xqda_map [--fuse_lomo]]`
    ranks them (a fused map's LOMO by the NumPy code, from the evaluation's cache)."""
    from jlml_tf.baseline import table_lomo
    from jlml_tf.evaluation import fusion, metric_learning
    from jlml_tf.features import cache as cache_lib
    from jlml_tf.inference import eval_trial, linear_map as linear_map_lib

    cfg = loaded.model_cfg
    f = eval_trial.extract_features_by_camera(loaded.embedding_model, data.table, rows,
                                              calibration, cfg.input_height, cfg.input_width,
                                              verbose=0, flip=flip)
    if mapped is None:
        return f
    if mapped.fusion:
        lomo, _, _ = table_lomo(data, linear_map_lib.lomo_config(mapped.fusion),
                                cache_lib.default_dir(data_dir), verbose=False,
                                log=lambda *a: None, span=False)
        f = fusion.concatenate(f, lomo[rows], mapped.fusion["weight"])
    return metric_learning.onto_sphere(f @ mapped.matrix, mapped.radius)


def check_split(run_dir, linear_map=None, export_dir=None, progress=print, dataset=None,
                protocol_name=None, manual_dir=None, options=None) -> dict:
    """For the trial `run_dir` was trained on, or (`dataset`: direct transfer) the one the map
    was fitted on: {"cameras": {camera: {"calibration_images", "test_images",
    "max_abs_diff"}}, "exported": {rank1, map}, "evaluation": {rank1, map}}."""
    import jlml_tf_datasets
    from jlml_tf.data import preprocessing
    from jlml_tf.evaluation import protocol
    from jlml_tf.export import pipeline
    from jlml_tf.inference import camera_bn, embedders, linear_map as linear_map_lib
    from jlml_tf.inference import run_dir as run_dir_lib

    run_dir = pathlib.Path(run_dir)
    config = run_dir_lib.read_config(run_dir)
    mapped = linear_map_lib.load(linear_map) if linear_map else None
    if dataset is not None and mapped is None:
        raise ValueError("--dataset: a direct-transfer check needs the --linear_map fitted on "
                         "that data set's split (which names the split)")
    if dataset is not None:  # the split the map was fitted on, unless a flag says otherwise
        protocol_name = protocol_name or mapped.source.get("protocol")
    source = run_dir_lib.data_source(config, dataset, protocol_name, None, manual_dir, options)
    data = jlml_tf_datasets.load(source.name, source.protocol, data_dir=source.data_dir,
                                 manual_dir=source.manual_dir, **source.options)
    wanted = mapped.source.get("trial") if mapped is not None else config["data"]["trial"]
    if mapped is not None and (mapped.source.get("dataset"), mapped.source.get("protocol")) \
            != (data.name, data.protocol):
        raise ValueError(f"{linear_map}: fitted on {mapped.source.get('dataset')}/"
                         f"{mapped.source.get('protocol')}, not {data.name}/{data.protocol}: "
                         "pass that --dataset and --protocol")
    trial = next((t for t in data.trials if t.name == wanted), None)
    if trial is None:
        raise ValueError(f"{data.name}/{data.protocol} has no trial {wanted!r}")
    flip = bool(config.get("train", {}).get("flip_test", False))
    if mapped is not None:
        flip = mapped.flip_test
    loaded = run_dir_lib.load_run(run_dir)
    cfg, table = loaded.model_cfg, data.table
    if mapped is not None:  # before LOMO or any embedding is computed
        linear_map_lib.check_applies(mapped, linear_map, cfg.embedding_dim, flip,
                                     camera_calibrated=True,
                                     input_size=(cfg.input_height, cfg.input_width))
    calibration = camera_bn.calibration_rows("train", table, trial)
    test_rows = np.unique(np.concatenate([trial.query, trial.gallery]))
    test_cameras = np.unique(table.camids[test_rows])
    for camera in test_cameras:
        count = len(calibration.get(int(camera), ()))
        if count < camera_bn.MIN_IMAGES:  # the evaluation keeps the trained statistics there
            raise ValueError(f"{run_dir}: camera {camera} has {count} training images (fewer "
                             f"than {camera_bn.MIN_IMAGES}): no per-camera export of it")
    reference = evaluation_features(loaded, data, calibration, test_rows, flip, mapped,
                                    source.data_dir)
    exported = np.zeros_like(reference)
    cameras = {}
    with tempfile.TemporaryDirectory() as scratch:
        out = pathlib.Path(export_dir or scratch)
        for camera in test_cameras:
            progress(f"camera {camera}: exporting with {len(calibration[camera])} images")
            result = pipeline.export_run(
                run_dir, out, model_name=f"camera{camera}", tflite_variants=(),
                flip_test=flip, linear_map=linear_map, overwrite=True,
                camera_images=list(table.images[calibration[camera]]), progress=lambda m: None)
            embedder = embedders.load_embedder(result.saved_model_dir)
            mine = np.flatnonzero(table.camids[test_rows] == camera)
            pixels = preprocessing.load_images(table.images[test_rows[mine]], cfg.input_height,
                                               cfg.input_width)
            exported[mine] = embedder.embed(pixels)
            cameras[int(camera)] = {
                "calibration_images": int(len(calibration[camera])), "test_images": int(len(mine)),
                "max_abs_diff": float(np.abs(exported[mine] - reference[mine]).max())}

    def ranked(features):
        at = lambda rows: features[np.searchsorted(test_rows, rows)]  # noqa: E731
        q, g = trial.query, trial.gallery
        r = protocol.evaluate(at(q), table.pids[q], table.camids[q], at(g), table.pids[g],
                              table.camids[g], same_camera_junk=data.same_camera_junk)
        return {"rank1": float(r["rank1"]), "map": float(r["map"])}

    return {"run_dir": os.fspath(run_dir), "dataset": data.name, "protocol": data.protocol,
            "trial": trial.name, "flip_test": flip,
            "linear_map": os.fspath(linear_map) if linear_map else None, "cameras": cameras,
            "exported": ranked(exported), "evaluation": ranked(reference)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, help="one trial's run directory")
    parser.add_argument("--linear_map", help="RUN/linear_map.npz fitted per camera")
    parser.add_argument("--export_dir", help="keep the exports here (default: a scratch folder)")
    parser.add_argument("--out", help="write the report as JSON here")
    parser.add_argument("--dataset", help="direct transfer: a data set the run was not trained "
                        "on, checked on the split --linear_map was fitted on")
    parser.add_argument("--protocol", help="with --dataset: its protocol")
    parser.add_argument("--manual_dir", help="with --dataset: its release folder")
    parser.add_argument("--dataset_option", action="append", help="with --dataset: key=value")
    args = parser.parse_args(argv)
    from jlml_tf import cli

    options = cli.key_values(args.dataset_option, "dataset_option") if args.dataset_option \
        else None
    report = check_split(args.run_dir, args.linear_map, args.export_dir, print, args.dataset,
                         args.protocol, args.manual_dir, options)
    for camera, row in report["cameras"].items():
        print(f"camera {camera}: {row['test_images']} test images, max |export - evaluation| "
              f"{row['max_abs_diff']:.2e}")
    for name in ("exported", "evaluation"):
        r = report[name]
        print(f"{name:>10}: R1 {100 * r['rank1']:.2f}  mAP {100 * r['map']:.2f}")
    if args.out:
        path = pathlib.Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
