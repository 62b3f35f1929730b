"""Command-line flags of `python -m jlml_tf.train` and their conversion into configs.

Enumerated flags use absl's DEFINE_enum, so a bad value fails with the flag's name and the
allowed values; numeric ranges are checked by absl bounds and validators below.
"""
from __future__ import annotations

from absl import flags

import jlml_tf_datasets

from jlml_tf import cli, distribute, optimization, precision
from jlml_tf.config import BRANCHES, LOSS_MODES, ModelConfig, SparsityConfig
from jlml_tf.evaluation import metric_learning
from jlml_tf.trainer import TrainConfig

DATASETS = tuple(jlml_tf_datasets.MODULES)

FLAGS = flags.FLAGS

# Run and data.
flags.DEFINE_string("run_dir", None, "Run directory; a run restarted with the same one resumes. "
                    "Default: runs/<dataset>-<protocol>.")
flags.DEFINE_bool("overwrite", False, "Start afresh even if --run_dir holds another run.")
flags.DEFINE_enum("dataset", "synthetic", DATASETS, "Data set to train and evaluate on.")
flags.DEFINE_string("protocol", None, "Evaluation protocol of the data set (default: its first).")
flags.DEFINE_string("data_dir", None, "Where prepared data sets are cached (default ~/jlml_data "
                    "or $JLML_DATA_DIR).")
flags.DEFINE_string("manual_dir", None, "Where the downloaded release of --dataset lies.")
flags.DEFINE_list("dataset_option", [], "Extra key=value options for the data set loader.")
flags.DEFINE_list("extra_train", [], "More training sets, as name:protocol[:manual_dir], whose "
                  "training identities join the training set with disjoint labels.")
flags.DEFINE_list("trials", ["all"], "Trials (splits) to run: 'all' or indices like 0,1,2.")

# Model.
flags.DEFINE_integer("input_height", 224, "Input image height.", lower_bound=16)
flags.DEFINE_integer("input_width", 96, "Input image width.", lower_bound=16)
flags.DEFINE_integer("num_stripes", 4, "m, local body stripes.", lower_bound=1, upper_bound=10)
flags.DEFINE_bool("shared_stem", True, "Share the low-level layers between the branches.")
flags.DEFINE_enum("branches", "both", BRANCHES, "Branches to build (single-branch ablations).")
flags.DEFINE_enum("loss_mode", "multi", LOSS_MODES, "multi: one loss per branch; uni: one "
                  "classifier on the concatenated feature (UniLoss ablation).")
flags.DEFINE_integer("stem_filters", 32, "Stem convolution width.", lower_bound=1)
flags.DEFINE_list("global_widths", ["32", "64", "128", "256"], "Global stage mid widths.")
flags.DEFINE_list("local_widths", ["8", "16", "32", "64"], "Local stream stage mid widths.")
flags.DEFINE_list("units_per_stage", ["3", "3", "3", "3"], "Residual units per stage.")
flags.DEFINE_list("stage_strides", ["1", "2", "2", "2"], "Stride of each stage.")
flags.DEFINE_integer("feature_dim", 512, "Feature size of each branch.", lower_bound=1)
flags.DEFINE_float("dropout", 0.0, "Dropout before the classifiers.", lower_bound=0.0, upper_bound=0.99)
flags.DEFINE_bool("feature_bn", False, "Batch norm on each branch's feature before its classifier "
                  "and in the embedding (BNNeck).")
flags.DEFINE_bool("sync_batch_norm", False, "Synchronise batch norm statistics across replicas.")
flags.DEFINE_bool("fused_batch_norm", True, "Train batch norm through the fused TF kernel (same "
                  "outputs, faster); --nofused_batch_norm uses Keras' plain layer.")

# Selective feature learning.
flags.DEFINE_float("global_group_lasso", 5e-4, "Group LASSO (l2,1) weight on the global "
                   "classifier; 0 turns it off.", lower_bound=0.0)
flags.DEFINE_integer("global_group_axis", 0, "Group axis of the global classifier kernel "
                     "(0: a feature's weights over all identities).", lower_bound=0, upper_bound=1)
flags.DEFINE_float("local_exclusive_lasso", 1e-6, "Exclusive group LASSO weight on the local "
                   "classifier; 0 turns it off.", lower_bound=0.0)
flags.DEFINE_integer("local_group_axis", 1, "Group axis of the local classifier kernel "
                     "(1: an identity's weights over all features).", lower_bound=0, upper_bound=1)

# Optimisation.
flags.DEFINE_enum("optimizer", "sgd", optimization.OPTIMIZERS, "Optimiser.")
flags.DEFINE_float("learning_rate", 0.05, "Base learning rate.", lower_bound=0.0)
flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_bool("nesterov", True, "Nesterov momentum.")
flags.DEFINE_enum("lr_schedule", "step", optimization.SCHEDULES, "Decay after warm-up.")
flags.DEFINE_float("warmup_epochs", 0.0, "Linear warm-up length.", lower_bound=0.0)
flags.DEFINE_list("lr_decay_epochs", [], "Step schedule: epochs at which the rate decays.")
flags.DEFINE_float("lr_decay_factor", 0.1, "Step schedule: decay factor.", lower_bound=0.0)
flags.DEFINE_float("min_lr_ratio", 0.0, "Cosine schedule: final rate / base rate.", lower_bound=0.0)
flags.DEFINE_float("clipnorm", None, "Clip each gradient to this norm.", lower_bound=0.0)
flags.DEFINE_float("weight_decay", 5e-4, "L2 weight decay on kernels (separate from SFL).",
                   lower_bound=0.0)
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing.", lower_bound=0.0, upper_bound=1.0)

# Training.
flags.DEFINE_integer("epochs", 60, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 32, "Global batch size.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling and augmentation.")
flags.DEFINE_enum("sampler", "random", ("random", "pk"), "Batch sampler.")
flags.DEFINE_integer("images_per_identity", 4, "K of the P x K sampler.", lower_bound=1)
flags.DEFINE_bool("flip", True, "Random horizontal flip.")
flags.DEFINE_integer("pad", 10, "Pad-and-random-crop padding in pixels (0: off).", lower_bound=0)
flags.DEFINE_float("random_erasing", 0.5, "Random erasing probability (0: off).",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("checkpoint_every_steps", 500, "Checkpoint period.", lower_bound=1)
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.", lower_bound=1)
flags.DEFINE_integer("log_every_steps", 20, "TensorBoard period.", lower_bound=1)
flags.DEFINE_integer("eval_every_epochs", 0, "Evaluate every N epochs (0: at the end only).",
                     lower_bound=0)
flags.DEFINE_enum("mixed_precision", "auto", precision.CHOICES, "Numeric precision policy; "
                  "auto: the fastest correct one for the device (jlml_tf/precision.py).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step (about 3x slower on CPU).")
flags.DEFINE_enum("strategy", "default", distribute.STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_integer("cpu_devices", 1, "Logical CPU devices (for MirroredStrategy on a CPU).",
                     lower_bound=1)
flags.DEFINE_string("tpu", "", "TPU address for --strategy=tpu.")
flags.DEFINE_bool("cache_decoded", True, "Keep decoded training images in memory.")
flags.DEFINE_string("init_from", None, "Start from another run's weights (a run directory or "
                    "RUN/checkpoints/ckpt-N): every layer but the identity classifiers. Used "
                    "only when the run has no checkpoint of its own yet.")
flags.DEFINE_bool("init_classifiers", False, "With --init_from: copy the identity classifiers "
                  "too (a continuation on the same training identities).")

# Evaluation.
flags.DEFINE_enum("metric", "l2", metric_learning.METRIC_NAMES, "Matching metric: L2 on JLML features (the paper) "
                  "or a metric learned on the training split's features.")
flags.DEFINE_bool("flip_test", False, "Test-time flip: match the normalised sum of each "
                  "image's and its mirror's embeddings (two forward passes).")
flags.DEFINE_integer("eval_batch_size", 64, "Batch size for feature extraction.", lower_bound=1)


def _int_list(name: str) -> tuple[int, ...]:
    return tuple(int(v) for v in FLAGS[name].value)


def _positive_ints(values) -> bool:
    return bool(values) and all(v.strip().isdigit() and int(v) > 0 for v in values)


for _name in ("global_widths", "local_widths", "units_per_stage", "stage_strides"):
    flags.register_validator(_name, _positive_ints,
                             message=f"--{_name} must be comma-separated positive integers")
flags.register_multi_flags_validator(
    ["init_classifiers", "init_from"], lambda f: not f["init_classifiers"] or f["init_from"],
    message="--init_classifiers needs --init_from")


def model_config(num_classes: int = 2) -> ModelConfig:
    try:
        return ModelConfig(
            input_height=FLAGS.input_height, input_width=FLAGS.input_width,
            num_stripes=FLAGS.num_stripes, shared_stem=FLAGS.shared_stem,
            stem_filters=FLAGS.stem_filters, global_widths=_int_list("global_widths"),
            local_widths=_int_list("local_widths"), units_per_stage=_int_list("units_per_stage"),
            stage_strides=_int_list("stage_strides"), feature_dim=FLAGS.feature_dim,
            branches=FLAGS.branches, loss_mode=FLAGS.loss_mode, num_classes=num_classes,
            dropout=FLAGS.dropout, feature_bn=FLAGS.feature_bn, sync_batch_norm=FLAGS.sync_batch_norm,
            fused_batch_norm=FLAGS.fused_batch_norm)
    except ValueError as e:  # name the flag, not the dataclass field
        raise flags.ValidationError(str(e).replace("ModelConfig.", "--")) from None


def sparsity_config() -> SparsityConfig:
    return SparsityConfig(FLAGS.global_group_lasso, FLAGS.global_group_axis,
                          FLAGS.local_exclusive_lasso, FLAGS.local_group_axis)


def optimizer_config(steps_per_epoch: int) -> optimization.OptimizerConfig:
    try:
        decay_epochs = tuple(float(e) for e in FLAGS.lr_decay_epochs)
    except ValueError:
        raise flags.ValidationError(f"--lr_decay_epochs={FLAGS.lr_decay_epochs}: expected "
                                    "numbers") from None
    return optimization.OptimizerConfig(
        optimizer=FLAGS.optimizer, learning_rate=FLAGS.learning_rate, momentum=FLAGS.momentum,
        nesterov=FLAGS.nesterov, schedule=FLAGS.lr_schedule,
        warmup_steps=round(FLAGS.warmup_epochs * steps_per_epoch),
        decay_steps=tuple(round(e * steps_per_epoch) for e in decay_epochs),
        decay_factor=FLAGS.lr_decay_factor, min_lr_ratio=FLAGS.min_lr_ratio, clipnorm=FLAGS.clipnorm)


def train_config() -> TrainConfig:
    return TrainConfig(
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
        weight_decay=FLAGS.weight_decay, label_smoothing=FLAGS.label_smoothing,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps, keep_checkpoints=FLAGS.keep_checkpoints,
        log_every_steps=FLAGS.log_every_steps, eval_every_epochs=FLAGS.eval_every_epochs,
        mixed_precision=precision.resolve(FLAGS.mixed_precision, FLAGS.strategy),
        jit_compile=FLAGS.jit_compile,
        sampler=FLAGS.sampler, images_per_identity=FLAGS.images_per_identity,
        cache_decoded=FLAGS.cache_decoded, init_from=FLAGS.init_from,
        init_classifiers=FLAGS.init_classifiers)


def key_values(name: str) -> dict:
    """Parses a list flag of key=value items; numbers and booleans are converted."""
    try:
        return cli.key_values(FLAGS[name].value, name)
    except cli.UsageError as e:
        raise flags.ValidationError(str(e)) from None
