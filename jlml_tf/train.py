"""Train and evaluate JLML on a data set under its protocol, over all its trials.

    python -m jlml_tf.train --flagfile=experiments/synthetic.cfg
    python -m jlml_tf.train --flagfile=experiments/market.cfg --manual_dir=~/Downloads

A protocol with several trials (splits) trains one model per trial in RUN/trial_NN/ and reports
mean and standard deviation. Rerunning the same command resumes: finished trials are kept and an
interrupted one continues from its last checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import sys

from absl import flags, logging

from jlml_tf import cli, paper
from jlml_tf.inference import eval_trial
from jlml_tf.inference import run_dir as run_dir_lib
from jlml_tf.inference import threshold
from jlml_tf import flags as jflags
from jlml_tf.config import ModelConfig
from jlml_tf.data import pipeline
from jlml_tf.data.types import (ReidData, Trial, hold_out_identities, keep_identity_fraction,
                                repeat_training, union_for_training)
from jlml_tf.training import distill, distribute, precision
from jlml_tf.training.trainer import Trainer, TrainingDivergedError


def define_flags() -> flags.FlagValues:
    fv = jflags.define_flags()
    d = dict(flag_values=fv)
    flags.DEFINE_integer("validation_ids", 0, "Training identities held out from training (seeded "
                         "by --seed) and listed in config.json, so `evaluate --calibrate_threshold` "
                         "can calibrate the no-match threshold on people the model never saw.",
                         lower_bound=0, **d)
    flags.DEFINE_float("identity_fraction", 1.0, "Train on this fraction of each training set's "
                       "identities (drawn by --seed; all their images), for data-scaling curves.",
                       upper_bound=1.0, **d)
    flags.register_validator("identity_fraction", lambda v: v > 0,
                             "--identity_fraction must be above 0", flag_values=fv)
    flags.DEFINE_integer("train_repeats", 1, "List --dataset's training images this many times "
                         "in each epoch: with --extra_train, a small target's share of the joined "
                         "training set grows this many times (an epoch grows too). Not with "
                         "--sampler=pk or camera_pairs, which draw identities, not images; with "
                         "--sampler=camera a camera's copies count towards its size.",
                         lower_bound=1, **d)
    flags.register_multi_flags_validator(
        ["train_repeats", "sampler"],
        lambda f: f["train_repeats"] == 1 or f["sampler"] not in pipeline.IDENTITY_SAMPLERS,
        message=f"--train_repeats has no effect with --sampler="
                f"{' or '.join(pipeline.IDENTITY_SAMPLERS)} (they draw identities, not images): "
                "weigh data sets with --sampler=random or camera",
        flag_values=fv)
    flags.DEFINE_string("paper_key", None, "Which of the paper's figures to print beside the "
                        "results (default dataset/protocol; see jlml_tf/paper.py).", **d)
    return fv


def load_data(name: str, protocol: str | None, data_dir: str | None, manual_dir: str | None,
              options: dict) -> ReidData:
    import jlml_tf_datasets

    return jlml_tf_datasets.load(name, protocol=protocol, data_dir=data_dir,
                                 manual_dir=manual_dir, **options)


def extra_training_sets(fv: flags.FlagValues) -> list[tuple[ReidData, Trial]]:
    extras = []
    for spec in fv.extra_train:
        name, protocol, manual_dir = jflags.extra_train_spec(spec)
        data = load_data(name, protocol, fv.data_dir, manual_dir, {})
        extras.append((data, data.trials[0]))
    return extras


def select_trials(fv: flags.FlagValues, data: ReidData) -> list[int]:
    if fv.trials == ["all"]:
        return list(range(len(data.trials)))
    try:
        chosen = [int(t) for t in fv.trials]
    except ValueError:
        raise flags.ValidationError(f"--trials={','.join(fv.trials)}: expected 'all' or "
                                    "indices") from None
    bad = [t for t in chosen if not 0 <= t < len(data.trials)]
    if bad:
        raise flags.ValidationError(f"--trials: {bad} out of range; {data.name}/{data.protocol} "
                                    f"has {len(data.trials)} trials (0..{len(data.trials) - 1})")
    return chosen


def default_run_dir(data: ReidData) -> pathlib.Path:
    return pathlib.Path("runs") / f"{data.name}-{data.protocol}"


# Flags a trial must keep when resumed or run again (the epoch's length, the distillation
# term, mixup), each with the value a config.json written before the flag existed implies: the
# distillation loss was the distance loss before it had a flag. Not checked yet: the other
# loss weights (triplet, label smoothing, SFL, weight decay).
RESUME_FIXED_FLAGS = {"train_repeats": 1, "distill_lomo_weight": 0.0,
                      "distill_lomo_loss": "distance",
                      "distill_lomo_temperature": distill.NEIGHBOUR_TEMPERATURE,
                      "distill_lomo_folds": 1, "mixup_alpha": 0.0}


def _counted(values: dict) -> dict:
    """RESUME_FIXED_FLAGS values that change training: the distillation loss and folds only
    with a weight, its temperature only for a loss that has one."""
    counted = dict(values)
    if not counted["distill_lomo_weight"]:
        del counted["distill_lomo_loss"], counted["distill_lomo_temperature"]
        del counted["distill_lomo_folds"]
    elif not distill.has_temperature(counted["distill_lomo_loss"]):
        del counted["distill_lomo_temperature"]
    return counted


def check_same_run(trial_dir: pathlib.Path, model_cfg, fv: flags.FlagValues) -> None:
    """Refuses to resume a run directory that holds a different model, whose epochs were
    another length (its schedule and data position count in them), or whose loss was another
    (RESUME_FIXED_FLAGS)."""
    path = trial_dir / run_dir_lib.CONFIG_FILE
    if not path.is_file() or fv.overwrite:
        return
    written = json.loads(path.read_text())
    # Through ModelConfig so fields added since the run was written take their defaults.
    old = ModelConfig.from_dict(written["model"]).to_dict()
    new = model_cfg.to_dict()
    diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
    if diff:
        raise flags.ValidationError(
            f"{trial_dir} holds a run with another model configuration {diff} (old, new); "
            "pass another --run_dir, or --overwrite to start afresh")
    recorded = written.get("train", {})
    before = _counted({name: recorded.get(name, legacy)
                       for name, legacy in RESUME_FIXED_FLAGS.items()})
    now = _counted({name: fv[name].value for name in RESUME_FIXED_FLAGS})
    changed = [f"--{name}={before[name]} (not {now[name]})" for name in before
               if name in now and before[name] != now[name]]
    if changed:
        raise flags.ValidationError(
            f"{trial_dir} holds a run trained with {' and '.join(changed)}; pass another "
            "--run_dir, or --overwrite to start afresh")


def init_source(init_from: str | None, index: int) -> str | None:
    """--init_from for trial `index`: a `{trial}` field in it (`RUN/trial_{trial:02d}`, the
    form of run_dir.TRIAL_DIR) becomes the trial's index, so each split fine-tunes its own
    split's model of an earlier per-split run."""
    if not init_from or "{" not in init_from:
        return init_from
    try:
        return init_from.format(trial=index)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as e:
        raise flags.ValidationError(
            f"--init_from={init_from}: the only field allowed is {{trial}} (say "
            f"{run_dir_lib.TRIAL_DIR}); write a literal brace as {{{{ or }}}} ({e!r})") from None


def check_init_sources(fv: flags.FlagValues, trial_dirs: dict[int, pathlib.Path]) -> None:
    """Before any trial trains: every trial that will start from a --init_from template has
    a checkpoint to start from (the template may name a split its source run never trained)."""
    if not fv.init_from or "{" not in fv.init_from:
        return
    for index, own in trial_dirs.items():
        started = (own / "results.json").is_file() or (own / run_dir_lib.CHECKPOINT_DIR).is_dir()
        if started and not fv.overwrite:
            continue  # finished or resuming: the source is not read
        source = init_source(fv.init_from, index)
        try:
            run_dir_lib.resolve_checkpoint(source)  # the rule warm_start loads by
        except FileNotFoundError as e:
            raise flags.ValidationError(f"--init_from={fv.init_from}: trial {index} would start "
                                        f"from {source}: {e}") from None


def train_trial(fv: flags.FlagValues, data: ReidData, index: int, trial_dir: pathlib.Path,
                strategy) -> dict:
    trial = data.trials[index]
    try:
        trial, validation_pids = hold_out_identities(data, trial, fv.validation_ids, fv.seed)
    except ValueError as e:
        raise flags.ValidationError(f"--validation_ids={fv.validation_ids}: {e}") from None
    joined = [(d, keep_identity_fraction(d, t, fv.identity_fraction, fv.seed))
              for d, t in [(data, trial)] + extra_training_sets(fv)]
    distinct_images = sum(len(t.train) for _, t in joined)
    # the teacher is the benchmark's LOMO + XQDA: fitted on the split's own images, each once
    teacher_set = union_for_training(joined[:1]) if fv.distill_lomo_weight else None
    joined[0] = (data, repeat_training(joined[0][1], fv.train_repeats))
    table, labels, num_classes = union_for_training(joined)
    model_cfg = jflags.model_config(fv, num_classes)
    # before reuse: a finished run of another model is refused too
    check_same_run(trial_dir, model_cfg, fv)
    results_path = trial_dir / "results.json"
    if results_path.is_file() and not fv.overwrite:
        print(f"{trial_dir} already finished; keeping its results")
        (summary,) = json.loads(results_path.read_text())["results"].values()
        return summary["trials"][0]
    if fv.overwrite and trial_dir.exists():
        import shutil
        shutil.rmtree(trial_dir)
    train_cfg = dataclasses.replace(jflags.train_config(fv),
                                    init_from=init_source(fv.init_from, index))
    steps_per_epoch = pipeline.steps_per_epoch(len(labels), train_cfg.batch_size)
    augment = pipeline.AugmentConfig(flip=fv.flip, pad=fv.pad,
                                     erasing_probability=fv.random_erasing,
                                     color_jitter=fv.color_jitter)
    teacher = lomo_teacher(trial_dir, model_cfg, *teacher_set[:2], folds=fv.distill_lomo_folds,
                           seed=fv.seed) if teacher_set else None
    # the source this trial starts from, not a {trial} template
    train_flags = dict(fv.flag_values_dict(), init_from=train_cfg.init_from)
    run_dir_lib.write_config(trial_dir, model_cfg, train=train_flags, data={
        "dataset": data.name, "protocol": data.protocol, "trial": trial.name,
        "train_images": distinct_images, "images_per_epoch": len(labels),
        "train_identities": num_classes, "extra_train": fv.extra_train,
        "train_repeats": fv.train_repeats,
        threshold.VALIDATION_KEY: validation_pids})
    evaluate = lambda model: eval_trial.evaluate_trial(  # noqa: E731
        model, data, trial, model_cfg, metric="l2", batch_size=fv.eval_batch_size, verbose=0,
        flip=fv.flip_test)
    trainer = Trainer(trial_dir, model_cfg, jflags.sparsity_config(fv),
                      jflags.optimizer_config(fv, steps_per_epoch), train_cfg, augment, table,
                      labels, strategy=strategy, evaluate_fn=evaluate, teacher=teacher)
    trainer.fit()
    deployed = deployed_embedding_model(trainer)
    results = eval_trial.evaluate_trial(deployed, data, trial, model_cfg,
                                        metric=fv.metric, batch_size=fv.eval_batch_size,
                                        flip=fv.flip_test)
    eval_trial.write_trial_report(trial_dir, results, data, trial)
    return results


def lomo_teacher(trial_dir: pathlib.Path, model_cfg, table, labels, folds: int = 1,
                 seed: int = 0) -> distill.LomoTeacher:
    """The run's LOMO + XQDA teacher (--distill_lomo_weight): fitted on the split's training
    images (not --extra_train's, whose images it only scores) at the model's input size, in
    `folds` cross-fitted maps (--distill_lomo_folds), and saved, or read back when the run
    resumes."""
    path = trial_dir / distill.TEACHER_FILE
    height, width = model_cfg.input_height, model_cfg.input_width
    source = distill.fingerprint(table.filenames, labels)
    try:
        if path.is_file():
            return distill.load(path, height, width, source, folds)
        print(f"Fitting the LOMO + XQDA teacher on {len(labels)} training images"
              f"{f' in {folds} folds' if folds > 1 else ''} ...")
        teacher = distill.fit(pipeline.decode_all(table, height, width), labels, source=source,
                              folds=folds, seed=seed)
    except ValueError as e:
        named = f" --distill_lomo_folds={folds}" if folds > 1 else ""
        raise flags.ValidationError(f"--distill_lomo_weight{named}: {e}") from None
    trial_dir.mkdir(parents=True, exist_ok=True)
    distill.save(teacher, path)
    dims = ", ".join(str(m.shape[1]) for m in teacher.matrices)
    print(f"  {dims} XQDA dimensions -> {path}")
    return teacher


def deployed_embedding_model(trainer: Trainer):
    """The trained weights in the model `evaluate` and the exports build (float32 whatever
    policy trained them), so the reported figure is the deployed model's."""
    training_model, embedding_model = run_dir_lib.build_deployed(trainer.model_cfg)
    training_model.set_weights(trainer.model.get_weights())
    return embedding_model


def run(fv: flags.FlagValues) -> str:
    """Trains and evaluates every chosen trial; returns the summary table printed."""
    logging.set_verbosity(logging.WARNING)  # TFDS and checkpoint INFO lines drown the bar
    distribute.split_cpu(fv.cpu_devices)
    strategy = distribute.make_strategy(fv.strategy, fv.tpu)
    if fv.mixed_precision == "auto":
        # Resolved once, here; config.json then records the policy that actually ran.
        fv.mixed_precision = precision.resolve("auto", fv.strategy)
        print(f"--mixed_precision=auto: {fv.mixed_precision} on this machine")
    data = load_data(fv.dataset, fv.protocol, fv.data_dir, fv.manual_dir,
                     jflags.key_values(fv, "dataset_option"))
    run_dir = pathlib.Path(fv.run_dir or default_run_dir(data))
    chosen = select_trials(fv, data)
    print(f"{data.name}/{data.protocol}: {len(data.table)} images, trials {chosen} -> {run_dir}")
    trial_dirs = {index: run_dir if len(data.trials) == 1 else run_dir_lib.trial_dir(run_dir, index)
                  for index in chosen}
    check_init_sources(fv, trial_dirs)
    per_trial = {}
    for index in chosen:
        per_trial[data.trials[index].name] = train_trial(fv, data, index, trial_dirs[index],
                                                         strategy)
    key = fv.paper_key or f"{data.name}/{data.protocol}"
    return eval_trial.write_run_report(run_dir, per_trial, data, paper.reference(key), key)


def main(argv=None) -> int:
    """Exit status: 0 done, 2 bad input, 3 training diverged."""
    try:
        return cli.run_main(define_flags, run, __doc__, argv)
    except TrainingDivergedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
