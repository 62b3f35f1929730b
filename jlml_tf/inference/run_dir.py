"""The run directory: what training leaves behind and every other tool reads.

    RUN/config.json          {"model": ModelConfig, "train": flags, "data": data set facts}
    RUN/checkpoints/ckpt-N   tf.train.Checkpoint(model=training model, optimizer, step, epoch)
    RUN/tensorboard/         scalars
    RUN/train_log.jsonl      one JSON line per training event (start, checkpoint, finished, ...)
    RUN/results.json|md, RUN/cmc.png   evaluation
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import keras
import tensorflow as tf

from jlml_tf import cli
from jlml_tf.config import ModelConfig
from jlml_tf.modeling import jlml

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
# A multi-trial run keeps trial N in RUN/trial_NN/ (also the form --init_from=RUN/trial_{trial:02d} names).
TRIAL_DIR = "trial_{trial:02d}"
TRAIN_LOG = "train_log.jsonl"  # one JSON event per line: start, checkpoint, finished, interrupted, ...


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


MAX_INIT_CHAIN = 64  # --init_from links followed before calling the chain a cycle


def training_datasets(run_dir: str | os.PathLike) -> set[str]:
    """Every data set whose images trained the model in run_dir: its own, its --extra_train
    ones and those of each run it started from (--init_from, followed to the first run).
    FileNotFoundError naming the run whose config.json is gone: then nobody can tell."""
    seen, path = set(), pathlib.Path(run_dir)
    for _ in range(MAX_INIT_CHAIN):
        config = read_config(path)
        train = config.get("train", {})
        seen.add(config.get("data", {}).get("dataset") or train.get("dataset"))
        seen.update(cli.extra_train_spec(s)[0] for s in train.get("extra_train") or [])
        if not train.get("init_from"):
            return seen - {None}
        path = pathlib.Path(train["init_from"])
        if not (path / CONFIG_FILE).is_file() and path.parent.name == CHECKPOINT_DIR:
            path = path.parent.parent  # a checkpoint prefix RUN/checkpoints/ckpt-N
    raise ValueError(f"{run_dir}: more than {MAX_INIT_CHAIN} --init_from links (a cycle?)")


@dataclasses.dataclass
class DataSource:
    """Which data set a tool reads for a run, and how (the arguments of jlml_tf_datasets.load)."""

    name: str | None
    protocol: str | None
    data_dir: str | None
    manual_dir: str | None
    options: dict
    other_than_trained_on: bool  # a data set other than the run's own


def data_source(config: dict, dataset: str | None = None, protocol: str | None = None,
                data_dir: str | None = None, manual_dir: str | None = None,
                options: dict | None = None) -> DataSource:
    """The one rule for "a flag overrides the data set in config.json": every value given wins;
    the run's own (config.json) fill the rest, except that for a data set other than the run's
    none of the run's protocol, loader options or release folder apply."""
    train, data = config.get("train", {}), config.get("data", {})
    other = dataset is not None and dataset != data.get("dataset")
    own = (lambda value: None) if other else (lambda value: value)  # noqa: E731
    if options is None:
        options = own(cli.key_values(train.get("dataset_option") or [], "dataset_option")) or {}
    return DataSource(dataset or data.get("dataset"), protocol or own(data.get("protocol")),
                      data_dir or train.get("data_dir"), manual_dir or own(train.get("manual_dir")),
                      options, other)


@dataclasses.dataclass
class LoadedRun:
    """A trained run, restored: what evaluation, export, search and warm starts need."""

    run_dir: pathlib.Path
    checkpoint: str  # the checkpoint prefix restored, e.g. RUN/checkpoints/ckpt-12
    config: dict  # config.json: {"model", "train", "data"}
    model_cfg: ModelConfig
    training_model: keras.Model  # pixels -> logits per head
    embedding_model: keras.Model  # pixels -> L2-normalised embedding, as every export serves it


def build_deployed(cfg: ModelConfig) -> tuple[keras.Model, keras.Model]:
    """JLML as it is deployed: float32, whatever policy trained it or is set globally (left
    as it was), and batch norm over whole batches (per-camera groups are a training setting:
    a training-mode pass, as camera_bn's calibration, must not need whole groups)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        return jlml.build_jlml(dataclasses.replace(cfg, batch_norm_group_size=0))
    finally:
        keras.mixed_precision.set_global_policy(previous)


def load_run(run_dir_or_checkpoint: str | os.PathLike) -> LoadedRun:
    """Rebuilds the models from config.json (float32) and restores the checkpoint's weights."""
    run_dir, ckpt = resolve_checkpoint(run_dir_or_checkpoint)
    config = read_config(run_dir)
    cfg = ModelConfig.from_dict(config["model"])
    training_model, embedding_model = build_deployed(cfg)
    tf.train.Checkpoint(model=training_model).restore(ckpt).expect_partial().assert_existing_objects_matched()
    return LoadedRun(run_dir, ckpt, config, cfg, training_model,
                     jlml.with_l2_normalization(embedding_model))


def trial_dir(run: str | os.PathLike, index: int) -> pathlib.Path:
    """Trial `index`'s run directory inside the multi-trial run `run`."""
    return pathlib.Path(run) / TRIAL_DIR.format(trial=index)


def training_hours(run: str | os.PathLike) -> float | None:
    """Wall hours of every trial's training segments (start -> finished/interrupted/diverged)
    in RUN/train_log.jsonl or RUN/trial_*/train_log.jsonl; None without a log. A segment
    without a last word (killed by SIGKILL or a machine that stopped, or still running) counts
    up to its last checkpoint: later steps were lost, and the run that redoes them counts them."""
    run = pathlib.Path(run)
    logs = sorted(run.glob(f"trial_*/{TRAIN_LOG}")) or sorted(run.glob(TRAIN_LOG))
    if not logs:
        return None
    return sum(_log_seconds(log) for log in logs) / 3600


def _log_seconds(log: pathlib.Path) -> float:
    seconds, started, last_checkpoint = 0.0, None, None
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "start":
            seconds += _kept_seconds(started, last_checkpoint)  # a previous segment was killed
            started, last_checkpoint = event["time"], None
        elif event["event"] == "checkpoint":
            last_checkpoint = event["time"]
        elif event["event"] in ("finished", "interrupted", "diverged"):
            seconds += _kept_seconds(started, event["time"])
            started = None
    return seconds + _kept_seconds(started, last_checkpoint)  # a last segment without an end


def _kept_seconds(started: float | None, until: float | None) -> float:
    return until - started if started is not None and until is not None else 0.0
