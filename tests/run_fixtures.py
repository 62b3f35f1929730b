"""Small run directories for tests, examples and benchmarks (no training needed).

`make_run` writes exactly what the trainer writes (RUN/config.json and a
tf.train.Checkpoint(model=training_model) under RUN/checkpoints/) for a model with random
weights whose batch-norm statistics are set from a few images, so activations have realistic
ranges and quantisation behaves as it would on a trained model.
"""
from __future__ import annotations

import json
import os
import pathlib

import numpy as np

from jlml_tf.config import ModelConfig

# Two stripes, not the paper's four: building, tracing and exporting cost grows with the layers.
TINY = dict(input_height=64, input_width=32, stem_filters=8, global_widths=(4, 8),
            local_widths=(2, 4), units_per_stage=(1, 1), stage_strides=(1, 2), feature_dim=16,
            num_classes=5, num_stripes=2)


def tiny_config(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY, **overrides})


def make_run(run_dir: str | os.PathLike, cfg: ModelConfig | None = None,
             images: np.ndarray | None = None, seed: int = 0, data: dict | None = None,
             results: dict | None = None) -> pathlib.Path:
    """Writes a run directory; `images` (uint8 [N, H, W, 3]) set the batch-norm statistics."""
    import keras
    import tensorflow as tf

    from jlml_tf.inference import run_dir as run_dir_lib
    from jlml_tf.modeling import jlml

    cfg = cfg or tiny_config()
    run_dir = pathlib.Path(run_dir)
    keras.utils.set_random_seed(seed)
    training_model, _ = jlml.build_jlml(cfg)
    if images is None:
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (16, cfg.input_height, cfg.input_width, 3), dtype=np.uint8)
    x = tf.constant(np.asarray(images, np.float32))
    for _ in range(30):  # momentum 0.9: 30 passes bring the moving statistics to the batch's
        training_model(x, training=True)
    run_dir_lib.write_config(run_dir, cfg, train={"seed": seed},
                             data=data or {"dataset": "none", "note": "random weights (fixture)"})
    tf.train.Checkpoint(model=training_model).save(os.fspath(run_dir / "checkpoints" / "ckpt"))
    if results is not None:
        write_results(run_dir, results)
    return run_dir


def write_results(run_dir: str | os.PathLike, *trials: dict, method: str = "JLML",
                  title: str = "fixture / default / default") -> pathlib.Path:
    """RUN/results.json laid out as training writes it (`jlml_tf.evaluation.report`: the rates
    nested under the method name, mean and std over the trials), without the CMC plot."""
    from jlml_tf.evaluation import protocol, report

    document = {"title": title, "paper": None, "extra": None,
                "results": {method: {"trials": list(trials),
                                     **protocol.aggregate_trials(list(trials))}}}
    path = pathlib.Path(run_dir) / report.JSON_FILE
    path.write_text(json.dumps(report._jsonable(document), indent=2) + "\n")  # noqa: SLF001
    return path


def tiny_synthetic(data_dir: str | os.PathLike):
    """The synthetic data set's "tiny" config (12 ids, 64x32 images), cached in data_dir."""
    import jlml_tf_datasets

    return jlml_tf_datasets.load("synthetic", data_dir=os.fspath(data_dir), config="tiny")


def make_synthetic_run(run_dir: str | os.PathLike, data, cfg: ModelConfig | None = None,
                       seed: int = 0, data_dir: str | os.PathLike | None = None,
                       results: dict | None = None) -> pathlib.Path:
    """A run directory recording `data` (a tiny synthetic ReidData) as its data set, with
    batch-norm statistics from its training images, as `python -m jlml_tf.train` would."""

    from jlml_tf.data import pipeline

    cfg = cfg or tiny_config()
    images = pipeline.decode_all(data.table.subset(data.trials[0].train[:32]), cfg.input_height,
                                 cfg.input_width)
    run_dir = make_run(run_dir, cfg, images, seed,
                       data={"dataset": data.name, "protocol": data.protocol}, results=results)
    config = json.loads((run_dir / "config.json").read_text())
    config["train"].update(dataset=data.name, protocol=data.protocol,
                           data_dir=os.fspath(data_dir) if data_dir else None,
                           dataset_option=[f"config={data.info.get('config', 'tiny')}"])
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    return run_dir


def export_tiny(export_dir: str | os.PathLike, run_dir: str | os.PathLike | None = None,
                model_name: str = "jlml", version: int | None = None, seed: int = 0):
    """make_run + the SavedModel only: returns (base path, version dir, l2 Keras model)."""
    from jlml_tf.inference import run_dir as run_dir_lib
    from jlml_tf.export import saved_model

    export_dir = pathlib.Path(export_dir)
    run_dir = run_dir or make_run(export_dir.parent / f"run_{export_dir.name}", seed=seed)
    embedding_model = run_dir_lib.load_run(run_dir).embedding_model
    base = export_dir / model_name
    path = saved_model.export_saved_model(embedding_model, base, version)
    return base, path, embedding_model  # load_run's model is L2-normalised


def write_train_log(path: str | os.PathLike, *events: tuple[str, float]) -> None:
    """A hand-made RUN/train_log.jsonl: (event, time) pairs."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps({"event": e, "time": t}) for e, t in events))
