"""python -m jlml_tf.export: a trained run -> SavedModel (TF Serving), TFLite, model card, parity.

    python -m jlml_tf.export --run_dir=runs/market1501-single_query --export_dir=export_out \
        [--model_name=jlml] [--version=N] [--tflite=float32,float16,dynamic_int8,int8] \
        [--parity_data=NAME --parity_protocol=P | --parity_images=DIR] [--calibration_images=DIR]

Without --parity_data / --parity_images the data set recorded in RUN/config.json is used (the
query + gallery of the run's own trial, or the first, for parity; that trial's training images
for int8 calibration).
--noparity skips the parity report; then int8 needs --calibration_images or --parity_data.
See jlml_tf/export/pipeline.py for the layout written.
"""
from __future__ import annotations

import sys

from absl import flags

from jlml_tf import cli



def define_flags() -> flags.FlagValues:
    """The command's own flags (importing the module defines none globally)."""
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_string("run_dir", None, "Run directory written by `python -m jlml_tf.train` (or a "
                        "checkpoint prefix RUN/checkpoints/ckpt-N).", **d)
    flags.DEFINE_string("export_dir", None, "Where to write DIR/<model_name>/<version>/ and "
                        "DIR/<model_name>_v<version>/.", **d)
    flags.DEFINE_string("model_name", "jlml", "Model name (the TF Serving model name).", **d)
    flags.DEFINE_integer("version", None, "Version number (default: one more than the newest).",
                         **d)
    flags.DEFINE_bool("overwrite", False, "Replace an existing version.", **d)
    flags.DEFINE_list("tflite", ["float32", "float16", "dynamic_int8", "int8"],
                      "TFLite variants to write (empty: none).", **d)
    flags.DEFINE_string("parity_data", None, "Data set (registry name) for the parity report and "
                        "int8 calibration (default: the run's data set from config.json).", **d)
    flags.DEFINE_string("parity_protocol", None, "Protocol of --parity_data (default: the run's, or "
                        "the data set's first).", **d)
    flags.DEFINE_string("parity_data_dir", None, "data_dir for --parity_data (TFDS cache).", **d)
    flags.DEFINE_string("parity_manual_dir", None, "manual_dir for --parity_data (the release).",
                        **d)
    flags.DEFINE_list("parity_option", None, "key=value options for the --parity_data loader "
                      "(default: the run's --dataset_option when the data set is the run's).", **d)
    flags.DEFINE_integer("parity_max_query", None, "Use only the first N query images.", **d)
    flags.DEFINE_integer("parity_max_gallery", None, "Use only the first N gallery images.", **d)
    flags.DEFINE_list("parity_images", None, "Files or folders to parity-check on instead of a data "
                      "set (no identities: no rank-1/mAP).", **d)
    flags.DEFINE_bool("parity", True, "Write the parity report (--noparity to skip).", **d)
    flags.DEFINE_list("calibration_images", None, "Training image files or folders for full-int8 "
                      "calibration (default: the parity data set's training images).", **d)
    flags.DEFINE_integer("calibration_count", 200, "How many calibration images (random sample).",
                         **d)
    flags.DEFINE_list("latency_runs", ["30", "10"], "Timed runs at batch 1 and batch 32.", **d)
    flags.DEFINE_integer("num_threads", 2, "CPU threads for TensorFlow and LiteRT.", **d)
    flags.DEFINE_bool("flip_test", False, "Export the test-time flip embedding: the normalised "
                      "sum of the image's and its mirror's embeddings, as the README's rows and "
                      "`evaluate --flip_test` rank (two forward passes per image).", **d)
    flags.DEFINE_string("linear_map", None, "RUN/linear_map.npz from `python -m "
                        "jlml_tf.evaluate --metric=xqda_map --save_linear_map`: export "
                        "onto_sphere(L^T e(x), R): XQDA's map on the unit sphere of one more "
                        "dimension, as the embedding (the `--metric=xqda_map` ranking).", **d)
    flags.DEFINE_list("camera_bn_images", None, "Image files or folders of ONE camera: export "
                      "the model with its batch-norm statistics re-estimated on them (evaluate's "
                      "--camera_bn for a deployed camera; export once per camera).", **d)
    flags.DEFINE_bool("progress", True, "Progress bars on stderr inside conversion and parity.",
                      **d)
    return fv


UsageError = cli.UsageError  # `error: ...` on stderr, exit status 2 (no help text)


def _data_source(fv: flags.FlagValues, run_config: dict):
    """(name, protocol, data_dir, manual_dir, options) of the data set to check on, or None."""
    import jlml_tf_datasets

    from jlml_tf.inference import run_dir as run_dir_lib

    options = (cli.key_values(fv.parity_option, "parity_option") if fv.parity_option is not None
               else None)
    source = run_dir_lib.data_source(run_config, fv.parity_data, fv.parity_protocol,
                                     fv.parity_data_dir, fv.parity_manual_dir, options)
    if not fv.parity_data and (not source.name or source.name not in jlml_tf_datasets.MODULES):
        return None
    return (source.name, source.protocol, source.data_dir, source.manual_dir, source.options)


def _camera_images(fv: flags.FlagValues) -> list[str] | None:
    if not fv.camera_bn_images:
        return None
    from jlml_tf.data import preprocessing

    try:
        return preprocessing.list_images(fv.camera_bn_images)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"--camera_bn_images={','.join(fv.camera_bn_images)}: {e}")


def run(fv: flags.FlagValues) -> None:
    for name in ("run_dir", "export_dir"):
        if not fv[name].value:
            raise UsageError(f"--{name} is required")
    try:
        runs = tuple(int(v) for v in fv.latency_runs)
    except ValueError:
        raise UsageError(f"--latency_runs={fv.latency_runs}: expected two integers")
    if len(runs) != 2 or min(runs) < 1:
        raise UsageError(f"--latency_runs={fv.latency_runs}: expected two positive integers")

    from jlml_tf import tf_quiet

    tf_quiet.quiet_tensorflow()
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(fv.num_threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow already initialised; it keeps its defaults

    from jlml_tf.inference import run_dir as run_dir_lib
    from jlml_tf.export import parity, pipeline

    try:
        run_path, _ = run_dir_lib.resolve_checkpoint(fv.run_dir)
    except FileNotFoundError as e:
        raise UsageError(f"--run_dir: {e}")
    run_config = run_dir_lib.read_config(run_path)
    cfg = run_dir_lib.model_config(run_path)
    if fv.linear_map:  # before the slow steps
        pipeline.load_linear_map(fv.linear_map, cfg, fv.flip_test,
                                 run_dir_lib.resolve_checkpoint(fv.run_dir)[1],
                                 camera_calibrated=bool(fv.camera_bn_images))

    data = None
    need_data = (fv.parity and not fv.parity_images) or (
        "int8" in fv.tflite and not fv.calibration_images)
    if need_data:
        source = _data_source(fv, run_config)
        if source is None:
            raise UsageError(
                f"{run_path}/config.json names no data set of the registry: pass --parity_data=NAME "
                "(and --parity_protocol), or --parity_images and --calibration_images, or "
                "--noparity and --tflite without int8")
        import jlml_tf_datasets

        name, protocol, data_dir, manual_dir, options = source
        print(f"data: {name}/{protocol or '(default protocol)'} {options or ''}", flush=True)
        data = jlml_tf_datasets.load(name, protocol, data_dir=data_dir, manual_dir=manual_dir,
                                     **options)

    trial_name = None if data is None else parity.own_trial_name(data, run_config)
    eval_set = None
    if fv.parity:
        if fv.parity_images:
            eval_set = parity.eval_set_from_files(fv.parity_images, cfg.input_height,
                                                  cfg.input_width)
        else:
            eval_set = parity.eval_set_from_reid(data, cfg.input_height, cfg.input_width,
                                                 fv.parity_max_query, fv.parity_max_gallery,
                                                 trial_name)
    calibration = None
    if "int8" in fv.tflite:
        if fv.calibration_images:
            from jlml_tf.data import preprocessing

            calibration = preprocessing.list_images(fv.calibration_images)
        else:
            calibration = data.table.subset(parity.pick_trial(data, trial_name).train)

    result = pipeline.export_run(
        fv.run_dir, fv.export_dir, fv.model_name, fv.version, fv.tflite,
        calibration, fv.calibration_count, eval_set, runs, fv.num_threads, fv.overwrite,
        flip_test=fv.flip_test, linear_map=fv.linear_map, progress=lambda m: print(m, flush=True), progress_bars=fv.progress,
        camera_images=_camera_images(fv))
    out = result.card["output"]
    print(f"\nSavedModel:  {result.saved_model_dir} (`{out['name']}`: {out['dtype']} "
          f"[N, {out['shape'][1]}], L2-normalised)")
    print(f"model card:  {result.extras_dir / 'model_card.md'}")
    for variant, path in result.tflite_files.items():
        print(f"TFLite {variant + ':':13s} {path}")
    if result.parity is not None:
        print(f"parity:      {result.extras_dir / 'parity.md'}\n")
        print((result.extras_dir / "parity.md").read_text())


def main(argv=None) -> int:
    return cli.run_main(define_flags, run, __doc__, argv,
                        bad_input=(ValueError, FileExistsError))


if __name__ == "__main__":
    sys.exit(main())
