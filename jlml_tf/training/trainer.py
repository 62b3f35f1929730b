"""The custom JLML training loop: multi-loss cross-entropy plus SFL penalties, under tf.distribute.

Everything (model, optimiser, checkpoint) is built inside the strategy's scope, so the default
strategy on one CPU and MirroredStrategy on several GPUs run the same code. The data position is
a function of the optimiser's step alone (epoch = step // steps_per_epoch, shuffling seeded by
(seed, epoch)), so a restarted run continues exactly where its last checkpoint left off.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import signal
import time
from typing import Callable

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from jlml_tf.inference import run_dir as run_dir_lib
from jlml_tf.training import (distill, distribute, losses, mixup, optimization, precision,
                              warm_start)
from jlml_tf.config import ModelConfig, SparsityConfig
from jlml_tf.data import pipeline
from jlml_tf.data.types import ImageTable
from jlml_tf.modeling import jlml

class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 32  # global batch, split across replicas
    seed: int = 0
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    triplet_weight: float = 0.0  # batch-hard triplet loss on the features (0: the paper's losses only)
    triplet_margin: float = 0.3  # 0: soft margin
    distill_weight: float = 0.0  # weight of the LOMO + XQDA distillation term (needs a teacher)
    distill_loss: str = distill.DEFAULT_LOSS  # a distill.LOSSES name
    distill_temperature: float = distill.NEIGHBOUR_TEMPERATURE  # the neighbours loss's
    mixup_alpha: float = 0.0  # images blended with a partner, lambda ~ Beta(alpha, alpha); 0: off
    checkpoint_every_steps: int = 500
    keep_checkpoints: int = 3
    log_every_steps: int = 20
    eval_every_epochs: int = 0  # 0: evaluate only after the last epoch
    mixed_precision: str = "float32"
    jit_compile: bool = False
    sampler: str = "random"  # a pipeline.SAMPLERS name
    images_per_identity: int = 4
    cameras_per_batch: int = 1  # pipeline.CAMERA_SAMPLERS: groups of one camera per batch
    cache_decoded: bool = True
    init_from: str | None = None  # a run or checkpoint to copy feature weights from
    init_classifiers: bool = False  # copy its identity classifiers too (same identities)
    verbose: int = 1


class Trainer:
    """Trains one model on one training set and writes checkpoints and logs to `run_dir`.

    `fit()` runs the whole resumable loop. `train_step(batch)` is one optimiser step on a global
    batch `(images [B, H, W, 3] float32 in 0..255, labels [B] int32)` under the trainer's
    strategy (multi-loss cross-entropy, SFL penalties, weight decay), returning scalar tensors
    {"loss", "weight_decay", "ce_<head>", "acc_<head>" (with mixup, on the label of each
    blend's larger share), SFL terms, "triplet" when `triplet_weight` is set, "distill" when
    `distill_weight` is}; benchmarks time it directly.
    `teacher` (a distill.LomoTeacher) is needed when `distill_weight` is set.
    """

    def __init__(self, run_dir: str | os.PathLike, model_cfg: ModelConfig, sparsity: SparsityConfig,
                 opt_cfg: optimization.OptimizerConfig, train_cfg: TrainConfig,
                 augment: "pipeline.AugmentConfig", table: ImageTable, labels: np.ndarray,
                 strategy: tf.distribute.Strategy | None = None,
                 evaluate_fn: Callable[[keras.Model], dict] | None = None,
                 teacher: "distill.LomoTeacher | None" = None):
        self.run_dir = pathlib.Path(run_dir)
        self.model_cfg, self.sparsity, self.train_cfg = model_cfg, sparsity, train_cfg
        self.augment, self.table, self.labels = augment, table, np.asarray(labels)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.evaluate_fn = evaluate_fn
        self.teacher = teacher if train_cfg.distill_weight else None
        if train_cfg.distill_weight and teacher is None:
            raise ValueError("distill_weight is set but no LOMO teacher was given")
        self.chief = distribute.is_chief(self.strategy)
        self._check_triplet_batches()
        self._check_distill_batches()
        self._check_camera_groups()
        self._check_mixup()
        self.steps_per_epoch = self._steps_per_epoch()
        self.total_steps = self.steps_per_epoch * train_cfg.epochs
        opt_cfg = dataclasses.replace(opt_cfg, total_steps=self.total_steps)
        precision.set_policy(train_cfg.mixed_precision)
        keras.utils.set_random_seed(train_cfg.seed)  # initial weights (Python, NumPy, TF seeds)
        with self.strategy.scope():
            self.model, self.embedding_model = jlml.build_jlml(model_cfg)
            optimizer = optimization.make_optimizer(opt_cfg)
            if train_cfg.mixed_precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            # Built now, not at the first step, so a restore finds every slot variable.
            self.optimizer.build(self.model.trainable_variables)
            self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self._checkpoint_dir(), max_to_keep=train_cfg.keep_checkpoints)
        self._saved = (None, None)  # (step, path) of the checkpoint this process last wrote or read
        self.writer = tf.summary.create_file_writer(
            os.fspath(self.run_dir / run_dir_lib.TENSORBOARD_DIR)) if self.chief else tf.summary.create_noop_writer()
        self.train_step = self._make_train_step()

    # -- set-up ---------------------------------------------------------------------------
    def _check_triplet_batches(self) -> None:
        """Triplets are mined within each replica's slice of the batch. A block holds each of
        its identities once: one person's K images (pk) or one camera group (camera_pairs,
        whose groups hold the same people); every slice must hold two or more whole blocks
        (positives) of two or more images (negatives)."""
        cfg = self.train_cfg
        if not cfg.triplet_weight:
            return
        if cfg.sampler not in pipeline.IDENTITY_SAMPLERS:
            raise ValueError(f"--triplet_weight needs positives in every batch: --sampler="
                             f"{' or '.join(pipeline.IDENTITY_SAMPLERS)}, not "
                             f"--sampler={cfg.sampler}")
        replicas = self.strategy.num_replicas_in_sync
        pairs = cfg.sampler == "camera_pairs"
        block = cfg.batch_size // cfg.cameras_per_batch if pairs else cfg.images_per_identity
        per_replica = cfg.batch_size // replicas
        if block < 2 or per_replica % block or per_replica // block < 2:
            need = (f"--cameras_per_batch ({cfg.cameras_per_batch}) to be a multiple of the "
                    "replicas and at least twice their number, with camera groups of two or more "
                    "images" if pairs else f"--images_per_identity ({block}) of 2 or more and "
                    "two or more whole identities in each replica's share")
            raise ValueError(f"--triplet_weight with --sampler={cfg.sampler} and "
                             f"--batch_size={cfg.batch_size} over {replicas} replicas needs {need}")

    def _check_distill_batches(self) -> None:
        """The distillation term compares the pairs within each replica's share of the batch:
        it needs three images there, and with camera groups two groups (cross-camera pairs)."""
        cfg = self.train_cfg
        if not self.teacher:
            return
        per_replica = cfg.batch_size // self.strategy.num_replicas_in_sync
        groups = per_replica // (cfg.batch_size // cfg.cameras_per_batch) \
            if cfg.sampler in pipeline.CAMERA_SAMPLERS else per_replica
        if per_replica < 3 or groups < 2:
            grouped = f" and two camera groups (--sampler={cfg.sampler}, --cameras_per_batch=" \
                f"{cfg.cameras_per_batch})" if cfg.sampler in pipeline.CAMERA_SAMPLERS else ""
            raise ValueError(
                f"distillation needs at least 3 images per replica (--batch_size="
                f"{cfg.batch_size} over {self.strategy.num_replicas_in_sync} replicas){grouped}")

    def _check_camera_groups(self) -> None:
        """Per-camera batch norm normalises groups within each replica's slice of the batch:
        the groups the sampler builds must be the layers' groups, whole in every slice."""
        group = self.model_cfg.batch_norm_group_size
        if not group:
            return
        cfg = self.train_cfg
        per_replica = cfg.batch_size // self.strategy.num_replicas_in_sync
        if cfg.sampler not in pipeline.CAMERA_SAMPLERS \
                or cfg.batch_size // cfg.cameras_per_batch != group or per_replica % group:
            raise ValueError(
                f"batch norm over groups of {group} images needs "
                f"--sampler={' or '.join(pipeline.CAMERA_SAMPLERS)} with --batch_size / "
                f"--cameras_per_batch = {group} and a per-replica batch (--batch_size="
                f"{cfg.batch_size} over {self.strategy.num_replicas_in_sync} replicas) of whole "
                "groups")

    def _mixup_group(self) -> int:
        """Partners are drawn within groups that cross neither a camera group of the camera
        sampler nor a replica's share of the batch."""
        cfg = self.train_cfg
        per_replica = cfg.batch_size // self.strategy.num_replicas_in_sync
        if cfg.sampler in pipeline.CAMERA_SAMPLERS:
            return math.gcd(cfg.batch_size // cfg.cameras_per_batch, per_replica)
        return per_replica

    def _check_mixup(self) -> None:
        cfg = self.train_cfg
        if not cfg.mixup_alpha:
            return
        problem = mixup.problem(cfg.triplet_weight, self.teacher.folds if self.teacher else 1,
                                cfg.jit_compile)
        if problem:
            raise ValueError(f"--mixup_alpha={cfg.mixup_alpha}: {problem}")
        if self._mixup_group() < 2:
            raise ValueError(
                f"--mixup_alpha={cfg.mixup_alpha}: partners are drawn within a replica's share "
                f"of one camera group, here of {self._mixup_group()} image (--batch_size="
                f"{cfg.batch_size}, --cameras_per_batch={cfg.cameras_per_batch}, "
                f"{self.strategy.num_replicas_in_sync} replicas): raise --batch_size")

    def _checkpoint_dir(self) -> str:
        if self.chief:
            return os.fspath(self.run_dir / run_dir_lib.CHECKPOINT_DIR)
        # Non-chief workers must write too (collective ops) but to a throw-away place.
        return os.fspath(self._scratch_dir() / run_dir_lib.CHECKPOINT_DIR)

    def _scratch_dir(self) -> pathlib.Path:
        """A non-chief worker's throw-away directory, deleted after every save."""
        return self.run_dir / f"tmp_worker{self.strategy.cluster_resolver.task_id}"

    def _steps_per_epoch(self) -> int:
        steps = pipeline.steps_per_epoch(len(self.labels), self.train_cfg.batch_size)
        if steps < 1:
            raise ValueError(f"--batch_size={self.train_cfg.batch_size} is larger than the "
                             f"{len(self.labels)} training images")
        return steps

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def _dataset(self, epoch: int, skip_batches: int) -> tf.data.Dataset:
        cfg = self.train_cfg
        ds = pipeline.train_dataset(
            self.table, self.labels, self.model_cfg.input_height, self.model_cfg.input_width,
            cfg.batch_size, seed=cfg.seed, epoch=epoch, augment=self.augment,
            sampler=cfg.sampler, images_per_identity=cfg.images_per_identity,
            cache_decoded=cfg.cache_decoded, cameras_per_batch=cfg.cameras_per_batch)
        ds = ds.take(self.steps_per_epoch)
        if skip_batches:
            ds = ds.skip(skip_batches)
        return self.strategy.experimental_distribute_dataset(ds)

    # -- the step ---------------------------------------------------------------------------
    def _make_train_step(self):
        model, optimizer, strategy = self.model, self.optimizer, self.strategy
        sparsity, feature_dim = self.sparsity, self.model_cfg.feature_dim
        global_batch = self.train_cfg.batch_size
        weight_decay, smoothing = self.train_cfg.weight_decay, self.train_cfg.label_smoothing
        triplet_weight, margin = self.train_cfg.triplet_weight, self.train_cfg.triplet_margin
        teacher, distill_weight = self.teacher, self.train_cfg.distill_weight
        distill_loss = distill.make_loss(self.train_cfg.distill_loss,
                                         self.train_cfg.distill_temperature)
        forward = jlml.with_features(model, embedding=teacher is not None) \
            if triplet_weight or teacher is not None else None
        alpha, seed = self.train_cfg.mixup_alpha, self.train_cfg.seed
        mixup_group = self._mixup_group() if alpha else 0

        def replica_step(images, labels):
            replicas = tf.cast(strategy.num_replicas_in_sync, tf.float32)
            triplet = distilled = blend = None
            if alpha:
                key = mixup.step_key(seed, optimizer.iterations,
                                     tf.distribute.get_replica_context().replica_id_in_sync_group)
                images, partners, weights = mixup.mix(images, labels, alpha, key, mixup_group)
                blend = (partners, weights)
            with tf.GradientTape() as tape:
                if forward is None:
                    logits = model(images, training=True)
                else:
                    outputs = forward(images, training=True)
                    logits = outputs["logits"]
                if triplet_weight:
                    triplet = tf.nn.compute_average_loss(
                        losses.batch_hard_triplet(outputs["features"], labels, margin),
                        global_batch_size=global_batch)
                if teacher is not None:
                    # a mean over this replica's pairs: each replica adds 1/replicas
                    embedding = tf.math.l2_normalize(tf.cast(outputs["embedding"], tf.float32),
                                                     axis=1)
                    taught = teacher.distances(images, labels)
                    distilled = distill_loss(embedding, taught) / replicas
                per_example = losses.per_example_cross_entropy(labels, logits, smoothing, blend)
                ce = {k: tf.nn.compute_average_loss(v, global_batch_size=global_batch)
                      for k, v in per_example.items()}
                penalties = losses.sparsity_penalties(model, sparsity, feature_dim)
                decay = losses.weight_decay(model, weight_decay)
                # Model-level terms: each replica adds 1/replicas so the all-reduce sums to 1x.
                regulariser = (tf.add_n(list(penalties.values()) + [decay])) / replicas
                loss = tf.add_n(list(ce.values())) + regulariser
                if triplet is not None:
                    loss += triplet_weight * triplet
                if distilled is not None:
                    loss += distill_weight * distilled
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            out = {"loss": loss, "weight_decay": decay / replicas}
            if triplet is not None:
                out["triplet"] = triplet
            if distilled is not None:
                out["distill"] = distilled
            # a blend is counted right on the label of its larger share
            top = labels if blend is None else tf.where(blend[1] >= 0.5, labels, blend[0])
            for name, value in ce.items():
                out[f"ce_{name}"] = value
                correct = tf.cast(tf.equal(tf.argmax(logits[name], -1, output_type=tf.int32),
                                           tf.cast(top, tf.int32)), tf.float32)
                out[f"acc_{name}"] = tf.reduce_sum(correct) / global_batch
            out.update({k: v / replicas for k, v in penalties.items()})
            return out

        def step(batch):
            per_replica = strategy.run(replica_step, args=batch)
            return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                    for k, v in per_replica.items()}

        return tf.function(step, jit_compile=self.train_cfg.jit_compile or None)

    # -- the loop ---------------------------------------------------------------------------
    def restore(self) -> int:
        # Every worker resumes from the chief's checkpoints (a non-chief keeps none of its own),
        # so all replicas start from the same weights and step. Workers share the run directory.
        latest = self.manager.latest_checkpoint if self.chief else \
            run_dir_lib.latest_checkpoint(self.run_dir)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            self._saved = (self.step, latest)
            if self.chief and self.train_cfg.verbose:
                print(f"Resumed from {latest} at step {self.step}/{self.total_steps}")
        elif self.train_cfg.init_from:
            with self.strategy.scope():
                copied = warm_start.copy_feature_weights(self.train_cfg.init_from, self.model,
                                                         self.model_cfg,
                                                         self.train_cfg.init_classifiers)
            self._log_event("init_from", source=self.train_cfg.init_from, tensors=copied)
            if self.chief and self.train_cfg.verbose:
                print(f"Initialised {copied} weight tensors from {self.train_cfg.init_from}")
        return self.step

    def save(self) -> str:
        if not all(bool(tf.reduce_all(tf.math.is_finite(w))) for w in self.model.trainable_weights):
            self._diverged({"loss": float("nan"), "weights": "not finite"})
        path = self.manager.save(checkpoint_number=self.step)
        # Logged so that a killed run's hours still count up to its last kept step.
        self._log_event("checkpoint", step=self.step)
        if not self.chief:
            tf.io.gfile.rmtree(os.fspath(self._scratch_dir()))
        self._saved = (self.step, path)  # last: a signal inside save() saves again
        return path

    def fit(self) -> dict:
        """Trains to `epochs` (resuming if a checkpoint exists); returns the last metrics."""
        start = self.restore()
        self._log_event("start", step=start, total_steps=self.total_steps)
        previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
        metrics: dict = {}
        try:
            for epoch in range(start // self.steps_per_epoch, self.train_cfg.epochs):
                metrics = self._run_epoch(epoch, skip=self.step - epoch * self.steps_per_epoch)
                self.save()
                if self._should_evaluate(epoch):
                    metrics.update(self._evaluate(epoch))
        except KeyboardInterrupt:
            # Just after a save (an epoch's end before an evaluation, or a resume): keep that one.
            step, path = self._saved
            if step != self.step:
                path = self.save()
            self._log_event("interrupted", step=self.step, checkpoint=path)
            logging.warning("Interrupted at step %d; checkpoint %s. Run the same command to "
                            "resume.", self.step, path)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        self._log_event("finished", step=self.step)
        return metrics

    def _run_epoch(self, epoch: int, skip: int) -> dict:
        cfg = self.train_cfg
        names = ["loss"] + [f"acc_{h}" for h in self.model.output] + ["img/s"]
        bar = keras.utils.Progbar(self.steps_per_epoch, stateful_metrics=names,
                                  verbose=cfg.verbose if self.chief else 0, unit_name="step")
        if cfg.verbose and self.chief:
            print(f"Epoch {epoch + 1}/{cfg.epochs}")
        bar.update(skip)
        values, tick = {}, time.perf_counter()
        for index, batch in enumerate(self._dataset(epoch, skip), start=skip + 1):
            values = {k: float(v) for k, v in self.train_step(batch).items()}
            if not math.isfinite(values["loss"]):
                self._diverged(values)
            now = time.perf_counter()
            values["img/s"] = cfg.batch_size / max(now - tick, 1e-9)
            tick = now
            bar.update(index, [(k, values[k]) for k in names if k in values])
            if self.step % cfg.log_every_steps == 0:
                self._write_scalars(values)
            # fit() saves at the epoch's end, so the periodic save skips the last step.
            if self.step % cfg.checkpoint_every_steps == 0 and index < self.steps_per_epoch:
                self.save()
        return values

    def _diverged(self, values: dict) -> None:
        latest = self.manager.latest_checkpoint or "none (no checkpoint was written yet)"
        self._log_event("diverged", step=self.step, values=values)
        raise TrainingDivergedError(
            f"loss became {values['loss']} at step {self.step} ({values}); stopped without "
            f"saving. Last good checkpoint: {latest}. Try a lower --learning_rate, more "
            "--warmup_epochs or --clipnorm.")

    def _write_scalars(self, values: dict) -> None:
        lr = self.optimizer.learning_rate
        with self.writer.as_default(step=self.step):
            for name, value in values.items():
                tf.summary.scalar(f"train/{name.replace('/', '_per_')}", value)
            tf.summary.scalar("train/learning_rate", float(lr.numpy() if hasattr(lr, "numpy") else lr))

    def _should_evaluate(self, epoch: int) -> bool:
        every = self.train_cfg.eval_every_epochs
        return self.evaluate_fn is not None and every > 0 and (epoch + 1) % every == 0 \
            and epoch + 1 < self.train_cfg.epochs

    def _evaluate(self, epoch: int) -> dict:
        results = self.evaluate_fn(self.embedding_model)
        with self.writer.as_default(step=self.step):
            for name, value in results.items():
                if isinstance(value, (int, float)):
                    tf.summary.scalar(f"eval/{name}", value)
        self._log_event("evaluated", step=self.step, epoch=epoch + 1,
                        **{k: v for k, v in results.items() if isinstance(v, (int, float))})
        return results

    def _log_event(self, event: str, **fields) -> None:
        """One JSON line per event in RUN/train_log.jsonl: a record that survives SIGKILL."""
        if not self.chief:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / run_dir_lib.TRAIN_LOG, "a") as f:
            f.write(json.dumps({"event": event, "time": time.time(), **fields}, default=str) + "\n")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()
