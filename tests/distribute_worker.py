"""One Trainer under one tf.distribute strategy, in a fresh process (used by test_distribute.py).

Logical CPU devices and MultiWorkerMirroredStrategy must be set up before TensorFlow initialises,
so every configuration the test compares runs in its own interpreter:

    python tests/distribute_worker.py steps   --strategy=default|mirrored --cpu_devices=N ...
        runs --steps training steps on the first epoch's batches and writes the per-step losses
        (--distill_weight=W adds the distillation term with SmoothTeacher; one device also
        reports the first batch's term computed outside the step)
    python tests/distribute_worker.py fit     --strategy=multi_worker --epochs=E ... (TF_CONFIG set)
        runs Trainer.fit() (resuming if RUN/checkpoints holds a checkpoint) and reports the
        step it started from

Both write a JSON report (with a digest of the final weights) to --out. The data are
test_trainer.colour_table (24 images, 4 identities), the same in every process; the model comes
from --model (ModelConfig JSON).
"""
import argparse
import json
import os
import pathlib
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

TESTS = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS), str(TESTS.parent)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("steps", "fit"))
    parser.add_argument("--strategy", default="default")
    parser.add_argument("--cpu_devices", type=int, default=1)
    parser.add_argument("--model", required=True, help="ModelConfig as JSON")
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--checkpoint_every_steps", type=int, default=1000)
    parser.add_argument("--distill_weight", type=float, default=0.0,
                        help="the distillation term's weight, with SmoothTeacher (steps mode)")
    args = parser.parse_args()

    from jlml_tf.training import distribute  # imports TensorFlow, which is not initialised yet

    distribute.split_cpu(args.cpu_devices)  # before anything touches a device
    strategy = distribute.make_strategy(args.strategy)

    import tensorflow as tf
    from jlml_tf.training import optimization
    from jlml_tf.config import ModelConfig, SparsityConfig
    from jlml_tf.data import pipeline
    from jlml_tf.training.trainer import Trainer, TrainConfig
    from test_trainer import colour_table

    tf.config.experimental.enable_op_determinism()
    table = colour_table()
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=3,
                            checkpoint_every_steps=args.checkpoint_every_steps, log_every_steps=1,
                            verbose=0, distill_weight=args.distill_weight)
    teacher = SmoothTeacher() if args.distill_weight else None
    trainer = Trainer(args.run_dir, ModelConfig.from_dict(json.loads(args.model)), SparsityConfig(),
                      optimization.OptimizerConfig(learning_rate=0.05, schedule="constant"),
                      train_cfg, pipeline.AugmentConfig(flip=False, pad=0, erasing_probability=0.0),
                      table, table.pids - 1, strategy=strategy, teacher=teacher)
    report = {"replicas": strategy.num_replicas_in_sync, "chief": trainer.chief,
              "checkpoint_dir": trainer._checkpoint_dir()}
    if args.mode == "steps":
        if teacher is not None and strategy.num_replicas_in_sync == 1:
            report["distill_expected"] = expected_distill(trainer, teacher, parts=2)
        batches = iter(trainer._dataset(0, 0))
        report["losses"] = [{k: float(v) for k, v in trainer.train_step(next(batches)).items()}
                            for _ in range(args.steps)]
    else:
        restore = trainer.restore

        def recording_restore():  # the step fit() starts from, on every worker
            report["start_step"] = restore()
            return report["start_step"]

        trainer.restore = recording_restore
        trainer.fit()
    # Per-variable sums of squares: equal on every worker iff all replicas hold the same weights.
    report["weights"] = {v.path: float(tf.reduce_sum(tf.square(tf.cast(v, tf.float64))))
                         for v in trainer.model.weights}
    report["step"] = trainer.step
    report["total_steps"] = trainer.total_steps
    pathlib.Path(args.out).write_text(json.dumps(report, indent=1))


class SmoothTeacher:
    """A stand-in for a cross-fitted distill.LomoTeacher: two fixed projections of 8 x 8-pooled
    pixels, each image's row from the one its label's parity picks, so each replica's labels
    must go with its images. LOMO's float32 quantisation moves with graph rewrites
    (jlml_tf/features/lomo_graph.py), so two differently built graphs need not agree on it;
    this test is about the replicas' averaging."""

    def distances(self, images, labels):
        import tensorflow as tf
        from jlml_tf.training import distill
        pooled = tf.nn.avg_pool2d(images, 8, 8, "VALID")
        flat = tf.reshape(pooled, [tf.shape(images)[0], -1])
        rng = np.random.default_rng(0)
        per_map = [distill.normalised_distances(tf.matmul(flat, rng.normal(
            size=(flat.shape[1], 8)).astype(np.float32))) for _ in range(2)]
        odd = tf.equal(tf.math.floormod(tf.cast(labels, tf.int32), 2), 1)
        return tf.where(odd[:, None], per_map[1], per_map[0])


def expected_distill(trainer, teacher, parts: int) -> dict:
    """The first batch's distillation term computed outside the step, before it: over the whole
    batch (one replica) and as the mean over `parts` equal slices (what that many replicas with
    synchronised batch norm compute). It runs the model in training mode, so the batch-norm
    moving statistics (not used by the step's loss) move before the step."""
    import tensorflow as tf
    from jlml_tf.modeling import jlml
    from jlml_tf.training import distill

    forward = jlml.with_features(trainer.model, embedding=True)
    loss = distill.make_loss(trainer.train_cfg.distill_loss, trainer.train_cfg.distill_temperature)

    @tf.function
    def terms(images, labels):
        outputs = forward(images, training=True)
        embedding = tf.math.l2_normalize(tf.cast(outputs["embedding"], tf.float32), axis=1)
        slices = [loss(e, teacher.distances(i, lab)) for e, i, lab in
                  zip(tf.split(embedding, parts), tf.split(images, parts), tf.split(labels, parts))]
        return loss(embedding, teacher.distances(images, labels)), tf.add_n(slices) / parts

    whole, slices = terms(*next(iter(trainer._dataset(0, 0)))[:2])
    return {"whole": float(whole), "slices": float(slices)}


if __name__ == "__main__":
    main()
