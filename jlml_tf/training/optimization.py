"""Optimisers and learning-rate schedules chosen by flag: SGD with momentum or Adam, with a
linear warm-up followed by constant, step or cosine decay."""
from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "step", "cosine")


@dataclasses.dataclass
class OptimizerConfig:
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    schedule: str = "step"
    warmup_steps: int = 0
    decay_steps: tuple[int, ...] = ()  # step schedule: multiply by decay_factor at each
    decay_factor: float = 0.1
    total_steps: int = 1  # cosine schedule: reaches min_lr_ratio x base here
    min_lr_ratio: float = 0.0
    clipnorm: float | None = None


@keras.saving.register_keras_serializable(package="jlml")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from base/warmup to base, then constant, step or cosine decay."""

    def __init__(self, base, schedule="constant", warmup_steps=0, decay_steps=(), decay_factor=0.1,
                 total_steps=1, min_lr_ratio=0.0):
        self.base = float(base)
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = tuple(int(s) for s in decay_steps)
        self.decay_factor = float(decay_factor)
        self.total_steps = max(int(total_steps), 1)
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        if self.schedule == "step":
            passed = tf.add_n([tf.cast(step >= s, tf.float32) for s in self.decay_steps] or [0.0])
            lr = self.base * tf.pow(self.decay_factor, passed)
        elif self.schedule == "cosine":
            span = float(max(self.total_steps - self.warmup_steps, 1))
            progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            cosine = 0.5 * (1.0 + tf.cos(math.pi * progress))
            lr = self.base * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)
        else:
            lr = tf.constant(self.base)
        if self.warmup_steps:
            warm = self.base * (step + 1.0) / self.warmup_steps
            lr = tf.where(step < self.warmup_steps, tf.minimum(warm, lr), lr)
        return lr

    def get_config(self):
        return {"base": self.base, "schedule": self.schedule, "warmup_steps": self.warmup_steps,
                "decay_steps": list(self.decay_steps), "decay_factor": self.decay_factor,
                "total_steps": self.total_steps, "min_lr_ratio": self.min_lr_ratio}


def make_schedule(cfg: OptimizerConfig) -> WarmupSchedule:
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"--lr_schedule={cfg.schedule!r}; expected one of {SCHEDULES}")
    return WarmupSchedule(cfg.learning_rate, cfg.schedule, cfg.warmup_steps, cfg.decay_steps,
                          cfg.decay_factor, cfg.total_steps, cfg.min_lr_ratio)


def make_optimizer(cfg: OptimizerConfig) -> keras.optimizers.Optimizer:
    schedule = make_schedule(cfg)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                    clipnorm=cfg.clipnorm)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(schedule, clipnorm=cfg.clipnorm)
    raise ValueError(f"--optimizer={cfg.optimizer!r}; expected one of {OPTIMIZERS}")
