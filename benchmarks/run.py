"""The project's speed figures from one command, each beside references measured in the same run.

    python benchmarks/run.py                                   # everything (see BENCHMARKS.md)
    python benchmarks/run.py --quick --out_dir=/tmp/bq         # tiny sizes: checks the command
    python benchmarks/run.py --sections=machine,training --input_sizes=224x96

Sections (one Markdown table each, printed to stdout and written with the raw numbers to
OUT_DIR/results.json and OUT_DIR/results.md after every section; progress goes to stderr):

1. machine     CPU, cores, versions, load average, and the measured matmul peak GFLOP/s
               (tf.linalg.matmul of two n x n matrices in a tf.function) in float32, bfloat16
               and float16: the floor every other throughput is a percentage of.
2. training    images/s of JLML's real training step (`Trainer.train_step`, multi-loss CE +
               SFL + weight decay, SGD) on a fixed in-memory batch (no input pipeline) for each
               precision policy, with XLA (`jit_compile`) for the chosen policies, plain Keras
               vs fused batch norm when ModelConfig has `fused_batch_norm`; and
               keras.applications.ResNet50 (random weights, float32, plain tf.function SGD step)
               at the same input and batch. Training GFLOP/s = img/s x 3 x forward MACs x 2.
3. inference   images/s of the L2-normalised embedding model as Keras (tf.function), the
               exported SavedModel (`serving_default`) and TFLite float32 and full int8 (LiteRT,
               `--tflite_threads`), at batch `--inference_batches`; ResNet50 (no top, average
               pooled) in Keras as the reference. GFLOP/s = img/s x forward MACs x 2.
4. pipeline    images/s of `jlml_tf.data.pipeline.train_dataset` alone (augmentation on,
               cache_decoded off and on) over the synthetic data set's JPEGs, and its ratio to
               JLML's fastest float32 training throughput at the same input (goal: >= 5x).
5. evaluation  wall and CPU time of `protocol.evaluate` at Market-1501 scale and of 20 CUHK03
               trials, via benchmarks/eval_speed.py.

Throughput is the median over `--windows` timed windows of at least `--steps` steps and
`--min_window_s` seconds each, after `--warmup` untimed steps (tracing, XLA compilation, caches).
`--budget_s` bounds very slow measurements (mixed_float16 training: float16 convolution gradients
have no fast CPU kernel): they get 2 warm-up steps and 1-step windows, marked `budget_limited`
in results.json. Other processes on the machine lower every figure: each row records the load
average.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))  # run_fixtures

import numpy as np  # noqa: E402

import speed  # noqa: E402
from speed import Column  # noqa: E402

SECTIONS = ("machine", "training", "inference", "pipeline", "evaluation")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
PAPER_RESNET50_NOTE = ("The paper's 3.8e9 multiply-adds for ResNet50 are at 224x224; the MACs here "
                       "are each model's own at the input of the row, so GFLOP/s compare the "
                       "work done per second (per-FLOP efficiency), not the images/s.")

# Settings that --quick shrinks; every one can still be given explicitly.
FULL = dict(input_sizes="160x64,224x96", batch_size=32, inference_batches="32,1", warmup=3,
            steps=5, windows=3, min_window_s=2.0, budget_s=120.0, matmul_size=2048,
            matmul_repeats=5, calibration_count=64, synthetic="default", eval_repeats=3)
QUICK = dict(input_sizes="64x32", batch_size=4, inference_batches="4,1", warmup=1, steps=1,
             windows=2, min_window_s=0.0, budget_s=60.0, matmul_size=256, matmul_repeats=2,
             calibration_count=8, synthetic="tiny", eval_repeats=1)


# ----------------------------------------------------------------------------------------------
# Flags


def parse_size(text: str) -> tuple[int, int]:
    """"160x64" -> (160, 64): height x width."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"input size {text!r}: expected HEIGHTxWIDTH, e.g. 224x96") from None
    if height < 1 or width < 1:
        raise ValueError(f"input size {text!r} must be positive")
    return height, width


def parse_list(text: str, allowed: tuple[str, ...] | None = None, name: str = "") -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if allowed is not None:
        unknown = [s for s in items if s not in allowed]
        if unknown:
            raise ValueError(f"--{name}: unknown {unknown}; expected some of {list(allowed)}")
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--quick", action="store_true",
        help=f"tiny sizes to check the command works: {QUICK} (explicit flags still win)")
    add("--sections", default=",".join(SECTIONS), help=f"comma list of {list(SECTIONS)}")
    add("--out_dir", default="/tmp/jlml_benchmarks", help="results.json and results.md go here")
    add("--input_sizes", help=f"HxW list (default {FULL['input_sizes']})")
    add("--batch_size", type=int, help=f"training batch (default {FULL['batch_size']})")
    add("--inference_batches", help=f"inference batch sizes (default {FULL['inference_batches']})")
    add("--precisions", default=",".join(PRECISIONS),
        help="Keras precision policies of the JLML training rows (mixed_float16 uses loss scaling)")
    add("--xla_precisions", default="float32",
        help="policies that also get a jit_compile=True (XLA) training row; '' for none")
    add("--num_classes", type=int, default=751, help="identities in the classifiers (Market: 751)")
    add("--warmup", type=int, help=f"untimed steps first (default {FULL['warmup']})")
    add("--steps", type=int, help=f"minimum steps per timed window (default {FULL['steps']})")
    add("--windows", type=int, help=f"timed windows; the median is reported "
                                    f"(default {FULL['windows']})")
    add("--min_window_s", type=float,
        help=f"minimum seconds per timed window (default {FULL['min_window_s']})")
    add("--budget_s", type=float,
        help="per measurement: a slow warm-up stops after 2 steps past this many seconds, and "
             "the timed windows take fewer steps to fit in it (mixed_float16 training has no "
             f"fast CPU kernels); 0 for no budget (default {FULL['budget_s']})")
    add("--matmul_size", type=int,
        help=f"n of the n x n matmul peak (default {FULL['matmul_size']})")
    add("--matmul_repeats", type=int, help=f"timed matmuls per dtype (default "
                                           f"{FULL['matmul_repeats']})")
    add("--tflite_threads", type=int, default=2, help="LiteRT interpreter threads")
    add("--calibration_count", type=int,
        help=f"training images calibrating the int8 TFLite model (default "
             f"{FULL['calibration_count']})")
    add("--synthetic", choices=("default", "tiny"),
        help="synthetic data set config for the pipeline and calibration images (default "
             f"{FULL['synthetic']}: 1,908 training JPEGs of 128x64)")
    add("--eval_repeats", type=int, help=f"timed evaluations (default {FULL['eval_repeats']})")
    add("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.budget_s = args.budget_s or None  # 0: no budget
    args.sections = parse_list(args.sections, SECTIONS, "sections")
    args.input_sizes = [parse_size(s) for s in parse_list(args.input_sizes)]
    args.inference_batches = [int(b) for b in parse_list(args.inference_batches)]
    args.precisions = parse_list(args.precisions, PRECISIONS, "precisions")
    args.xla_precisions = parse_list(args.xla_precisions, PRECISIONS, "xla_precisions")
    if not args.input_sizes or not args.sections:
        parser.error("need at least one input size and one section")
    return args


# ----------------------------------------------------------------------------------------------
# Shared state


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def size_name(height: int, width: int) -> str:
    return f"{height}x{width}"


class Bench:
    """Flags, a scratch directory, and what several sections share (peaks, data, results)."""

    def __init__(self, args: argparse.Namespace, scratch: str | os.PathLike):
        self.args = args
        self.scratch = pathlib.Path(scratch)
        self.peaks: dict[str, dict] = {}  # dtype -> {"gflops", "n", "window_gflops"}
        self.training_rows: list[dict] = []
        self._train_data = None

    def timing(self, step, items_per_step: int) -> speed.Timing:
        a = self.args
        return speed.measure(step, items_per_step, max(a.warmup, 1), a.steps, a.windows,
                             a.min_window_s, a.budget_s)

    def peak(self, dtype: str) -> float:
        """The matmul peak GFLOP/s of `dtype`, measured on first use."""
        if dtype not in self.peaks:
            n = self.args.matmul_size
            t = speed.matmul_peak(dtype, n, warmup=2, repeats=self.args.matmul_repeats)
            self.peaks[dtype] = {"gflops": t.rate, "n": n, "window_gflops": t.window_rates}
            log(f"[machine] matmul {n}x{n} {dtype}: {t.rate:.1f} GFLOP/s")
        return self.peaks[dtype]["gflops"]

    def train_data(self):
        """(ImageTable of the synthetic training JPEGs, labels 0..C-1), generated once."""
        if self._train_data is None:
            from jlml_tf.data.types import relabel
            from jlml_tf_datasets import synthetic

            start = time.perf_counter()
            table, splits = synthetic.generate(synthetic.make_config(self.args.synthetic))
            table = table.subset(splits["train"])
            self._train_data = (table, relabel(table.pids)[0])
            log(f"synthetic '{self.args.synthetic}': {len(table)} training JPEGs "
                f"({time.perf_counter() - start:.1f} s to render)")
        return self._train_data


def reset_keras() -> None:
    import keras

    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()


def random_pixels(rng: np.random.Generator, batch: int, height: int, width: int) -> np.ndarray:
    """Whole-valued pixels in [0, 255], float32 [batch, height, width, 3], as the pipeline
    yields them."""
    return rng.integers(0, 256, (batch, height, width, 3)).astype(np.float32)


def tile_batch(images: np.ndarray, batch: int) -> np.ndarray:
    reps = -(-batch // len(images))
    return np.concatenate([images] * reps)[:batch] if reps > 1 else images[:batch]


# ----------------------------------------------------------------------------------------------
# 1. Machine


def section_machine(bench: Bench) -> dict:
    import keras
    import tensorflow as tf

    rows = [
        {"item": "CPU", "value": speed.cpu_model()},
        {"item": "instruction sets", "value": " ".join(speed.cpu_flags()) or "unknown"},
        {"item": "cores usable / online", "value": f"{speed.usable_cores()} / {os.cpu_count()}"},
        {"item": "TensorFlow / Keras", "value": f"{tf.__version__} / {keras.__version__}"},
        {"item": "load average at start", "value": speed.load_average()},
    ]
    for dtype in ("float32", "bfloat16", "float16"):
        gflops = bench.peak(dtype)
        n = bench.args.matmul_size
        rows.append({"item": f"matmul peak {dtype} ({n}x{n}), GFLOP/s", "value": round(gflops, 1)})
    return {"title": "Machine", "rows": rows, "peaks": bench.peaks,
            "columns": [Column("item", "item"), Column("value", "value")],
            "notes": ["Matmul peak: tf.linalg.matmul of two n x n matrices in a tf.function, "
                      "2 n^3 FLOPs, median over the timed products after 2 warm-up products."]}


# ----------------------------------------------------------------------------------------------
# 2. Training


def has_fused_batch_norm() -> bool:
    from jlml_tf.config import ModelConfig

    return "fused_batch_norm" in {f.name for f in dataclasses.fields(ModelConfig)}


def jlml_config(height: int, width: int, num_classes: int, fused_bn: bool | None = None):
    """The paper's JLML-ResNet39 at `height` x `width`; `fused_bn` None keeps the default."""
    from jlml_tf.config import ModelConfig

    extra = {} if fused_bn is None else {"fused_batch_norm": fused_bn}
    return ModelConfig(input_height=height, input_width=width, num_classes=num_classes, **extra)


def training_variants(precisions: list[str], xla_precisions: list[str],
                      fused_field: bool, default_fused: bool | None) -> list[tuple]:
    """(precision, jit_compile, fused_bn) of every JLML training row. With a `fused_batch_norm`
    field, float32 without XLA is measured with it off and on; other rows keep the default.
    fused_bn is None when ModelConfig has no such field."""
    variants = []
    for precision in precisions:
        if precision == "float32" and fused_field:
            variants += [(precision, False, False), (precision, False, True)]
        else:
            variants.append((precision, False, default_fused))
        if precision in xla_precisions:
            variants.append((precision, True, default_fused))
    return variants


def batch_norm_name(fused_bn: bool | None) -> str:
    return {None: "Keras", False: "plain Keras", True: "fused"}[fused_bn]


def jlml_training_row(bench: Bench, height: int, width: int, precision: str, xla: bool,
                      fused_bn: bool | None) -> dict:
    """Times `Trainer.train_step` on one fixed random batch (no input pipeline)."""
    import tensorflow as tf

    from jlml_tf.training import optimization
    from jlml_tf.config import SparsityConfig
    from jlml_tf.data import pipeline
    from jlml_tf.data.types import ImageTable
    from jlml_tf.model_summary import count_macs
    from jlml_tf.training.trainer import TrainConfig, Trainer

    a = bench.args
    n = a.batch_size
    reset_keras()
    # The table is never decoded (the batch below is fed straight to the step); the Trainer
    # only needs as many rows as one batch.
    table = ImageTable([b""] * n, np.arange(1, n + 1), np.ones(n), [f"{i}" for i in range(n)])
    labels = np.arange(n) % a.num_classes
    run = tempfile.mkdtemp(prefix="train_", dir=bench.scratch)
    trainer = None
    try:
        trainer = Trainer(
            run, jlml_config(height, width, a.num_classes, fused_bn), SparsityConfig(),
            optimization.OptimizerConfig(learning_rate=0.01, schedule="constant"),
            TrainConfig(epochs=1, batch_size=n, seed=a.seed, mixed_precision=precision,
                        jit_compile=xla, verbose=0),
            pipeline.AugmentConfig(), table, labels)
        macs = count_macs(trainer.model)
        rng = np.random.default_rng(a.seed)
        batch = (tf.constant(random_pixels(rng, n, height, width)),
                 tf.constant(rng.integers(0, a.num_classes, n).astype(np.int32)))
        last = {}

        def step():
            last["loss"] = float(trainer.train_step(batch)["loss"])

        timing = bench.timing(step, n)
    finally:
        if trainer is not None:
            trainer.writer.close()
        reset_keras()
        shutil.rmtree(run, ignore_errors=True)
    return training_row(bench, "JLML", height, width, precision, xla, batch_norm_name(fused_bn),
                        timing, macs, loss_finite=bool(np.isfinite(last["loss"])))


def resnet50_training_row(bench: Bench, height: int, width: int) -> dict:
    """keras.applications.ResNet50, random weights, float32, SGD + sparse CE in a tf.function."""
    import keras
    import tensorflow as tf

    from jlml_tf.model_summary import count_macs

    a = bench.args
    n = a.batch_size
    reset_keras()
    keras.utils.set_random_seed(a.seed)
    model = keras.applications.ResNet50(weights=None, input_shape=(height, width, 3),
                                        classes=a.num_classes)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    optimizer.build(model.trainable_variables)

    @tf.function
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    rng = np.random.default_rng(a.seed)
    images = tf.constant(random_pixels(rng, n, height, width))
    labels = tf.constant(rng.integers(0, a.num_classes, n).astype(np.int32))
    last = {}

    def step():
        last["loss"] = float(train_step(images, labels))

    macs = count_macs(model)
    timing = bench.timing(step, n)
    reset_keras()
    return training_row(bench, "ResNet50", height, width, "float32", False, "Keras", timing, macs,
                        loss_finite=bool(np.isfinite(last["loss"])))


def training_row(bench: Bench, model: str, height: int, width: int, precision: str, xla: bool,
                 batch_norm: str, timing: speed.Timing, macs: int, **extra) -> dict:
    dtype = speed.POLICY_DTYPE[precision]
    gflops = speed.training_gflops(timing.rate, macs)
    peak = bench.peak(dtype)
    row = {"model": model, "input": size_name(height, width), "batch": bench.args.batch_size,
           "precision": precision, "xla": xla, "batch_norm": batch_norm,
           "images_per_s": timing.rate, "macs": macs, "gflops": gflops, "peak_dtype": dtype,
           "peak_gflops": peak, "percent_of_peak": speed.percent_of(gflops, peak),
           "relative_to_resnet50": None, "timing": timing.as_dict(),
           "load_average": speed.load_average(), **extra}
    log(f"[training] {model} {row['input']} {precision} xla={'on' if xla else 'off'} "
        f"bn={batch_norm}: {timing.rate:.2f} img/s, {gflops:.1f} GFLOP/s "
        f"(warm-up {timing.warmup_seconds:.0f} s, timed {timing.timed_steps} steps in "
        f"{timing.timed_seconds:.0f} s{', budget-limited' if timing.budget_limited else ''})")
    return row


def add_relative(rows: list[dict], reference: dict) -> None:
    """Per-FLOP efficiency: each row's GFLOP/s over the reference row's."""
    for row in rows:
        row["relative_to_resnet50"] = speed.ratio(row["gflops"], reference["gflops"])


TRAINING_COLUMNS = [
    Column("model", "model"), Column("input", "input"), Column("batch", "batch"),
    Column("precision", "precision"), Column("XLA", "xla", lambda v: "on" if v else "off"),
    Column("batch norm", "batch_norm"), Column("img/s", "images_per_s", "{:.1f}"),
    Column("forward MACs", "macs", lambda v: f"{v / 1e9:.3f}e9"),
    Column("training GFLOP/s", "gflops", "{:.1f}"),
    Column("% of matmul peak", "percent_of_peak", "{:.1f}"),
    Column("peak dtype", "peak_dtype"),
    Column("per-FLOP vs ResNet50 fp32", "relative_to_resnet50", "{:.2f}x"),
]


def section_training(bench: Bench) -> dict:
    a = bench.args
    fused_field = has_fused_batch_norm()
    default_fused = jlml_config(64, 32, 2).fused_batch_norm if fused_field else None
    variants = training_variants(a.precisions, a.xla_precisions, fused_field, default_fused)
    rows = []
    for height, width in a.input_sizes:
        reference = resnet50_training_row(bench, height, width)
        size_rows = [reference] + [jlml_training_row(bench, height, width, *v) for v in variants]
        add_relative(size_rows, reference)
        rows += size_rows
    bench.training_rows = rows
    return {"title": "Training throughput", "rows": rows, "columns": TRAINING_COLUMNS,
            "notes": [
                f"Batch {a.batch_size}, one fixed random batch (input pipeline excluded; see the "
                "pipeline section). JLML: the paper's JLML-ResNet39 trained by "
                "`Trainer.train_step` (multi-loss CE, SFL penalties, weight decay, SGD "
                "Nesterov; mixed_float16 with loss scaling). ResNet50: keras.applications, "
                "random weights, float32, SGD + sparse CE in a tf.function.",
                "training GFLOP/s = img/s x 3 x forward MACs x 2 (MACs of the trained model, "
                "classifiers included); % of the matmul peak in the dtype the policy computes "
                "in; per-FLOP vs ResNet50 = GFLOP/s over ResNet50 float32's at the same input.",
                f"Rows slower than --budget_s={a.budget_s} s per measurement are timed with fewer "
                "steps (`timing.budget_limited` in results.json).", PAPER_RESNET50_NOTE]}


# ----------------------------------------------------------------------------------------------
# 3. Inference


class KerasFunction:
    """A Keras model called in a tf.function (graph mode, as predict does): uint8 in, NumPy out."""

    def __init__(self, model):
        import tensorflow as tf

        @tf.function
        def forward(x):
            return model(x, training=False)

        self.forward = forward

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return self.forward(tf.constant(pixels, tf.float32)).numpy()


def inference_rows(bench: Bench, model: str, fmt: str, run, pixels: np.ndarray, macs: int,
                   height: int, width: int) -> list[dict]:
    """One row per inference batch size; `run(uint8 batch)` returns the embeddings."""
    rows = []
    for batch in bench.args.inference_batches:
        x = tile_batch(pixels, batch)
        timing = bench.timing(lambda: run(x), batch)
        gflops = speed.inference_gflops(timing.rate, macs)
        peak = bench.peak("float32")
        rows.append({"model": model, "format": fmt, "input": size_name(height, width),
                     "batch": batch, "images_per_s": timing.rate,
                     "ms_per_image": 1000.0 / timing.rate, "macs": macs, "gflops": gflops,
                     "percent_of_peak": speed.percent_of(gflops, peak), "peak_gflops": peak,
                     "relative_to_resnet50": None, "timing": timing.as_dict(),
                     "load_average": speed.load_average()})
        log(f"[inference] {model} {fmt} {size_name(height, width)} batch {batch}: "
            f"{timing.rate:.1f} img/s (warm-up {timing.warmup_seconds:.0f} s)")
    return rows


def jlml_inference_rows(bench: Bench, height: int, width: int) -> list[dict]:
    from jlml_tf.inference import embedders
    from jlml_tf.inference import run_dir as run_dir_lib
    from jlml_tf.export import saved_model, tflite
    import run_fixtures as fixtures  # tests/run_fixtures.py: runs with random weights
    from jlml_tf.model_summary import count_macs

    a = bench.args
    reset_keras()
    table, _ = bench.train_data()
    calib = tflite.calibration_images(table, height, width, a.calibration_count, a.seed)
    work = pathlib.Path(tempfile.mkdtemp(prefix=f"export_{size_name(height, width)}_",
                                         dir=bench.scratch))
    try:
        # A run directory as the trainer writes it (batch-norm statistics from real images),
        # then the export library's own steps: SavedModel, TFLite conversion, LiteRT.
        log(f"[inference] exporting JLML {size_name(height, width)} (SavedModel, TFLite)")
        run = fixtures.make_run(work / "run", jlml_config(height, width, a.num_classes),
                                images=calib[:8], seed=a.seed)
        l2 = run_dir_lib.load_run(run).embedding_model
        macs = count_macs(l2)
        sm_dir = saved_model.write_saved_model(l2, work / "saved_model")
        tflite_files = {v: tflite.write(tflite.convert(sm_dir, v, calib if v == "int8" else None),
                                        work / f"{v}.tflite") for v in ("float32", "int8")}
        runners = [("Keras (tf.function)", KerasFunction(l2)),
                   ("SavedModel", embedders.SavedModelEmbedder(sm_dir)._run)]  # noqa: SLF001
        for variant, path in tflite_files.items():
            embedder = embedders.TFLiteEmbedder(path, num_threads=a.tflite_threads)
            runners.append((f"TFLite {variant}", embedder._run))  # noqa: SLF001
        rows = []
        for fmt, run_fn in runners:
            rows += inference_rows(bench, "JLML", fmt, run_fn, calib, macs, height, width)
        return rows
    finally:
        reset_keras()
        shutil.rmtree(work, ignore_errors=True)


def resnet50_inference_rows(bench: Bench, height: int, width: int) -> list[dict]:
    """ResNet50 without its classifier, average-pooled (a 2048-d feature), in Keras float32."""
    import keras

    from jlml_tf.model_summary import count_macs

    reset_keras()
    keras.utils.set_random_seed(bench.args.seed)
    model = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                        input_shape=(height, width, 3))
    rng = np.random.default_rng(bench.args.seed)
    pixels = rng.integers(0, 256, (max(bench.args.inference_batches), height, width, 3),
                          dtype=np.uint8)
    rows = inference_rows(bench, "ResNet50", "Keras (tf.function)", KerasFunction(model), pixels,
                          count_macs(model), height, width)
    reset_keras()
    return rows


INFERENCE_COLUMNS = [
    Column("model", "model"), Column("format", "format"), Column("input", "input"),
    Column("batch", "batch"), Column("img/s", "images_per_s", "{:.1f}"),
    Column("ms/image", "ms_per_image", "{:.2f}"),
    Column("forward MACs", "macs", lambda v: f"{v / 1e9:.3f}e9"),
    Column("GFLOP/s", "gflops", "{:.1f}"),
    Column("% of fp32 matmul peak", "percent_of_peak", "{:.1f}"),
    Column("per-FLOP vs ResNet50 Keras", "relative_to_resnet50", "{:.2f}x"),
]


def section_inference(bench: Bench) -> dict:
    a = bench.args
    rows = []
    for height, width in a.input_sizes:
        references = resnet50_inference_rows(bench, height, width)
        size_rows = jlml_inference_rows(bench, height, width) + references
        by_batch = {r["batch"]: r for r in references}
        for row in size_rows:
            reference = by_batch[row["batch"]]
            row["relative_to_resnet50"] = speed.ratio(row["gflops"], reference["gflops"])
        rows += size_rows
    return {"title": "Inference throughput", "rows": rows, "columns": INFERENCE_COLUMNS,
            "notes": [
                "JLML: the L2-normalised embedding model (classifiers not run), with batch-norm "
                "statistics from a few synthetic images (`tests/run_fixtures.make_run`), uint8 "
                "pixels in, NumPy embeddings out. SavedModel: `serving_default` loaded with "
                "tf.saved_model.load. TFLite: converted by `jlml_tf.export.tflite.convert` "
                f"(int8 calibrated on {a.calibration_count} synthetic training images), run "
                f"with LiteRT on {a.tflite_threads} threads. ResNet50: keras.applications, no "
                "top, average pooling, random weights.",
                "GFLOP/s = img/s x forward MACs x 2; every row is a percentage of the float32 "
                "matmul peak (no int8 peak is measured, so int8 rows can exceed what float32 "
                "could reach). Per-FLOP vs ResNet50: GFLOP/s over ResNet50 Keras at the same "
                "input and batch.", PAPER_RESNET50_NOTE]}


# ----------------------------------------------------------------------------------------------
# 4. Input pipeline


def pipeline_batches(table, labels, height: int, width: int, batch: int, seed: int,
                     cache_decoded: bool):
    """Training batches epoch after epoch, each epoch a fresh `train_dataset` as the trainer
    builds it (default augmentation: flip, pad-and-crop, random erasing)."""
    from jlml_tf.data import pipeline

    for epoch in itertools.count():
        yield from pipeline.train_dataset(table, labels, height, width, batch, seed=seed,
                                          epoch=epoch, augment=pipeline.AugmentConfig(),
                                          cache_decoded=cache_decoded)


def fastest_float32_training(training_rows: list[dict], input_name: str) -> float | None:
    rates = [r["images_per_s"] for r in training_rows
             if r["model"] == "JLML" and r["precision"] == "float32" and r["input"] == input_name]
    return max(rates) if rates else None


PIPELINE_GOAL = 5.0

PIPELINE_COLUMNS = [
    Column("input", "input"), Column("batch", "batch"),
    Column("cache_decoded", "cache_decoded", lambda v: "on" if v else "off"),
    Column("pipeline img/s", "images_per_s", "{:.0f}"),
    Column("JLML float32 training img/s", "training_images_per_s", "{:.1f}"),
    Column("ratio (goal >= 5x)", "ratio", "{:.1f}x"),
    Column("goal met", "goal_met", lambda v: "yes" if v else "no"),
]


def section_pipeline(bench: Bench) -> dict:
    from jlml_tf.data import pipeline

    a = bench.args
    table, labels = bench.train_data()
    rows = []
    for height, width in a.input_sizes:
        train_rate = fastest_float32_training(bench.training_rows, size_name(height, width))
        for cache in (False, True):
            pipeline.DECODED_CACHE.clear()  # a cached run pays its decoding in the warm-up
            batches = pipeline_batches(table, labels, height, width, a.batch_size, a.seed, cache)
            timing = bench.timing(lambda: next(batches), a.batch_size)
            batches.close()
            r = speed.ratio(timing.rate, train_rate)
            rows.append({"input": size_name(height, width), "batch": a.batch_size,
                         "cache_decoded": cache, "images_per_s": timing.rate,
                         "training_images_per_s": train_rate, "ratio": r,
                         "goal_met": None if r is None else r >= PIPELINE_GOAL,
                         "timing": timing.as_dict(), "load_average": speed.load_average()})
            log(f"[pipeline] {size_name(height, width)} cache_decoded={cache}: "
                f"{timing.rate:.0f} img/s")
    pipeline.DECODED_CACHE.clear()
    return {"title": "Input pipeline", "rows": rows, "columns": PIPELINE_COLUMNS,
            "notes": [
                f"`train_dataset` alone over {len(table)} synthetic 128x64 JPEGs (config "
                f"'{a.synthetic}'), default augmentation (flip, pad 10 and crop, random erasing), "
                "batches consumed in Python epoch after epoch as the trainer does; "
                "cache_decoded=on decodes the table once (in the warm-up).",
                "ratio = pipeline img/s over the fastest JLML float32 training img/s at the same "
                "input from the training section (n/a when that section was not run). The "
                "pipeline is measured alone; in training it shares the cores with the model."]}


# ----------------------------------------------------------------------------------------------
# 5. Evaluation


EVALUATION_COLUMNS = [
    Column("problem", "problem"), Column("size", "size"),
    Column("median wall s", "median_s", "{:.3f}"), Column("best wall s", "best_s", "{:.3f}"),
    Column("CPU s (best run)", "cpu_s", "{:.2f}"), Column("runs", "repeats"),
]


def section_evaluation(bench: Bench) -> dict:
    import eval_speed

    from jlml_tf.evaluation import distances, protocol

    a = bench.args
    dim = 1024
    rng = np.random.default_rng(a.seed)
    market = eval_speed.market_like(rng, dim)
    block = distances.default_block_size(len(market[3]))

    def run_market():
        return protocol.evaluate(*market, metric="l2", block_size=block)

    trials = eval_speed.cuhk03_trials(rng, dim)

    def run_cuhk03():
        return protocol.aggregate_trials([protocol.evaluate(*t) for t in trials])

    rows = []
    for problem, size, fn in (
            ("Market-1501 scale: evaluate (CMC + mAP official + mAP + mINP)",
             f"{len(market[0])} x {len(market[3])}, {dim}-d, block {block}", run_market),
            ("CUHK03 scale: 20 trials + aggregate_trials", f"20 x (100 x 100), {dim}-d",
             run_cuhk03)):
        fn()  # warm-up: BLAS threads, page cache
        _, best, median, cpu = eval_speed.timed(fn, a.eval_repeats)
        rows.append({"problem": problem, "size": size, "best_s": best, "median_s": median,
                     "cpu_s": cpu, "repeats": a.eval_repeats, "load_average": speed.load_average()})
        log(f"[evaluation] {problem.split(':')[0]}: median {median:.3f} s")
    return {"title": "Evaluation time", "rows": rows, "columns": EVALUATION_COLUMNS,
            "notes": ["Random L2-normalised features with the data sets' label layout "
                      "(benchmarks/eval_speed.py), after one untimed run. CPU time counts every "
                      "thread, so it is not inflated by other processes as wall time is."]}


# ----------------------------------------------------------------------------------------------
# Output


RUNNERS = {"machine": section_machine, "training": section_training,
           "inference": section_inference, "pipeline": section_pipeline,
           "evaluation": section_evaluation}


def section_markdown(section: dict) -> str:
    parts = [f"## {section['title']}", "", speed.markdown_table(section["rows"],
                                                                section["columns"])]
    if section.get("notes"):
        parts += [""] + [f"- {n}" for n in section["notes"]]
    return "\n".join(parts)


def report_markdown(report: dict) -> str:
    head = [f"# JLML benchmarks ({report['started']})", "",
            f"`{report['command']}`" + (" (quick: tiny sizes, figures not meaningful)"
                                        if report["settings"]["quick"] else ""), ""]
    return "\n".join(head) + "\n\n".join(section_markdown(s) for s in report["sections"].values()) \
        + "\n"


def json_ready(report: dict) -> dict:
    """The report without the Column objects (kept as header names)."""
    out = dict(report, sections={})
    for name, section in report["sections"].items():
        out["sections"][name] = dict(section, columns=[c.header for c in section["columns"]])
    return out


def write_report(report: dict, out_dir: pathlib.Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(json_ready(report), indent=2, default=str)
                                          + "\n")
    (out_dir / "results.md").write_text(report_markdown(report))


def settings_of(args: argparse.Namespace) -> dict:
    settings = dict(vars(args))
    settings["input_sizes"] = [size_name(h, w) for h, w in args.input_sizes]
    return settings


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out_dir = pathlib.Path(args.out_dir)
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {"command": command.strip(), "started": datetime.datetime.now().isoformat(
        timespec="seconds"), "settings": settings_of(args), "sections": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jlml_bench_") as scratch:
        bench = Bench(args, scratch)
        for name in SECTIONS:
            if name not in args.sections:
                continue
            log(f"section {name}")
            section_start = time.perf_counter()
            section = RUNNERS[name](bench)
            section["seconds"] = time.perf_counter() - section_start
            report["sections"][name] = section
            report["duration_s"] = time.perf_counter() - start
            write_report(report, out_dir)
            print(section_markdown(section) + "\n", flush=True)
    log(f"done in {time.perf_counter() - start:.0f} s; wrote {out_dir}/results.json and "
        f"results.md")
    return report


if __name__ == "__main__":
    main()
