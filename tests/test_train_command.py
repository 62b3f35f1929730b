"""python -m jlml_tf.train in-process on the tiny synthetic data set: a finished trial is kept,
--overwrite trains afresh, a run of another model is refused, and --extra_train's specs and
label offsets."""
import dataclasses
import json
import os
import shutil

from absl import flags
import numpy as np
import pytest
import keras
import tensorflow as tf

import jlml_tf_datasets

import jlml_tf.evaluate as evaluate
import jlml_tf.train as train
from jlml_tf.data.types import ImageTable, ReidData, Trial, union_for_training

from conftest import PROJECT_ROOT



def _argv(data_dir, *args):
    return ["train", f"--flagfile={PROJECT_ROOT / 'tests' / 'tiny.cfg'}", f"--data_dir={data_dir}",
            "--epochs=1", "--mixed_precision=float32", *args]


def _parse(data_dir, *args):
    fv = train.define_flags()
    fv(_argv(data_dir, *args))
    return fv


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def test_tiny_cfg_builds_the_tests_tiny_model(tmp_path):
    """tests/tiny.cfg spells out run_fixtures.TINY as flags: the two must not drift apart."""
    from jlml_tf import flags as jflags
    import run_fixtures

    model = jflags.model_config(_parse(tmp_path), num_classes=5)
    assert {k: getattr(model, k) for k in run_fixtures.TINY} == run_fixtures.TINY


@pytest.fixture
def parse(data_dir):
    return lambda *args: _parse(data_dir, *args)


@pytest.fixture
def run_command(data_dir):
    """train.main on the tiny config with extra flags; returns its exit status."""
    return lambda *args: train.main(_argv(data_dir, *args))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir):
    """One finished run of the command (one epoch: 3 steps); tests work on copies of it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert train.main(_argv(data_dir, f"--run_dir={run}")) == 0
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    return run


def events(run):
    """train_log.jsonl's events without its per-checkpoint lines."""
    logged = [json.loads(line) for line in open(run / "train_log.jsonl")]
    return [e for e in logged if e["event"] != "checkpoint"]


def tiny_data(data_dir):
    return jlml_tf_datasets.load("synthetic", config="tiny", data_dir=str(data_dir))


@pytest.mark.slow  # trains the tiny model through the command
def test_finished_run_has_its_report(finished_run):
    assert [(e["event"], e["step"]) for e in events(finished_run)] == [("start", 0),
                                                                        ("finished", 3)]
    doc = json.loads((finished_run / "results.json").read_text())
    (trial,) = doc["results"]["JLML (this run)"]["trials"]
    assert 0.0 <= trial["rank1"] <= 1.0


@pytest.mark.slow  # trains the tiny model through the command
def test_finished_trial_is_not_trained_again(run_copy, parse, data_dir, monkeypatch, capsys):
    fv = parse(f"--run_dir={run_copy}")
    before = (events(run_copy), sorted(os.listdir(run_copy / "checkpoints")),
              (run_copy / "results.json").read_text())
    (run_copy / "marker").write_text("kept")
    monkeypatch.setattr(train, "Trainer", lambda *a, **k: pytest.fail("trained again"))
    data = tiny_data(data_dir)
    train.train_trial(fv, data, 0, run_copy, tf.distribute.get_strategy())
    assert f"{run_copy} already finished; keeping its results" in capsys.readouterr().out
    after = (events(run_copy), sorted(os.listdir(run_copy / "checkpoints")),
             (run_copy / "results.json").read_text())
    assert after == before and (run_copy / "marker").read_text() == "kept"


@pytest.mark.slow  # trains the tiny model through the command
def test_rerun_of_a_finished_run_reuses_its_results(run_copy, run_command, monkeypatch):
    before = json.loads((run_copy / "results.json").read_text())["results"]
    monkeypatch.setattr(train, "Trainer", lambda *a, **k: pytest.fail("trained again"))
    assert run_command(f"--run_dir={run_copy}") == 0
    after = json.loads((run_copy / "results.json").read_text())["results"]
    assert after == before


@pytest.mark.slow  # trains the tiny model through the command
def test_overwrite_trains_afresh(run_copy, run_command):
    first = events(run_copy)
    (run_copy / "marker").write_text("gone with --overwrite")
    assert run_command(f"--run_dir={run_copy}", "--overwrite") == 0
    assert not (run_copy / "marker").exists()  # the directory was emptied first
    again = events(run_copy)
    assert [(e["event"], e["step"]) for e in again] == [("start", 0), ("finished", 3)]
    assert again[0]["time"] > first[-1]["time"]
    assert (run_copy / "results.json").is_file()


@pytest.mark.slow  # trains the tiny model through the command
def test_another_model_is_refused_without_overwrite_and_replaces_with_it(run_copy, run_command,
                                                                         capsys):
    (run_copy / "results.json").unlink()  # an unfinished run: the model check applies
    assert run_command(f"--run_dir={run_copy}", "--feature_dim=8") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads((run_copy / "config.json").read_text())["model"]["feature_dim"] == 16
    assert run_command(f"--run_dir={run_copy}", "--feature_dim=8", "--overwrite") == 0
    assert json.loads((run_copy / "config.json").read_text())["model"]["feature_dim"] == 8
    assert [(e["event"], e["step"]) for e in events(run_copy)] == [("start", 0), ("finished", 3)]


def _compute_dtypes(model):
    layers, dtypes = list(model.layers), set()
    while layers:
        layer = layers.pop()
        layers.extend(getattr(layer, "layers", []))
        if layer.weights:
            dtypes.add(layer.compute_dtype)
    return dtypes


@pytest.mark.slow  # trains the tiny model through the command
def test_the_reported_evaluation_runs_float32_whatever_policy_trained(run_command, tmp_path,
                                                                      monkeypatch):
    seen = []
    evaluate_trial = train.eval_trial.evaluate_trial

    def recording(model, *args, **kwargs):
        seen.append(_compute_dtypes(model))
        return evaluate_trial(model, *args, **kwargs)

    monkeypatch.setattr(train.eval_trial, "evaluate_trial", recording)
    run = tmp_path / "run"
    try:
        assert run_command(f"--run_dir={run}", "--mixed_precision=mixed_bfloat16",
                           "--eval_every_epochs=1", "--epochs=2") == 0
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert seen[0] == {"bfloat16"}  # epoch 1 of 2: the training model as it is
    assert seen[-1] == {"float32"}  # results.json: the model export and evaluate load
    # ... with the trained weights: `evaluate` on the checkpoint reports the same figures
    monkeypatch.undo()
    assert evaluate.main(["evaluate", f"--run_dir={run}", f"--output_dir={tmp_path / 'eval'}",
                          "--suffix=check", "--verbose=0", "--num_queries_shown=0"]) == 0
    reported = json.loads((run / "results.json").read_text())["results"]
    evaluated = json.loads((tmp_path / "eval" / "results_check.json").read_text())["results"]
    (reported,), (evaluated,) = reported.values(), evaluated.values()
    for key in ("rank1", "rank5", "map"):
        assert reported["mean"][key] == pytest.approx(evaluated["mean"][key], abs=1e-6), key


def _fake_data(name, pids):
    pids = np.asarray(pids)
    n = len(pids)
    table = ImageTable(
        np.array([b"x"] * n, dtype=object), pids, np.ones(n), [f"{name}/{i}" for i in range(n)])
    trials = [Trial("first", np.arange(n), [], []), Trial("second", np.arange(n // 2), [], [])]
    return ReidData(name, "p", table, trials)


def test_extra_train_specs_are_name_protocol_manual_dir(parse, monkeypatch):
    loaded = []

    def load_data(name, protocol, data_dir, manual_dir, options):
        loaded.append((name, protocol, manual_dir, options))
        return _fake_data(name, [1, 1, 2])

    monkeypatch.setattr(train, "load_data", load_data)
    fv = parse("--extra_train=cuhk01:485_486_single_shot:/data/cuhk01,viper,grid::/d/grid,"
               "caviar4reid:train_all,market1501:default:/d/x:y")
    extras = train.extra_training_sets(fv)
    assert loaded == [("cuhk01", "485_486_single_shot", "/data/cuhk01", {}),
                      ("viper", None, None, {}), ("grid", None, "/d/grid", {}),
                      ("caviar4reid", "train_all", None, {}),
                      ("market1501", "default", "/d/x:y", {})]  # the rest is the folder
    assert [(data.name, trial.name) for data, trial in extras] == [
        ("cuhk01", "first"), ("viper", "first"), ("grid", "first"), ("caviar4reid", "first"),
        ("market1501", "first")]  # an extra set trains on its first trial
    assert train.extra_training_sets(parse()) == [] and len(loaded) == 5


def test_extra_train_labels_follow_the_main_set(parse, data_dir, monkeypatch, tmp_path):
    """train_trial with --extra_train: the extra set's identities get labels after the main
    set's, even where the pid numbers are the same; the model has a class for each."""
    main = tiny_data(data_dir)
    extra = _fake_data("extra", [5, 5, 1, 1, 9])  # pids 1 and 5 also exist in the main set
    monkeypatch.setattr(train, "load_data", lambda *args: extra)
    captured = {}

    class Stop(Exception):
        pass

    def trainer(run_dir, model_cfg, sparsity, opt_cfg, train_cfg, augment, table, labels,
                **kwargs):
        captured.update(model_cfg=model_cfg, table=table, labels=labels)
        raise Stop

    monkeypatch.setattr(train, "Trainer", trainer)
    fv = parse("--extra_train=extra:p", f"--run_dir={tmp_path / 'run'}")
    with pytest.raises(Stop):
        train.train_trial(fv, main, 0, tmp_path / "run", tf.distribute.get_strategy())
    n_main = len(main.trials[0].train)
    main_pids = main.table.pids[main.trials[0].train]
    labels, table = captured["labels"], captured["table"]
    assert len(labels) == len(table) == n_main + 5
    # main set: labels 0..5 in the order of its sorted pids; extra set: 6, 6, 7, 7, 8
    assert sorted(set(labels[:n_main].tolist())) == list(range(6))
    for pid, label in zip(main_pids, labels[:n_main]):
        assert label == sorted(set(main_pids.tolist())).index(pid)
    assert labels[n_main:].tolist() == [7, 7, 6, 6, 8]
    assert table.pids[n_main:].tolist() == [5, 5, 1, 1, 9]
    assert captured["model_cfg"].num_classes == 9
    data = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert (data["train_identities"], data["train_images"], data["extra_train"]) == \
        (9, n_main + 5, ["extra:p"])
    # the same offsets as union_for_training gives for the two sets
    _, expected, classes = union_for_training([(main, main.trials[0]), (extra, extra.trials[0])])
    assert classes == 9 and labels.tolist() == expected.tolist()
    # --train_repeats lists the main set's images that many times, the extra set's once
    fv = parse("--extra_train=extra:p", "--train_repeats=3", f"--run_dir={tmp_path / 'run3'}")
    with pytest.raises(Stop):
        train.train_trial(fv, main, 0, tmp_path / "run3", tf.distribute.get_strategy())
    assert captured["labels"].tolist() == labels[:n_main].tolist() * 3 + [7, 7, 6, 6, 8]
    assert captured["model_cfg"].num_classes == 9
    data = json.loads((tmp_path / "run3" / "config.json").read_text())["data"]
    assert (data["train_images"], data["images_per_epoch"], data["train_repeats"]) == \
        (n_main + 5, 3 * n_main + 5, 3)
    # resuming it with another epoch length is refused; P x K sampling ignores repeats
    fv = parse("--extra_train=extra:p", "--train_repeats=2", f"--run_dir={tmp_path / 'run3'}")
    with pytest.raises(flags.ValidationError, match=r"--train_repeats=3 \(not 2\)"):
        train.train_trial(fv, main, 0, tmp_path / "run3", tf.distribute.get_strategy())
    for sampler, cameras in (("pk", 1), ("camera_pairs", 2)):
        with pytest.raises(flags.IllegalFlagValueError, match="--train_repeats has no effect"):
            parse("--train_repeats=2", f"--sampler={sampler}", f"--cameras_per_batch={cameras}",
                  "--batch_size=16")


def test_camera_pairs_needs_two_cameras_per_batch(parse):
    with pytest.raises(flags.IllegalFlagValueError, match="camera_pairs sampler needs --cameras_per_batch"):
        parse("--sampler=camera_pairs")
    fv = parse("--sampler=camera_pairs", "--cameras_per_batch=2", "--batch_size=16")
    assert fv.cameras_per_batch == 2


def test_identity_fraction_trains_on_part_of_each_sets_identities(parse, data_dir, monkeypatch,
                                                                  tmp_path):
    main = tiny_data(data_dir)
    extra = _fake_data("extra", [1, 1, 2, 2, 3, 3, 4, 4])
    monkeypatch.setattr(train, "load_data", lambda *args: extra)
    captured = {}

    class Stop(Exception):
        pass

    def trainer(run_dir, model_cfg, sparsity, opt_cfg, train_cfg, augment, table, labels,
                **kwargs):
        captured.update(model_cfg=model_cfg, table=table)
        raise Stop

    monkeypatch.setattr(train, "Trainer", trainer)
    fv = parse("--extra_train=extra:p", "--identity_fraction=0.5", f"--run_dir={tmp_path / 'run'}")
    with pytest.raises(Stop):
        train.train_trial(fv, main, 0, tmp_path / "run", tf.distribute.get_strategy())
    main_ids = len(set(main.table.pids[main.trials[0].train].tolist()))
    assert captured["model_cfg"].num_classes == round(main_ids / 2) + 2
    main_pids = main.table.pids[main.trials[0].train]
    kept_main = captured["table"].pids[:-4]
    assert len(set(kept_main.tolist())) == round(main_ids / 2)
    assert len(kept_main) == np.isin(main_pids, kept_main).sum()  # every image of a kept id
    extra_pids = captured["table"].pids[-4:].tolist()
    assert len(set(extra_pids)) == 2 and sorted(extra_pids)[::2] == sorted(set(extra_pids))
    with pytest.raises(flags.IllegalFlagValueError, match="identity_fraction"):
        parse("--identity_fraction=0")


@pytest.mark.parametrize("init_from,want", [
    ("runs/joint/trial_{trial:02d}", "runs/joint/trial_07"),
    ("runs/joint/trial_{trial}", "runs/joint/trial_7"),
    ("runs/pretrain", "runs/pretrain"),
    (None, None)])
def test_init_from_names_each_trials_own_source(init_from, want):
    assert train.init_source(init_from, 7) == want


@pytest.mark.parametrize("init_from", ["runs/x/trial_{split}", "runs/x/trial_{trial:q}",
                                       "runs/x/trial_{trial[0]}", "runs/x/trial_{trial.real.x}",
                                       "runs/x/trial_{}"])
def test_init_from_with_a_bad_trial_field_is_refused(init_from):
    with pytest.raises(flags.ValidationError, match=r"--init_from=.*only field allowed"):
        train.init_source(init_from, 0)


def test_each_trial_starts_from_its_own_source_and_records_it(parse, data_dir, tmp_path,
                                                              monkeypatch):
    """train_trial hands the trial's own source, not the template, to the trainer and to
    config.json."""
    run = tmp_path / "run"
    fv = parse(f"--run_dir={run}", "--init_from=runs/joint/trial_{trial:02d}")
    seen = []

    def trainer(trial_dir, model_cfg, sparsity, opt_cfg, train_cfg, *args, **kwargs):
        seen.append(train_cfg.init_from)
        raise KeyboardInterrupt  # stop before any training

    monkeypatch.setattr(train, "Trainer", trainer)
    with pytest.raises(KeyboardInterrupt):
        train.train_trial(fv, tiny_data(data_dir), 0, run, tf.distribute.get_strategy())
    assert seen == ["runs/joint/trial_00"]
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["init_from"] == "runs/joint/trial_00"


def test_a_trial_without_its_source_is_refused_before_any_training(parse, tmp_path):
    checkpoints = tmp_path / "joint/trial_00/checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints.parent / "config.json").write_text("{}")
    (checkpoints / "ckpt-1.index").write_text("")
    (checkpoints / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    (tmp_path / "ft/trial_02").mkdir(parents=True)
    (tmp_path / "ft/trial_02/results.json").write_text("{}")  # finished: its source unread
    fv = parse(f"--init_from={tmp_path}/joint/trial_{{trial:02d}}")
    dirs = {i: tmp_path / f"ft/trial_{i:02d}" for i in (0, 1, 2)}
    with pytest.raises(flags.ValidationError, match=r"trial 1 would start from .*joint/trial_01"):
        train.check_init_sources(fv, dirs)
    train.check_init_sources(fv, {0: dirs[0], 2: dirs[2]})  # both fine


def test_lomo_teacher_is_fitted_on_distinct_images_once_and_read_back(parse, data_dir,
                                                                      monkeypatch, tmp_path):
    """--distill_lomo_weight: the teacher is fitted on each of the split's training images once
    (not on --train_repeats' copies, nor on --extra_train's images) at the model's input size,
    saved in the trial directory, read back when the trial resumes, and recorded in
    config.json."""
    from jlml_tf.training import distill

    main = tiny_data(data_dir)
    fitted, captured = [], {}

    def fit(images, labels, source, folds, seed):
        fitted.append((images.shape, labels.tolist(), folds, seed))
        return distill.LomoTeacher([np.ones((lomo_dim, 2), np.float32)],
                                   distill.lomo_config(64, 32), source)

    class Stop(Exception):
        pass

    def trainer(*args, teacher=None, **kwargs):
        captured["teacher"] = teacher
        raise Stop

    from jlml_tf.features import lomo as lomo_lib
    lomo_dim = lomo_lib.feature_dim(distill.lomo_config(64, 32))
    monkeypatch.setattr(distill, "fit", fit)
    monkeypatch.setattr(train, "Trainer", trainer)
    monkeypatch.setattr(train, "load_data", lambda *args: _fake_data("extra", [5, 5, 1, 1, 9]))
    run = tmp_path / "run"
    fv = parse("--distill_lomo_weight=2", "--random_erasing=0", "--train_repeats=3",
               "--extra_train=extra:p", f"--run_dir={run}")
    for _ in range(2):
        with pytest.raises(Stop):
            train.train_trial(fv, main, 0, run, tf.distribute.get_strategy())
        np.testing.assert_array_equal(captured["teacher"].matrices[0], np.ones((lomo_dim, 2)))
    n = len(main.trials[0].train)
    assert len(fitted) == 1 and fitted[0][0] == (n, 64, 32, 3) and fitted[0][2:] == (1, 0)
    assert sorted(set(fitted[0][1])) == list(range(len(set(main.table.pids[main.trials[0].train]))))
    assert (run / distill.TEACHER_FILE).is_file()
    config = json.loads((run / "config.json").read_text())["train"]
    assert config["distill_lomo_weight"] == 2.0
    # a teacher fitted on other images (another split's, say) is refused, the file named
    stored = distill.load(run / distill.TEACHER_FILE, 64, 32, captured["teacher"].source)
    distill.save(dataclasses.replace(stored, source="another split"), run / distill.TEACHER_FILE)
    with pytest.raises(flags.ValidationError, match=f"{distill.TEACHER_FILE}.*other training"):
        train.train_trial(fv, main, 0, run, tf.distribute.get_strategy())


def test_resuming_with_another_distillation_is_refused(parse, data_dir, monkeypatch, tmp_path):
    """The distillation flags change what every step optimises: a trial resumed with another
    weight, loss, temperature or mixup is refused, the flag and both values named; the loss and
    temperature count only with a weight. A config.json written before the flags existed
    counts as what ran then: no distillation, or the distance loss at the fixed temperature."""
    from jlml_tf.features import lomo as lomo_lib
    from jlml_tf.training import distill

    main = tiny_data(data_dir)

    class Stop(Exception):
        pass

    def trainer(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(distill, "fit", lambda images, labels, source, **_: distill.LomoTeacher(
        [np.ones((lomo_lib.feature_dim(distill.lomo_config(64, 32)), 2), np.float32)],
        distill.lomo_config(64, 32), source))
    monkeypatch.setattr(train, "Trainer", trainer)
    run = tmp_path / "run"

    def resume(*args):
        train.train_trial(parse("--random_erasing=0", f"--run_dir={run}", *args), main, 0, run,
                          tf.distribute.get_strategy())

    def refused(message, *args):
        with pytest.raises(flags.ValidationError, match=message):
            resume(*args)

    def resumed(*args):
        with pytest.raises(Stop):
            resume(*args)

    def recorded(**values):  # config.json as a run that recorded only these flags
        config = json.loads((run / "config.json").read_text())
        for name in train.RESUME_FIXED_FLAGS:
            config["train"].pop(name, None)
        config["train"].update(values)
        (run / "config.json").write_text(json.dumps(config))

    resumed("--distill_lomo_weight=2")
    refused(r"--distill_lomo_weight=2.0 \(not 3.0\)", "--distill_lomo_weight=3")
    refused(r"--distill_lomo_weight=2.0 \(not 0.0\)")
    refused(r"--distill_lomo_loss=neighbours \(not distance\)", "--distill_lomo_weight=2",
            "--distill_lomo_loss=distance")
    refused(r"--distill_lomo_temperature=0.1 \(not 0.2\)", "--distill_lomo_weight=2",
            "--distill_lomo_temperature=0.2")
    refused(r"--distill_lomo_folds=1 \(not 2\)", "--distill_lomo_weight=2",
            "--distill_lomo_folds=2")
    refused(r"--mixup_alpha=0.0 \(not 0.5\)", "--distill_lomo_weight=2", "--mixup_alpha=0.5")
    resumed("--distill_lomo_weight=2")
    # without a weight the loss, its temperature and the folds change nothing
    recorded(distill_lomo_weight=0.0, distill_lomo_loss="neighbours")
    resumed("--distill_lomo_loss=distance", "--distill_lomo_folds=3")
    # written before the flags existed: no distillation then ...
    recorded()
    resumed()
    refused(r"--distill_lomo_weight=0.0 \(not 2.0\)", "--distill_lomo_weight=2")
    # ... or, with a weight, the distance loss, which had no flag yet
    recorded(distill_lomo_weight=2.0)
    refused(r"--distill_lomo_loss=distance \(not neighbours\)", "--distill_lomo_weight=2")
    resumed("--distill_lomo_weight=2", "--distill_lomo_loss=distance")


def test_cross_fitted_teacher_takes_the_folds_and_seed(parse, data_dir, monkeypatch, tmp_path):
    """--distill_lomo_folds and --seed reach the teacher's fit; folds the split cannot fill are
    refused naming the flag, before anything is written."""
    from jlml_tf.training import distill

    main = tiny_data(data_dir)
    calls = []
    real_fit = distill.fit

    class Stop(Exception):
        pass

    def fit(*args, **kwargs):
        calls.append((kwargs["folds"], kwargs["seed"]))
        raise Stop

    monkeypatch.setattr(distill, "fit", fit)
    args = ("--distill_lomo_weight=1", "--random_erasing=0", f"--run_dir={tmp_path / 'a'}")
    with pytest.raises(Stop):
        train.train_trial(parse(*args, "--distill_lomo_folds=2", "--seed=5"), main, 0,
                          tmp_path / "a", tf.distribute.get_strategy())
    assert calls == [(2, 5)]
    monkeypatch.setattr(distill, "fit", real_fit)
    identities = len(set(main.table.pids[main.trials[0].train]))
    with pytest.raises(flags.ValidationError,
                       match=f"--distill_lomo_folds={identities + 1}: .*one in every fold"):
        train.train_trial(parse(*args, f"--distill_lomo_folds={identities + 1}"), main, 0,
                          tmp_path / "b", tf.distribute.get_strategy())
    assert not (tmp_path / "b").exists()


def test_distillation_temperature_is_positive_and_for_the_neighbours_loss(parse):
    assert parse("--distill_lomo_weight=1", "--random_erasing=0",
                 "--distill_lomo_temperature=0.05").distill_lomo_temperature == 0.05
    for args, problem in [(["--distill_lomo_temperature=0"], "finite and at least"),
                          (["--distill_lomo_temperature=inf"], "finite and at least"),
                          (["--distill_lomo_loss=distance", "--distill_lomo_temperature=0.05"],
                           "distance loss has no temperature")]:
        with pytest.raises(flags.IllegalFlagValueError,
                           match=f"--distill_lomo_temperature=.*{problem}"):
            parse("--distill_lomo_weight=1", "--random_erasing=0", *args)


def test_distillation_refuses_random_erasing(parse):
    with pytest.raises(flags.IllegalFlagValueError, match="--random_erasing=0"):
        parse("--distill_lomo_weight=1", "--random_erasing=0.5")
    assert parse("--distill_lomo_weight=1", "--random_erasing=0").distill_lomo_weight == 1
