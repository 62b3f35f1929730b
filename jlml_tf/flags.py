"""Command-line flags of `python -m jlml_tf.train` and their conversion into configs.

Like every command of the project, training parses its own FlagValues (`define_flags()`), so
commands and tests never share or clash over absl's global FLAGS.

Enumerated flags use absl's DEFINE_enum, so a bad value fails with the flag's name and the
allowed values; numeric ranges are checked by absl bounds and validators below.
"""
from __future__ import annotations

from absl import flags

import jlml_tf_datasets

from jlml_tf import cli
from jlml_tf.training import distill, distribute, mixup, optimization, precision
from jlml_tf.config import BRANCHES, LOSS_MODES, MIN_CAMERA_IMAGES, ModelConfig, SparsityConfig
from jlml_tf.data import pipeline
from jlml_tf.evaluation import metric_learning
from jlml_tf.training.trainer import TrainConfig

DATASETS = tuple(jlml_tf_datasets.MODULES)


def define_flags(fv: flags.FlagValues | None = None) -> flags.FlagValues:
    """The training command's flags on `fv` (a new FlagValues by default), with validators."""
    fv = flags.FlagValues() if fv is None else fv
    d = dict(flag_values=fv)
    # Run and data.
    flags.DEFINE_string("run_dir", None, "Run directory; a run restarted with the same one resumes. "
                        "Default: runs/<dataset>-<protocol>.", **d)
    flags.DEFINE_bool("overwrite", False, "Start afresh even if --run_dir holds another run.", **d)
    flags.DEFINE_enum("dataset", "synthetic", DATASETS, "Data set to train and evaluate on.", **d)
    flags.DEFINE_string("protocol", None, "Evaluation protocol of the data set (default: its first).",
                        **d)
    flags.DEFINE_string("data_dir", None, "Where prepared data sets are cached (default ~/jlml_data "
                        "or $JLML_DATA_DIR).", **d)
    flags.DEFINE_string("manual_dir", None, "Where the downloaded release of --dataset lies.", **d)
    flags.DEFINE_list("dataset_option", [], "Extra key=value options for the data set loader.", **d)
    flags.DEFINE_list("extra_train", [], "More training sets, as name:protocol[:manual_dir], whose "
                      "training identities join the training set with disjoint labels.", **d)
    flags.DEFINE_list("trials", ["all"], "Trials (splits) to run: 'all' or indices like 0,1,2.",
                      **d)

    # Model.
    flags.DEFINE_integer("input_height", 224, "Input image height.", lower_bound=16, **d)
    flags.DEFINE_integer("input_width", 96, "Input image width.", lower_bound=16, **d)
    flags.DEFINE_integer("num_stripes", 4, "m, local body stripes.", lower_bound=1, upper_bound=10,
                         **d)
    flags.DEFINE_bool("shared_stem", True, "Share the low-level layers between the branches.", **d)
    flags.DEFINE_enum("branches", "both", BRANCHES, "Branches to build (single-branch ablations).",
                      **d)
    flags.DEFINE_enum("loss_mode", "multi", LOSS_MODES, "multi: one loss per branch; uni: one "
                      "classifier on the concatenated feature (UniLoss ablation).", **d)
    flags.DEFINE_integer("stem_filters", 32, "Stem convolution width.", lower_bound=1, **d)
    flags.DEFINE_list("global_widths", ["32", "64", "128", "256"], "Global stage mid widths.", **d)
    flags.DEFINE_list("local_widths", ["8", "16", "32", "64"], "Local stream stage mid widths.",
                      **d)
    flags.DEFINE_list("units_per_stage", ["3", "3", "3", "3"], "Residual units per stage.", **d)
    flags.DEFINE_list("stage_strides", ["1", "2", "2", "2"], "Stride of each stage.", **d)
    flags.DEFINE_integer("feature_dim", 512, "Feature size of each branch.", lower_bound=1, **d)
    flags.DEFINE_float("dropout", 0.0, "Dropout before the classifiers.", lower_bound=0.0, upper_bound=0.99,
                       **d)
    flags.DEFINE_bool("feature_bn", False, "Batch norm on each branch's feature before its classifier "
                      "and in the embedding (BNNeck).", **d)
    flags.DEFINE_integer("ibn_stages", 0, "IBN-a in the first N stages of each branch: instance "
                         "norm on half the channels of each unit's first batch norm (Pan et al. "
                         "2018); 0: plain batch norm, as in the paper.", lower_bound=0, **d)
    flags.DEFINE_bool("sync_batch_norm", False, "Synchronise batch norm statistics across replicas.",
                      **d)
    flags.DEFINE_bool("fused_batch_norm", True, "Train batch norm through the fused TF kernel (same "
                      "outputs, faster); --nofused_batch_norm uses Keras' plain layer.", **d)

    # Selective feature learning.
    flags.DEFINE_float("global_group_lasso", 5e-4, "Group LASSO (l2,1) weight on the global "
                       "classifier; 0 turns it off.", lower_bound=0.0, **d)
    flags.DEFINE_integer("global_group_axis", 0, "Group axis of the global classifier kernel "
                         "(0: a feature's weights over all identities).", lower_bound=0, upper_bound=1,
                         **d)
    flags.DEFINE_float("local_exclusive_lasso", 1e-6, "Exclusive group LASSO weight on the local "
                       "classifier; 0 turns it off.", lower_bound=0.0, **d)
    flags.DEFINE_integer("local_group_axis", 1, "Group axis of the local classifier kernel "
                         "(1: an identity's weights over all features).", lower_bound=0, upper_bound=1,
                         **d)

    # Optimisation.
    flags.DEFINE_enum("optimizer", "sgd", optimization.OPTIMIZERS, "Optimiser.", **d)
    flags.DEFINE_float("learning_rate", 0.05, "Base learning rate.", lower_bound=0.0, **d)
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0.0, upper_bound=1.0, **d)
    flags.DEFINE_bool("nesterov", True, "Nesterov momentum.", **d)
    flags.DEFINE_enum("lr_schedule", "step", optimization.SCHEDULES, "Decay after warm-up.", **d)
    flags.DEFINE_float("warmup_epochs", 0.0, "Linear warm-up length.", lower_bound=0.0, **d)
    flags.DEFINE_list("lr_decay_epochs", [], "Step schedule: epochs at which the rate decays.", **d)
    flags.DEFINE_float("lr_decay_factor", 0.1, "Step schedule: decay factor.", lower_bound=0.0, **d)
    flags.DEFINE_float("min_lr_ratio", 0.0, "Cosine schedule: final rate / base rate.", lower_bound=0.0,
                       **d)
    flags.DEFINE_float("clipnorm", None, "Clip each gradient to this norm.", lower_bound=0.0, **d)
    flags.DEFINE_float("weight_decay", 5e-4, "L2 weight decay on kernels (separate from SFL).",
                       lower_bound=0.0, **d)
    flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing.", lower_bound=0.0, upper_bound=1.0,
                       **d)
    flags.DEFINE_float("triplet_weight", 0.0, "Weight of a batch-hard triplet loss on the branch "
                       "features, added to the paper's losses (0: off; needs --sampler=pk or "
                       "camera_pairs). "
                       "Triplets are mined within each replica's share of the batch.",
                       lower_bound=0.0, **d)
    flags.DEFINE_float("triplet_margin", 0.3, "Triplet margin (0: soft margin).", lower_bound=0.0,
                       **d)
    flags.DEFINE_float("distill_lomo_weight", 0.0, "Weight of a distillation term that teaches "
                       "the embedding's distances within each batch those of LOMO + XQDA "
                       "fitted on the training images (jlml_tf/training/distill.py; 0: off). "
                       "Test time is unchanged: the embedding by L2.", lower_bound=0.0, **d)
    flags.DEFINE_enum("distill_lomo_loss", distill.DEFAULT_LOSS, tuple(distill.LOSSES),
                      "The distillation term: distance (the batch's distance matrices matched, "
                      "RKD) or neighbours (each image's softmax over the batch, KL).", **d)
    flags.DEFINE_float("distill_lomo_temperature", distill.NEIGHBOUR_TEMPERATURE,
                       "The neighbours loss's softmax temperature, a fraction of the batch's "
                       "mean distance: lower weighs the nearest neighbours more.", **d)
    flags.DEFINE_integer("distill_lomo_folds", 1, "Cross-fitted teachers: the split's identities "
                         "dealt into this many folds (by --seed), one XQDA map fitted without "
                         "each, and each image's distances taught by the map that never saw its "
                         "identity (1: one map fitted on all of them).", lower_bound=1, **d)

    flags.DEFINE_float("mixup_alpha", 0.0, "Mixup inside the step: each image blended with "
                       "a random image of the same camera group and replica's share of the "
                       "batch, the weight ~ Beta(alpha, alpha), the labels blended alike; with "
                       "--distill_lomo_weight the teacher scores the blends "
                       "(jlml_tf/training/mixup.py; 0: off).", lower_bound=0.0, **d)

    # Training.
    flags.DEFINE_integer("epochs", 60, "Training epochs.", lower_bound=1, **d)
    flags.DEFINE_integer("batch_size", 32, "Global batch size.", lower_bound=1, **d)
    flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling and augmentation.", **d)
    flags.DEFINE_enum("sampler", "random", pipeline.SAMPLERS, "Batch sampler: random "
                      "images, P identities x K images (pk), each batch of one camera "
                      "(camera: batch norm trains on per-camera statistics, for evaluation's "
                      "--camera_bn), or --cameras_per_batch groups of distinct cameras that "
                      "show the same identities, one image each (camera_pairs: every image's "
                      "match from another camera is in its batch).", **d)
    flags.DEFINE_integer("images_per_identity", 4, "K of the P x K sampler.", lower_bound=1, **d)
    flags.DEFINE_integer("cameras_per_batch", 1, "With --sampler=camera or camera_pairs (which "
                         "needs at least 2, of distinct cameras): each batch is this many "
                         "groups of one camera, and every batch norm normalises each group on "
                         "its own while training (camera-based BN, Zhuang et al. 2020); must "
                         "divide --batch_size.", lower_bound=1, **d)
    flags.DEFINE_bool("flip", True, "Random horizontal flip.", **d)
    flags.DEFINE_integer("pad", 10, "Pad-and-random-crop padding in pixels (0: off).", lower_bound=0,
                         **d)
    flags.DEFINE_float("random_erasing", 0.5, "Random erasing probability (0: off).",
                       lower_bound=0.0, upper_bound=1.0, **d)
    flags.DEFINE_float("color_jitter", 0.0, "Colour jitter strength (0: off; what it does: "
                       "AugmentConfig.color_jitter).", lower_bound=0.0, upper_bound=0.99, **d)
    flags.DEFINE_integer("checkpoint_every_steps", 500, "Checkpoint period.", lower_bound=1, **d)
    flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.", lower_bound=1, **d)
    flags.DEFINE_integer("log_every_steps", 20, "TensorBoard period.", lower_bound=1, **d)
    flags.DEFINE_integer("eval_every_epochs", 0, "Evaluate every N epochs (0: at the end only).",
                         lower_bound=0, **d)
    flags.DEFINE_enum("mixed_precision", "auto", precision.CHOICES, "Numeric precision policy; "
                      "auto: the fastest correct one for the device (jlml_tf/training/precision.py).",
                      **d)
    flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step (about 3x slower on CPU).",
                      **d)
    flags.DEFINE_enum("strategy", "default", distribute.STRATEGIES, "tf.distribute strategy.", **d)
    flags.DEFINE_integer("cpu_devices", 1, "Logical CPU devices (for MirroredStrategy on a CPU).",
                         lower_bound=1, **d)
    flags.DEFINE_string("tpu", "", "TPU address for --strategy=tpu.", **d)
    flags.DEFINE_bool("cache_decoded", True, "Keep decoded training images in memory.", **d)
    flags.DEFINE_string("init_from", None, "Start from another run's weights (a run directory or "
                        "RUN/checkpoints/ckpt-N): every layer but the identity classifiers. Used "
                        "only when the run has no checkpoint of its own yet. RUN/trial_{trial:02d} "
                        "starts each trial from that trial's model of a per-split run.", **d)
    flags.DEFINE_bool("init_classifiers", False, "With --init_from: copy the identity classifiers "
                      "too (a continuation on the same training identities).", **d)

    # Evaluation.
    flags.DEFINE_enum("metric", "l2", metric_learning.METRIC_NAMES, "Matching metric: L2 on JLML features (the paper) "
                      "or a metric learned on the training split's features.", **d)
    flags.DEFINE_bool("flip_test", False, "Test-time flip: match the normalised sum of each "
                      "image's and its mirror's embeddings (two forward passes).", **d)
    flags.DEFINE_integer("eval_batch_size", 64, "Batch size for feature extraction.", lower_bound=1,
                         **d)
    for _name in ("global_widths", "local_widths", "units_per_stage", "stage_strides"):
        flags.register_validator(_name, _positive_ints,
                                 message=f"--{_name} must be comma-separated positive integers", flag_values=fv)
    flags.register_multi_flags_validator(
        ["ibn_stages", "units_per_stage"], lambda f: f["ibn_stages"] <= len(f["units_per_stage"]),
        message="--ibn_stages must not exceed the number of stages (--units_per_stage)",
        flag_values=fv)
    flags.register_multi_flags_validator(  # its other protocols hold the test identities
        ["dataset", "extra_train"],
        lambda f: f["dataset"] not in {extra_train_spec(s)[0] for s in f["extra_train"]},
        message="--extra_train must not name --dataset: every protocol of a data set holds "
        "its test identities", flag_values=fv)
    flags.register_multi_flags_validator(
        ["init_classifiers", "init_from"], lambda f: not f["init_classifiers"] or f["init_from"],
        message="--init_classifiers needs --init_from", flag_values=fv)
    flags.register_multi_flags_validator(  # a random batch rarely holds two images of a person
        ["triplet_weight", "sampler", "images_per_identity"],
        lambda f: not f["triplet_weight"] or f["sampler"] == "camera_pairs"
        or (f["sampler"] == "pk" and f["images_per_identity"] > 1),
        message="--triplet_weight needs positives in every batch: --sampler=camera_pairs, or "
                "--sampler=pk with --images_per_identity of 2 or more", flag_values=fv)
    flags.register_multi_flags_validator(  # the teacher would score the erased patch's noise
        ["distill_lomo_weight", "random_erasing"],
        lambda f: not f["distill_lomo_weight"] or not f["random_erasing"],
        message="--distill_lomo_weight needs --random_erasing=0: LOMO of an erased image "
                "histograms the patch's noise, so the teacher would rank occlusion, not the "
                "person", flag_values=fv)
    flags.register_multi_flags_validator(
        ["distill_lomo_temperature", "distill_lomo_loss"], _check_distill_temperature,
        flag_values=fv)
    flags.register_multi_flags_validator(
        ["mixup_alpha", "triplet_weight", "distill_lomo_weight", "distill_lomo_folds",
         "jit_compile"],
        _check_mixup, flag_values=fv)
    flags.register_multi_flags_validator(
        ["cameras_per_batch", "sampler", "batch_size", "sync_batch_norm"],
        lambda f: f["cameras_per_batch"] == 1 or (
            f["sampler"] in pipeline.CAMERA_SAMPLERS and not f["sync_batch_norm"]
            and f["batch_size"] % f["cameras_per_batch"] == 0
            and f["batch_size"] // f["cameras_per_batch"] >= MIN_CAMERA_IMAGES),
        message=f"--cameras_per_batch > 1 needs --sampler="
                f"{' or '.join(pipeline.CAMERA_SAMPLERS)}, no --sync_batch_norm (groups are per "
                f"replica) and must divide --batch_size into groups of at least "
                f"{MIN_CAMERA_IMAGES} images", flag_values=fv)
    flags.register_multi_flags_validator(["sampler", "cameras_per_batch"], _check_sampler,
                                         flag_values=fv)
    return fv


def _int_list(fv: flags.FlagValues, name: str) -> tuple[int, ...]:
    return tuple(int(v) for v in fv[name].value)


def _positive_ints(values) -> bool:
    return bool(values) and all(v.strip().isdigit() and int(v) > 0 for v in values)


def model_config(fv: flags.FlagValues, num_classes: int = 2) -> ModelConfig:
    try:
        return ModelConfig(
            input_height=fv.input_height, input_width=fv.input_width,
            num_stripes=fv.num_stripes, shared_stem=fv.shared_stem,
            stem_filters=fv.stem_filters, global_widths=_int_list(fv, "global_widths"),
            local_widths=_int_list(fv, "local_widths"), units_per_stage=_int_list(fv, "units_per_stage"),
            stage_strides=_int_list(fv, "stage_strides"), feature_dim=fv.feature_dim,
            branches=fv.branches, loss_mode=fv.loss_mode, num_classes=num_classes,
            dropout=fv.dropout, feature_bn=fv.feature_bn, sync_batch_norm=fv.sync_batch_norm,
            fused_batch_norm=fv.fused_batch_norm, ibn_stages=fv.ibn_stages,
            batch_norm_group_size=_camera_group_size(fv))
    except ValueError as e:  # name the flag, not the dataclass field
        raise flags.ValidationError(str(e).replace("ModelConfig.", "--")) from None


def _camera_group_size(fv: flags.FlagValues) -> int:
    """Images per one-camera group of a batch (0: batch norm over the whole batch)."""
    return fv.batch_size // fv.cameras_per_batch if fv.cameras_per_batch > 1 else 0


def sparsity_config(fv: flags.FlagValues) -> SparsityConfig:
    return SparsityConfig(fv.global_group_lasso, fv.global_group_axis,
                          fv.local_exclusive_lasso, fv.local_group_axis)


def optimizer_config(fv: flags.FlagValues, steps_per_epoch: int) -> optimization.OptimizerConfig:
    try:
        decay_epochs = tuple(float(e) for e in fv.lr_decay_epochs)
    except ValueError:
        raise flags.ValidationError(f"--lr_decay_epochs={fv.lr_decay_epochs}: expected "
                                    "numbers") from None
    return optimization.OptimizerConfig(
        optimizer=fv.optimizer, learning_rate=fv.learning_rate, momentum=fv.momentum,
        nesterov=fv.nesterov, schedule=fv.lr_schedule,
        warmup_steps=round(fv.warmup_epochs * steps_per_epoch),
        decay_steps=tuple(round(e * steps_per_epoch) for e in decay_epochs),
        decay_factor=fv.lr_decay_factor, min_lr_ratio=fv.min_lr_ratio, clipnorm=fv.clipnorm)


def _check_sampler(f: dict) -> bool:
    problem = pipeline.sampler_problem(f["sampler"], f["cameras_per_batch"])
    if problem:
        raise flags.ValidationError(problem)
    return True


def _check_mixup(f: dict) -> bool:
    folds = f["distill_lomo_folds"] if f["distill_lomo_weight"] else 1
    problem = f["mixup_alpha"] and mixup.problem(f["triplet_weight"], folds, f["jit_compile"])
    if problem:
        raise flags.ValidationError(f"--mixup_alpha={f['mixup_alpha']}: {problem}")
    return True


def _check_distill_temperature(f: dict) -> bool:
    problem = distill.temperature_problem(f["distill_lomo_loss"], f["distill_lomo_temperature"])
    if problem:
        raise flags.ValidationError(f"--distill_lomo_temperature={f['distill_lomo_temperature']} "
                                    f"with --distill_lomo_loss={f['distill_lomo_loss']}: {problem}")
    return True


def train_config(fv: flags.FlagValues) -> TrainConfig:
    return TrainConfig(
        epochs=fv.epochs, batch_size=fv.batch_size, seed=fv.seed,
        weight_decay=fv.weight_decay, label_smoothing=fv.label_smoothing,
        triplet_weight=fv.triplet_weight, triplet_margin=fv.triplet_margin,
        distill_weight=fv.distill_lomo_weight, distill_loss=fv.distill_lomo_loss,
        distill_temperature=fv.distill_lomo_temperature, mixup_alpha=fv.mixup_alpha,
        checkpoint_every_steps=fv.checkpoint_every_steps, keep_checkpoints=fv.keep_checkpoints,
        log_every_steps=fv.log_every_steps, eval_every_epochs=fv.eval_every_epochs,
        mixed_precision=precision.resolve(fv.mixed_precision, fv.strategy),
        jit_compile=fv.jit_compile,
        sampler=fv.sampler, images_per_identity=fv.images_per_identity,
        cameras_per_batch=fv.cameras_per_batch, cache_decoded=fv.cache_decoded,
        init_from=fv.init_from,
        init_classifiers=fv.init_classifiers)


extra_train_spec = cli.extra_train_spec  # also read back from config.json (run_dir)


def key_values(fv: flags.FlagValues, name: str) -> dict:
    """Parses a list flag of key=value items; numbers and booleans are converted."""
    try:
        return cli.key_values(fv[name].value, name)
    except cli.UsageError as e:
        raise flags.ValidationError(str(e)) from None
