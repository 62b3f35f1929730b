"""Learning-rate schedules (warm-up, constant, step, cosine) at chosen steps, the flags that set
them in steps, and the Trainer using them."""
import dataclasses
import math

from absl import flags
import keras
import numpy as np
import pytest

from jlml_tf import flags as jflags
from jlml_tf.training import optimization
from jlml_tf.config import SparsityConfig
from jlml_tf.data import pipeline
from jlml_tf.training.trainer import Trainer, TrainConfig

from test_trainer import colour_table


def lr_at(schedule, *steps):
    return [float(schedule(step)) for step in steps]


def schedule(**kwargs):
    return optimization.make_schedule(optimization.OptimizerConfig(**kwargs))


def test_constant_with_linear_warmup():
    s = schedule(learning_rate=0.1, schedule="constant", warmup_steps=4)
    # step s of the warm-up: base * (s + 1) / warmup_steps, reaching the base at its last step
    assert lr_at(s, 0, 1, 2, 3, 4, 5, 1000) == pytest.approx(
        [0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1], rel=1e-6)


def test_constant_without_warmup():
    s = schedule(learning_rate=0.3, schedule="constant")
    assert lr_at(s, 0, 7, 10 ** 6) == pytest.approx([0.3, 0.3, 0.3], rel=1e-6)


def test_step_decays_at_each_boundary():
    s = schedule(learning_rate=0.1, schedule="step", decay_steps=(10, 20), decay_factor=0.1)
    assert lr_at(s, 0, 9, 10, 19, 20, 5000) == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rel=1e-5)


def test_step_without_boundaries_is_constant():
    s = schedule(learning_rate=0.05, schedule="step", decay_steps=())
    assert lr_at(s, 0, 100) == pytest.approx([0.05, 0.05], rel=1e-6)


def test_step_with_warmup():
    s = schedule(learning_rate=0.1, schedule="step", warmup_steps=5, decay_steps=(8,),
                 decay_factor=0.5)
    assert lr_at(s, 0, 4, 5, 7, 8) == pytest.approx([0.02, 0.1, 0.1, 0.1, 0.05], rel=1e-6)


def test_cosine_from_base_to_floor():
    s = schedule(learning_rate=0.1, schedule="cosine", total_steps=100)
    quarter = 0.1 * 0.5 * (1 + math.cos(math.pi / 4))  # 0.0853553...
    assert lr_at(s, 0, 25, 50, 75, 100, 150) == pytest.approx(
        [0.1, quarter, 0.05, 0.1 - quarter, 0.0, 0.0], rel=1e-5, abs=1e-8)


def test_cosine_min_lr_ratio():
    s = schedule(learning_rate=0.1, schedule="cosine", total_steps=100, min_lr_ratio=0.1)
    # base * (ratio + (1 - ratio) * (1 + cos(pi * progress)) / 2)
    assert lr_at(s, 0, 50, 100, 101) == pytest.approx([0.1, 0.055, 0.01, 0.01], rel=1e-5)


def test_cosine_after_warmup_spans_the_remaining_steps():
    s = schedule(learning_rate=0.1, schedule="cosine", warmup_steps=10, total_steps=110)
    # warm-up 0.01 ... 0.1 over steps 0..9, then the cosine over steps 10..110
    assert lr_at(s, 0, 4, 9, 10, 60, 110) == pytest.approx(
        [0.01, 0.05, 0.1, 0.1, 0.05, 0.0], rel=1e-5, abs=1e-8)


def test_schedule_round_trips_through_its_config():
    s = schedule(learning_rate=0.2, schedule="cosine", warmup_steps=3, total_steps=40,
                 min_lr_ratio=0.05)
    copy = optimization.WarmupSchedule.from_config(s.get_config())
    steps = [0, 2, 3, 17, 40, 41]
    assert lr_at(copy, *steps) == lr_at(s, *steps)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert lr_at(restored, *steps) == lr_at(s, *steps)


def test_unknown_schedule_and_optimizer_are_rejected():
    with pytest.raises(ValueError, match="--lr_schedule='linear'"):
        schedule(schedule="linear")
    with pytest.raises(ValueError, match="--optimizer='rmsprop'"):
        optimization.make_optimizer(optimization.OptimizerConfig(optimizer="rmsprop"))


@pytest.mark.parametrize("name, cls", [("sgd", keras.optimizers.SGD),
                                       ("adam", keras.optimizers.Adam)])
def test_optimizer_follows_its_schedule(name, cls):
    opt = optimization.make_optimizer(optimization.OptimizerConfig(
        optimizer=name, learning_rate=0.1, schedule="step", warmup_steps=2, decay_steps=(4,)))
    assert isinstance(opt, cls)
    values = []
    for step in range(6):
        opt.iterations.assign(step)
        values.append(float(opt.learning_rate))
    assert values == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.01, 0.01], rel=1e-5)


@pytest.fixture
def parse_train_flags():
    import jlml_tf.train as train

    def _parse(*args):
        fv = train.define_flags()
        fv(["train", *args])
        return fv

    return _parse


def test_epoch_flags_become_steps(parse_train_flags):
    fv = parse_train_flags("--learning_rate=0.2", "--lr_schedule=step", "--warmup_epochs=1.5",
                           "--lr_decay_epochs=20,40.5", "--lr_decay_factor=0.5",
                           "--min_lr_ratio=0.1")
    cfg = jflags.optimizer_config(fv, steps_per_epoch=10)
    assert (cfg.learning_rate, cfg.schedule, cfg.decay_factor, cfg.min_lr_ratio) == \
        (0.2, "step", 0.5, 0.1)
    assert cfg.warmup_steps == 15 and cfg.decay_steps == (200, 405)
    assert lr_at(optimization.make_schedule(cfg), 0, 14, 199, 200, 405) == pytest.approx(
        [0.2 / 15, 0.2, 0.2, 0.1, 0.05], rel=1e-5)


def test_bad_decay_epochs_name_the_flag(parse_train_flags):
    fv = parse_train_flags("--lr_decay_epochs=10,x")
    with pytest.raises(flags.ValidationError, match="--lr_decay_epochs"):
        jflags.optimizer_config(fv, steps_per_epoch=10)


def _trainer(run_dir, model_cfg, opt_cfg, epochs, evaluate_fn=None, **train_kwargs):
    table = colour_table()  # 24 images: 3 steps of 8 per epoch
    train_cfg = TrainConfig(epochs=epochs, batch_size=8, seed=1, checkpoint_every_steps=100,
                            log_every_steps=100, verbose=0, **train_kwargs)
    return Trainer(run_dir, dataclasses.replace(model_cfg, num_classes=4), SparsityConfig(),
                   opt_cfg, train_cfg,
                   pipeline.AugmentConfig(flip=False, pad=0, erasing_probability=0.0),
                   table, table.pids - 1, evaluate_fn=evaluate_fn)


def test_trainer_cosine_ends_at_its_floor_on_the_last_step(tmp_path, tiny_model_config):
    """The Trainer sets total_steps = epochs x steps per epoch: the cosine reaches its floor
    exactly when training ends, not before or after."""
    opt_cfg = optimization.OptimizerConfig(learning_rate=0.04, schedule="cosine",
                                           min_lr_ratio=0.25, total_steps=1)
    trainer = _trainer(tmp_path, tiny_model_config, opt_cfg, epochs=2)
    assert trainer.total_steps == 6
    assert float(trainer.optimizer.learning_rate) == pytest.approx(0.04, rel=1e-6)
    trainer.fit()
    assert trainer.step == 6
    assert float(trainer.optimizer.learning_rate) == pytest.approx(0.01, rel=1e-5)
    trainer.optimizer.iterations.assign(3)  # half-way: base * (0.25 + 0.75 * 0.5)
    assert float(trainer.optimizer.learning_rate) == pytest.approx(0.025, rel=1e-5)


def test_trainer_updates_stop_when_the_step_schedule_reaches_zero(tmp_path, tiny_model_config):
    """A step schedule with factor 0 at step 3: the first epoch (steps 0-2) moves the weights,
    the second (steps 3-5) leaves every trainable weight exactly as it was."""
    opt_cfg = optimization.OptimizerConfig(learning_rate=0.05, momentum=0.0, nesterov=False,
                                           schedule="step", decay_steps=(3,), decay_factor=0.0)
    snapshots = []
    trainer = _trainer(tmp_path, tiny_model_config, opt_cfg, epochs=2, eval_every_epochs=1,
                       evaluate_fn=lambda model: snapshots.append(
                           [w.numpy().copy() for w in trainer.model.trainable_weights]) or {})
    initial = [w.numpy().copy() for w in trainer.model.trainable_weights]
    trainer.fit()
    after_first_epoch, = snapshots
    assert trainer.step == 6
    assert any(not np.array_equal(a, b) for a, b in zip(initial, after_first_epoch))
    for before, w in zip(after_first_epoch, trainer.model.trainable_weights):
        np.testing.assert_array_equal(w.numpy(), before, err_msg=w.path)
