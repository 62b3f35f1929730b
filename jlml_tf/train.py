"""Train and evaluate JLML on a data set under its protocol, over all its trials.

    python -m jlml_tf.train --flagfile=experiments/synthetic.cfg
    python -m jlml_tf.train --flagfile=experiments/market.cfg --manual_dir=~/Downloads

A protocol with several trials (splits) trains one model per trial in RUN/trial_NN/ and reports
mean and standard deviation. Rerunning the same command resumes: finished trials are kept and an
interrupted one continues from its last checkpoint.
"""
from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags, logging

from jlml_tf import distribute, eval_trial, paper, precision, run_dir as run_dir_lib, threshold
from jlml_tf import flags as jflags
from jlml_tf.config import ModelConfig
from jlml_tf.data import pipeline
from jlml_tf.data.types import ReidData, Trial, hold_out_identities, union_for_training
from jlml_tf.trainer import Trainer, TrainingDivergedError

FLAGS = flags.FLAGS
flags.DEFINE_integer("validation_ids", 0, "Training identities held out from training (seeded "
                     "by --seed) and listed in config.json, so `evaluate --calibrate_threshold` "
                     "can calibrate the no-match threshold on people the model never saw.",
                     lower_bound=0)
flags.DEFINE_string("paper_key", None, "Which of the paper's figures to print beside the results "
                    "(default dataset/protocol; see jlml_tf/paper.py).")


def load_data(name: str, protocol: str | None, manual_dir: str | None, options: dict) -> ReidData:
    import jlml_tf_datasets

    return jlml_tf_datasets.load(name, protocol=protocol, data_dir=FLAGS.data_dir,
                                 manual_dir=manual_dir, **options)


def extra_training_sets() -> list[tuple[ReidData, Trial]]:
    extras = []
    for spec in FLAGS.extra_train:
        name, _, rest = spec.partition(":")
        protocol, _, manual_dir = rest.partition(":")
        data = load_data(name, protocol or None, manual_dir or None, {})
        extras.append((data, data.trials[0]))
    return extras


def select_trials(data: ReidData) -> list[int]:
    if FLAGS.trials == ["all"]:
        return list(range(len(data.trials)))
    try:
        chosen = [int(t) for t in FLAGS.trials]
    except ValueError:
        raise flags.ValidationError(f"--trials={','.join(FLAGS.trials)}: expected 'all' or "
                                    "indices") from None
    bad = [t for t in chosen if not 0 <= t < len(data.trials)]
    if bad:
        raise flags.ValidationError(f"--trials: {bad} out of range; {data.name}/{data.protocol} "
                                    f"has {len(data.trials)} trials (0..{len(data.trials) - 1})")
    return chosen


def default_run_dir(data: ReidData) -> pathlib.Path:
    return pathlib.Path("runs") / f"{data.name}-{data.protocol}"


def check_same_run(trial_dir: pathlib.Path, model_cfg) -> None:
    """Refuses to resume a run directory that holds a different model."""
    path = trial_dir / run_dir_lib.CONFIG_FILE
    if not path.is_file() or FLAGS.overwrite:
        return
    # Through ModelConfig so fields added since the run was written take their defaults.
    old = ModelConfig.from_dict(json.loads(path.read_text())["model"]).to_dict()
    new = model_cfg.to_dict()
    diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
    if diff:
        raise flags.ValidationError(
            f"{trial_dir} holds a run with another model configuration {diff} (old, new); "
            "pass another --run_dir, or --overwrite to start afresh")


def train_trial(data: ReidData, trial: Trial, trial_dir: pathlib.Path, strategy) -> dict:
    try:
        trial, validation_pids = hold_out_identities(data, trial, FLAGS.validation_ids, FLAGS.seed)
    except ValueError as e:
        raise flags.ValidationError(f"--validation_ids={FLAGS.validation_ids}: {e}") from None
    table, labels, num_classes = union_for_training([(data, trial)] + extra_training_sets())
    model_cfg = jflags.model_config(num_classes)
    check_same_run(trial_dir, model_cfg)  # before reuse: a finished other model is refused too
    results_path = trial_dir / "results.json"
    if results_path.is_file() and not FLAGS.overwrite:
        print(f"{trial_dir} already finished; keeping its results")
        (summary,) = json.loads(results_path.read_text())["results"].values()
        return summary["trials"][0]
    if FLAGS.overwrite and trial_dir.exists():
        import shutil
        shutil.rmtree(trial_dir)
    train_cfg = jflags.train_config()
    steps_per_epoch = pipeline.steps_per_epoch(len(labels), train_cfg.batch_size)
    augment = pipeline.AugmentConfig(flip=FLAGS.flip, pad=FLAGS.pad,
                                     erasing_probability=FLAGS.random_erasing)
    run_dir_lib.write_config(trial_dir, model_cfg, train=flag_values(), data={
        "dataset": data.name, "protocol": data.protocol, "trial": trial.name,
        "train_images": len(labels), "train_identities": num_classes,
        "extra_train": FLAGS.extra_train, threshold.VALIDATION_KEY: validation_pids})
    evaluate = lambda model: eval_trial.evaluate_trial(  # noqa: E731
        model, data, trial, model_cfg, metric="l2", batch_size=FLAGS.eval_batch_size, verbose=0,
        flip=FLAGS.flip_test)
    trainer = Trainer(trial_dir, model_cfg, jflags.sparsity_config(),
                      jflags.optimizer_config(steps_per_epoch), train_cfg, augment, table, labels,
                      strategy=strategy, evaluate_fn=evaluate)
    trainer.fit()
    results = eval_trial.evaluate_trial(trainer.embedding_model, data, trial, model_cfg,
                                        metric=FLAGS.metric, batch_size=FLAGS.eval_batch_size,
                                        flip=FLAGS.flip_test)
    eval_trial.write_trial_report(trial_dir, results, data, trial)
    return results


def flag_values() -> dict:
    by_module = FLAGS.flags_by_module_dict()
    ours = [f for m in ("jlml_tf.flags", "jlml_tf.train", __name__) for f in by_module.get(m, [])]
    return {f.name: f.value for f in sorted(ours, key=lambda f: f.name)}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TFDS and checkpoint INFO lines drown the bar
    distribute.split_cpu(FLAGS.cpu_devices)
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.tpu)
    if FLAGS.mixed_precision == "auto":
        # Resolved once, here; config.json then records the policy that actually ran.
        FLAGS.mixed_precision = precision.resolve("auto", FLAGS.strategy)
        print(f"--mixed_precision=auto: {FLAGS.mixed_precision} on this machine")
    data = load_data(FLAGS.dataset, FLAGS.protocol, FLAGS.manual_dir, jflags.key_values("dataset_option"))
    run_dir = pathlib.Path(FLAGS.run_dir or default_run_dir(data))
    chosen = select_trials(data)
    print(f"{data.name}/{data.protocol}: {len(data.table)} images, trials {chosen} -> {run_dir}")
    per_trial = {}
    for index in chosen:
        trial = data.trials[index]
        trial_dir = run_dir if len(data.trials) == 1 else run_dir / f"trial_{index:02d}"
        per_trial[trial.name] = train_trial(data, trial, trial_dir, strategy)
    key = FLAGS.paper_key or f"{data.name}/{data.protocol}"
    summary = eval_trial.write_run_report(run_dir, per_trial, data, paper.reference(key), key)
    print(summary)


def run():
    try:
        app.run(main)
    except TrainingDivergedError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    run()
