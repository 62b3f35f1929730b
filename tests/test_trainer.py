"""Training loop: it learns, resumes exactly, stops on NaN, saves on SIGTERM, survives SIGKILL,
evaluates every N epochs, and trains in mixed_float16 with loss scaling."""
import dataclasses
import io
import json
import math
import os
import signal
import subprocess
import sys
import threading
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from jlml_tf.inference import run_dir
from jlml_tf.training import optimization
from jlml_tf.config import SparsityConfig
from jlml_tf.data import pipeline
from jlml_tf.data.types import ImageTable
from jlml_tf.training.trainer import Trainer, TrainConfig, TrainingDivergedError

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


def make_trainer(tmp_path, cfg, epochs=2, lr=0.05, table=None, evaluate_fn=None, teacher=None,
                 **train_kwargs):
    table = table or colour_table()
    labels = table.pids - 1
    settings = dict(epochs=epochs, batch_size=8, seed=3, checkpoint_every_steps=2,
                    log_every_steps=1, verbose=0)
    train_cfg = TrainConfig(**{**settings, **train_kwargs})
    model_cfg = dataclasses.replace(cfg, num_classes=4)
    return Trainer(tmp_path, model_cfg, SparsityConfig(),
                   optimization.OptimizerConfig(learning_rate=lr, schedule="constant"), train_cfg,
                   pipeline.AugmentConfig(flip=False, pad=0, erasing_probability=0.0), table, labels,
                   evaluate_fn=evaluate_fn, teacher=teacher)


def events(run):
    return [json.loads(line) for line in open(run / "train_log.jsonl")]


def test_training_reduces_loss(tmp_path, tiny_model_config):
    trainer = make_trainer(tmp_path, tiny_model_config, epochs=1)
    batch = next(iter(trainer._dataset(0, 0)))
    first = float(trainer.train_step(batch)["loss"])
    for _ in range(15):
        last = float(trainer.train_step(batch)["loss"])
    assert last < 0.7 * first


def test_checkpoint_every_epoch_and_steps(tmp_path, tiny_model_config):
    trainer = make_trainer(tmp_path, tiny_model_config, epochs=2)
    trainer.fit()
    assert trainer.step == 2 * trainer.steps_per_epoch == 6
    assert run_dir.latest_checkpoint(tmp_path).endswith("ckpt-6")
    # every 2 steps and at each epoch's end (3 steps), step 6 saved once
    assert [(e["event"], e.get("step")) for e in events(tmp_path)] == [
        ("start", 0), ("checkpoint", 2), ("checkpoint", 3), ("checkpoint", 4),
        ("checkpoint", 6), ("finished", 6)]
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


@pytest.mark.parametrize("epochs, every, evaluated_after", [(4, 2, [2]), (3, 1, [1, 2]),
                                                           (2, 0, [])])
def test_eval_every_epochs(tmp_path, tiny_model_config, epochs, every, evaluated_after):
    """evaluate_fn runs after every `every`-th epoch but not after the last one (the caller
    evaluates the finished model itself); 0 never."""
    calls = []

    def evaluate(model):
        calls.append((trainer.step, model))
        return {"rank1": 0.25 * len(calls), "note": "not a number"}

    trainer = make_trainer(tmp_path, tiny_model_config, epochs=epochs, eval_every_epochs=every,
                           evaluate_fn=evaluate, checkpoint_every_steps=100)
    trainer.fit()
    assert trainer.step == 3 * epochs
    assert [step for step, _ in calls] == [3 * e for e in evaluated_after]
    assert all(model is trainer.embedding_model for _, model in calls)
    logged = [e for e in events(tmp_path) if e["event"] == "evaluated"]
    assert [(e["epoch"], e["step"], e["rank1"]) for e in logged] == [
        (e, 3 * e, 0.25 * (i + 1)) for i, e in enumerate(evaluated_after)]
    assert all("note" not in e for e in logged)  # only numbers go to the log


@pytest.fixture
def sigterm_fallback():
    """A harmless SIGTERM handler while the test runs (if the trainer failed to install its
    own, the signal must not kill pytest); the original one is put back afterwards."""
    received = []
    original = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, original)


def test_sigterm_saves_a_checkpoint_and_the_run_resumes_there(tmp_path, tiny_model_config,
                                                               sigterm_fallback):
    trainer = make_trainer(tmp_path, tiny_model_config, epochs=3, checkpoint_every_steps=100)
    train_step = trainer.train_step

    def step_then_sigterm(batch):  # SIGTERM to the main thread right after step 5
        out = train_step(batch)
        if trainer.step == 5:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
        return out

    trainer.train_step = step_then_sigterm
    fallback = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert sigterm_fallback == []  # the trainer's handler got it, not the fallback
    assert signal.getsignal(signal.SIGTERM) is fallback  # and put the previous one back
    assert trainer.step == 5
    # Saved on the signal: step 5 is neither an epoch end (3, 6) nor a periodic checkpoint.
    assert run_dir.latest_checkpoint(tmp_path).endswith("ckpt-5")
    assert [(e["event"], e["step"]) for e in events(tmp_path)] == [
        ("start", 0), ("checkpoint", 3), ("checkpoint", 5), ("interrupted", 5)]
    assert events(tmp_path)[-1]["checkpoint"].endswith("ckpt-5")
    at_signal = [w.numpy() for w in trainer.model.weights]

    resumed = make_trainer(tmp_path, tiny_model_config, epochs=3, checkpoint_every_steps=100)
    assert resumed.restore() == 5
    for a, w in zip(at_signal, resumed.model.weights):
        np.testing.assert_array_equal(w.numpy(), a, err_msg=w.path)
    resumed.fit()
    assert resumed.step == 9
    assert [(e["event"], e["step"]) for e in events(tmp_path)][4:] == [
        ("start", 5), ("checkpoint", 6), ("checkpoint", 9), ("finished", 9)]


def test_sigterm_during_an_evaluation_keeps_the_epoch_checkpoint(tmp_path, tiny_model_config,
                                                                   sigterm_fallback):
    """The epoch's end was just saved: the signal must not save the same step a second time."""
    def evaluate_then_sigterm(model):
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
        return {}

    trainer = make_trainer(tmp_path, tiny_model_config, epochs=3, eval_every_epochs=1,
                           evaluate_fn=evaluate_then_sigterm, checkpoint_every_steps=100)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert trainer.step == 3
    assert [(e["event"], e["step"]) for e in events(tmp_path)] == [
        ("start", 0), ("checkpoint", 3), ("interrupted", 3)]
    assert events(tmp_path)[-1]["checkpoint"].endswith("ckpt-3")


def sigterm_before_the_step(batch):
    signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
    raise AssertionError("the signal should have stopped the run before this line")


def test_sigterm_before_the_first_step_saves_step_0(tmp_path, tiny_model_config,
                                                    sigterm_fallback):
    """Nothing saved or restored yet: the signal saves the starting weights."""
    trainer = make_trainer(tmp_path, tiny_model_config, epochs=1, checkpoint_every_steps=100)
    trainer.train_step = sigterm_before_the_step
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert [(e["event"], e["step"]) for e in events(tmp_path)] == [
        ("start", 0), ("checkpoint", 0), ("interrupted", 0)]
    assert run_dir.latest_checkpoint(tmp_path).endswith("ckpt-0")


def test_sigterm_right_after_resuming_saves_nothing_new(tmp_path, tiny_model_config,
                                                        sigterm_fallback):
    make_trainer(tmp_path, tiny_model_config, epochs=1, checkpoint_every_steps=100).fit()
    resumed = make_trainer(tmp_path, tiny_model_config, epochs=2, checkpoint_every_steps=100)
    resumed.train_step = sigterm_before_the_step
    with pytest.raises(KeyboardInterrupt):
        resumed.fit()
    assert [(e["event"], e["step"]) for e in events(tmp_path)] == [
        ("start", 0), ("checkpoint", 3), ("finished", 3), ("start", 3), ("interrupted", 3)]
    assert events(tmp_path)[-1]["checkpoint"].endswith("ckpt-3")


@pytest.fixture
def float32_policy_afterwards():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_float16_step_with_loss_scaling(tmp_path, tiny_model_config,
                                              float32_policy_afterwards):
    """One step (8 images, batch 8, one epoch) in float32 and in mixed_float16 from the same
    initial weights: the float16 step runs through a LossScaleOptimizer, keeps float32
    variables, gives a finite loss and changes the weights by what float32 changes them (a
    loss scale left in the gradients would make the update 2^15 times larger)."""
    table = colour_table(identities=4, per_identity=2)
    updates, losses = {}, {}
    for policy in ("float32", "mixed_float16"):
        trainer = make_trainer(tmp_path / policy, tiny_model_config, epochs=1, table=table,
                               mixed_precision=policy)
        assert trainer.steps_per_epoch == 1
        before = [w.numpy().copy() for w in trainer.model.trainable_weights]
        metrics = trainer.fit()
        assert trainer.step == 1
        losses[policy] = metrics["loss"]
        updates[policy] = np.concatenate([(w.numpy() - b).ravel() for w, b in
                                          zip(trainer.model.trainable_weights, before)])
        if policy == "mixed_float16":
            assert keras.mixed_precision.global_policy().name == "mixed_float16"
            assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
            assert float(trainer.optimizer.dynamic_scale) == 2.0 ** 15  # no overflow, kept
            convs = [l for l in trainer.model._flatten_layers()
                     if isinstance(l, keras.layers.Conv2D)]
            assert convs and all(l.compute_dtype == "float16" for l in convs)
            assert all(w.dtype == "float32" for w in trainer.model.trainable_weights)
        else:
            assert not isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert math.isfinite(losses["mixed_float16"])
    assert losses["mixed_float16"] == pytest.approx(losses["float32"], rel=0.02)
    fp16, fp32 = updates["mixed_float16"], updates["float32"]
    assert np.isfinite(fp16).all() and np.count_nonzero(fp16) > 0.5 * fp16.size
    assert np.linalg.norm(fp16) == pytest.approx(np.linalg.norm(fp32), rel=0.1)
    assert fp16 @ fp32 > 0.95 * np.linalg.norm(fp16) * np.linalg.norm(fp32)  # same direction


# Runs `python -m jlml_tf.train` and SIGKILLs itself right after step 5's summaries (steps
# 1..5 done, checkpoints at 2, 3 (epoch end) and 4): a deterministic point with lost work.
_KILLED_AFTER_STEP_5 = """
import os, signal, sys
from jlml_tf import train
from jlml_tf.training import trainer

write_scalars = trainer.Trainer._write_scalars

def write_then_die(self, values):
    write_scalars(self, values)
    if self.step == 5:
        os.kill(os.getpid(), signal.SIGKILL)

trainer.Trainer._write_scalars = write_then_die
sys.argv[0] = "train"
sys.exit(train.main())
"""


def _train_args(run):
    return [f"--flagfile={PROJECT_ROOT}/tests/tiny.cfg", f"--run_dir={run}", "--epochs=3",
            "--checkpoint_every_steps=2", "--log_every_steps=5", "--mixed_precision=float32"]


@pytest.mark.slow
def test_sigkill_then_restart_resumes_from_checkpoint(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "JLML_DATA_DIR": str(tmp_path / "data")}
    killed = subprocess.run([sys.executable, "-c", _KILLED_AFTER_STEP_5, *_train_args(run)],
                            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert run_dir.latest_checkpoint(run).endswith("ckpt-4")
    assert [(e["event"], e["step"]) for e in events(run)] == [
        ("start", 0), ("checkpoint", 2), ("checkpoint", 3), ("checkpoint", 4)]
    assert not (run / "results.json").exists()

    done = subprocess.run([sys.executable, "-m", "jlml_tf.train", *_train_args(run)],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ckpt-4 at step 4/9" in done.stdout  # "Resumed from RUN/checkpoints/ckpt-4 at ..."
    logged = events(run)
    assert [(e["event"], e["step"]) for e in logged][4:] == [
        ("start", 4), ("checkpoint", 6), ("checkpoint", 8), ("checkpoint", 9), ("finished", 9)]
    # the killed segment's hours count up to its last checkpoint
    kept = (logged[3]["time"] - logged[0]["time"]) + (logged[-1]["time"] - logged[4]["time"])
    assert run_dir.training_hours(run) == pytest.approx(kept / 3600)
    assert (run / "results.json").is_file()


def one_step_per_weight(tmp_path, cfg, table, name, weights, **train_kwargs):
    """One step per value of the TrainConfig field `name`, each from the same initial weights
    on the same first batch: ({weight: the step's metrics}, {weight: the stem kernel after})."""
    steps, stems = {}, {}
    for weight in weights:
        trainer = make_trainer(tmp_path / str(weight), cfg, epochs=1, table=table,
                               **{name: weight}, **train_kwargs)
        batch = next(iter(trainer._dataset(0, 0)))
        steps[weight] = {k: float(v) for k, v in trainer.train_step(batch).items()}
        stems[weight] = trainer.model.get_layer("stem_conv").kernel.numpy()
    return steps, stems


def test_triplet_term_is_weighted_into_the_loss_and_trains_the_backbone(tmp_path,
                                                                        tiny_model_config):
    """Same weights, same batch: the step's loss grows by exactly weight x the triplet term it
    reports, the cross-entropy terms are unchanged, and the update of the shared stem differs
    (the triplet gradient reaches the backbone, not only the heads)."""
    steps, stems = one_step_per_weight(
        tmp_path, tiny_model_config, colour_table(identities=4, per_identity=2),
        "triplet_weight", (0.0, 2.0), sampler="pk", images_per_identity=2,
        triplet_margin=50.0)  # every hinge active on these easy colours
    assert "triplet" not in steps[0.0] and steps[2.0]["triplet"] > 0
    assert steps[2.0]["ce_global"] == pytest.approx(steps[0.0]["ce_global"], rel=1e-5)
    assert steps[2.0]["loss"] == pytest.approx(steps[0.0]["loss"] + 2.0 * steps[2.0]["triplet"],
                                               rel=1e-5)
    assert not np.allclose(stems[0.0], stems[2.0])


def test_triplet_takes_camera_pairs_whose_groups_hold_the_positives(tmp_path,
                                                                    tiny_model_config):
    table = colour_table()
    table = ImageTable(table.images, table.pids, np.arange(len(table)) % 2, table.filenames)
    grouped = dataclasses.replace(tiny_model_config, batch_norm_group_size=4)
    trainer = make_trainer(tmp_path / "a", grouped, table=table, sampler="camera_pairs",
                           cameras_per_batch=2, triplet_weight=1.0, triplet_margin=50.0)
    assert float(trainer.train_step(next(iter(trainer._dataset(0, 0))))["triplet"]) > 0


@pytest.mark.parametrize("batch, sampler, cameras, k, replicas, accepted", [
    (32, "camera_pairs", 2, 1, 1, True), (32, "camera_pairs", 4, 1, 2, True),
    (32, "camera_pairs", 2, 1, 2, False),  # a replica's share is one camera: no positive
    (48, "camera_pairs", 3, 1, 2, False),  # shares cut a group: half its people lack one
    (32, "camera_pairs", 4, 1, 4, False),  # one group per share again
    (4, "camera_pairs", 4, 1, 1, False),  # groups of one person: no negative
    (8, "pk", 1, 2, 1, True), (8, "pk", 1, 3, 1, False),  # 8 is not whole identities of 3
    (8, "pk", 1, 4, 2, False),  # one identity per share: no negative
    (32, "camera", 2, 1, 1, False)])  # two images of a person only by chance
def test_triplets_need_two_whole_blocks_in_every_replicas_share(batch, sampler, cameras, k,
                                                                 replicas, accepted):
    fake = types.SimpleNamespace(
        train_cfg=TrainConfig(batch_size=batch, sampler=sampler, cameras_per_batch=cameras,
                              images_per_identity=k, triplet_weight=1.0),
        strategy=types.SimpleNamespace(num_replicas_in_sync=replicas))
    if accepted:
        Trainer._check_triplet_batches(fake)
    else:
        with pytest.raises(ValueError, match=f"--triplet_weight .*--sampler={sampler}"):
            Trainer._check_triplet_batches(fake)


def test_per_camera_batch_norm_trains_and_needs_matching_camera_groups(tmp_path,
                                                                        tiny_model_config):
    table = colour_table()
    table = ImageTable(table.images, table.pids, np.arange(len(table)) % 2, table.filenames)
    grouped = dataclasses.replace(tiny_model_config, batch_norm_group_size=4)
    with pytest.raises(ValueError, match="groups of 4 images needs --sampler=camera"):
        make_trainer(tmp_path / "a", grouped, table=table, sampler="camera")  # 1 camera/batch
    trainer = make_trainer(tmp_path / "b", grouped, epochs=1, table=table, sampler="camera",
                           cameras_per_batch=2)
    norms = [l for l in trainer.model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert norms and {getattr(l, "group_size", 0) for l in norms} == {4}
    batch = next(iter(trainer._dataset(0, 0)))
    first = float(trainer.train_step(batch)["loss"])
    for _ in range(15):
        last = float(trainer.train_step(batch)["loss"])
    assert last < 0.7 * first
    # camera_pairs: the same identities in both groups, each group one camera
    pairs = make_trainer(tmp_path / "c", grouped, epochs=1, table=table, sampler="camera_pairs",
                         cameras_per_batch=2)
    _, labels = next(iter(pairs._dataset(0, 0)))
    labels = np.asarray(labels).reshape(2, 4)
    np.testing.assert_array_equal(labels[0], labels[1])
    assert len(set(labels[0])) == 4
