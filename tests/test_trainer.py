"""Training loop: it learns, resumes exactly, stops on NaN, and survives SIGKILL."""
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from jlml_tf import optimization, run_dir
from jlml_tf.config import SparsityConfig
from jlml_tf.data import pipeline
from jlml_tf.data.types import ImageTable
from jlml_tf.trainer import Trainer, TrainConfig, TrainingDivergedError

from conftest import PROJECT_ROOT


def colour_table(identities=4, per_identity=6, height=64, width=32, seed=0):
    """Each identity a distinct top/bottom colour pair plus noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    images, pids = [], []
    for pid in range(identities):
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        for _ in range(per_identity):
            img = np.concatenate([np.broadcast_to(top, (height // 2, width, 3)),
                                  np.broadcast_to(bottom, (height - height // 2, width, 3))])
            img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            images.append(buf.getvalue())
            pids.append(pid + 1)
    n = len(images)
    return ImageTable(images, pids, np.ones(n, np.int64), [f"{i}.png" for i in range(n)])


def make_trainer(tmp_path, cfg, epochs=2, lr=0.05, **train_kwargs):
    table = colour_table()
    labels = table.pids - 1
    settings = dict(epochs=epochs, batch_size=8, seed=3, checkpoint_every_steps=2,
                    log_every_steps=1, verbose=0)
    train_cfg = TrainConfig(**{**settings, **train_kwargs})
    model_cfg = dataclasses.replace(cfg, num_classes=4)
    return Trainer(tmp_path, model_cfg, SparsityConfig(),
                   optimization.OptimizerConfig(learning_rate=lr, schedule="constant"), train_cfg,
                   pipeline.AugmentConfig(flip=False, pad=0, erasing_probability=0.0), table, labels)


def test_training_reduces_loss(tmp_path, tiny_model_config):
    trainer = make_trainer(tmp_path, tiny_model_config, epochs=1)
    batch = next(iter(trainer._dataset(0, 0)))
    first = float(trainer._train_step(batch)["loss"])
    for _ in range(15):
        last = float(trainer._train_step(batch)["loss"])
    assert last < 0.7 * first


def test_checkpoint_every_epoch_and_steps(tmp_path, tiny_model_config):
    trainer = make_trainer(tmp_path, tiny_model_config, epochs=2)
    trainer.fit()
    assert trainer.step == 2 * trainer.steps_per_epoch == 6
    assert run_dir.latest_checkpoint(tmp_path).endswith("ckpt-6")
    events = [json.loads(l)["event"] for l in open(tmp_path / "train_log.jsonl")]
    assert events == ["start", "finished"]
    assert list((tmp_path / "tensorboard").iterdir())


def test_resume_continues_exactly(tmp_path, tiny_model_config):
    tf.config.experimental.enable_op_determinism()
    straight = make_trainer(tmp_path / "a", tiny_model_config, epochs=2)
    straight.fit()
    first = make_trainer(tmp_path / "b", tiny_model_config, epochs=1)
    first.fit()
    resumed = make_trainer(tmp_path / "b", tiny_model_config, epochs=2)
    assert resumed.restore() == 3
    resumed.fit()
    assert resumed.step == 6
    for a, b in zip(straight.model.weights, resumed.model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_model_config):
    trainer = make_trainer(tmp_path, tiny_model_config, epochs=3)
    trainer.fit()  # 9 steps, a good checkpoint
    diverging = make_trainer(tmp_path, tiny_model_config, epochs=6, lr=1e30,
                             checkpoint_every_steps=100)
    with pytest.raises(TrainingDivergedError, match="Last good checkpoint: .*ckpt-9"):
        diverging.fit()
    assert run_dir.latest_checkpoint(tmp_path).endswith("ckpt-9")
    restored = make_trainer(tmp_path, tiny_model_config, epochs=3)
    restored.restore()
    assert all(np.isfinite(w.numpy()).all() for w in restored.model.weights)


def _train_command(run, extra=()):
    return [sys.executable, "-m", "jlml_tf.train", f"--flagfile={PROJECT_ROOT}/tests/tiny.cfg",
            f"--run_dir={run}", *extra]


@pytest.mark.slow
def test_sigkill_then_restart_resumes_from_checkpoint(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "JLML_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(_train_command(run), cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and run_dir.latest_checkpoint(run) is None and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(run_dir.latest_checkpoint(run).rsplit("-", 1)[1])
    assert killed_at > 0

    done = subprocess.run(_train_command(run), cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in open(run / "train_log.jsonl")]
    starts = [e for e in events if e["event"] == "start"]
    assert starts[0]["step"] == 0 and starts[-1]["step"] >= killed_at > 0
    assert events[-1]["event"] == "finished" and events[-1]["step"] == starts[-1]["total_steps"]
    assert (run / "results.json").is_file()
