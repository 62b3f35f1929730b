"""The run directory: what training leaves behind and every other tool reads.

    RUN/config.json          {"model": ModelConfig, "train": flags, "data": data set facts}
    RUN/checkpoints/ckpt-N   tf.train.Checkpoint(model=training model, optimizer, step, epoch)
    RUN/tensorboard/         scalars
    RUN/results.json|md, RUN/cmc.png   evaluation
"""
from __future__ import annotations

import json
import os
import pathlib

import tensorflow as tf

from jlml_tf.config import ModelConfig
from jlml_tf.modeling import jlml

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"


def write_config(run_dir: str | os.PathLike, model: ModelConfig, train: dict, data: dict) -> None:
    path = pathlib.Path(run_dir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"model": model.to_dict(), "train": train, "data": data}, indent=2,
                      sort_keys=True, default=str)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomic: an interrupted write never leaves half a config


def read_config(run_dir: str | os.PathLike) -> dict:
    path = pathlib.Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a run directory written by "
                                "`python -m jlml_tf.train`?")
    return json.loads(path.read_text())


def model_config(run_dir: str | os.PathLike) -> ModelConfig:
    return ModelConfig.from_dict(read_config(run_dir)["model"])


def latest_checkpoint(run_dir: str | os.PathLike) -> str | None:
    return tf.train.latest_checkpoint(os.fspath(pathlib.Path(run_dir) / CHECKPOINT_DIR))


def resolve_checkpoint(path: str | os.PathLike) -> tuple[pathlib.Path, str]:
    """Accepts a run directory or a checkpoint prefix (RUN/checkpoints/ckpt-N)."""
    path = pathlib.Path(path)
    if (path / CONFIG_FILE).is_file():
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            raise FileNotFoundError(f"no checkpoint in {path / CHECKPOINT_DIR}")
        return path, ckpt
    if path.parent.name == CHECKPOINT_DIR and tf.io.gfile.exists(f"{path}.index"):
        return path.parent.parent, os.fspath(path)
    raise FileNotFoundError(f"{path} is neither a run directory (with {CONFIG_FILE}) nor a "
                            f"checkpoint prefix such as RUN/{CHECKPOINT_DIR}/ckpt-3")


def load_models(run_dir_or_checkpoint: str | os.PathLike):
    """Rebuilds the models from config.json and restores the checkpoint's weights.

    Returns (ModelConfig, training model, embedding model without L2 normalisation).
    """
    run_dir, ckpt = resolve_checkpoint(run_dir_or_checkpoint)
    cfg = model_config(run_dir)
    training_model, embedding_model = jlml.build_jlml(cfg)
    tf.train.Checkpoint(model=training_model).restore(ckpt).expect_partial().assert_existing_objects_matched()
    return cfg, training_model, embedding_model
