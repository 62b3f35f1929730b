"""Every experiment flagfile parses, names a real protocol and says how to run it and what to expect."""
import dataclasses
import json
import pathlib

from absl import flags
import pytest

from jlml_tf import flags as jflags, paper
from jlml_tf.inference import run_dir as run_dir_lib
from jlml_tf.training import optimization, warm_start
from jlml_tf.config import ModelConfig

from conftest import PROJECT_ROOT

CONFIGS = sorted((PROJECT_ROOT / "experiments").rglob("*.cfg"))


def test_every_benchmark_and_ablation_has_a_config():
    names = {p.relative_to(PROJECT_ROOT / "experiments").as_posix() for p in CONFIGS}
    for required in ["synthetic.cfg", "market.cfg", "market_multi_query.cfg", "cuhk03_labeled.cfg",
                     "cuhk03_detected.cfg", "cuhk01_485_486_single.cfg", "cuhk01_871_100_multi.cfg",
                     "grid.cfg", "viper.cfg"] + [f"ablations/{a}.cfg" for a in paper.ABLATIONS]:
        assert required in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_header_gives_command_and_expectation(path: pathlib.Path):
    header = [l for l in path.read_text().splitlines() if l.startswith("#")]
    rel = path.relative_to(PROJECT_ROOT).as_posix()
    assert any(f"python -m jlml_tf.train --flagfile={rel}" in l for l in header)
    assert any(("The paper" in l) or ("Not in the paper" in l) or ("Expect" in l) for l in header)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_includes_existing_flagfiles_not_itself(path: pathlib.Path):
    """absl only warns on a file that includes itself, so a pasted header line would go unseen."""
    included = [l.split("=", 1)[1] for l in path.read_text().splitlines()
                if l.startswith("--flagfile=")]
    rel = path.relative_to(PROJECT_ROOT).as_posix()
    assert rel not in included
    assert all((PROJECT_ROOT / f).is_file() for f in included), included


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_to_valid_settings(parse, path):
    import jlml_tf_datasets

    values = parse(f"--flagfile={path.relative_to(PROJECT_ROOT)}")
    protocols = jlml_tf_datasets.protocols(values.dataset)
    assert values.protocol is None or values.protocol in protocols
    model = jflags.model_config(values, num_classes=10)  # ValidationError on a bad combination
    # RUN/config.json gives back the same model (resume, evaluate and export read it)
    assert ModelConfig.from_dict(json.loads(json.dumps(model.to_dict()))) == model
    if values.paper_key:
        assert paper.reference(values.paper_key) is not None


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_learning_rate_schedule_fits_the_training(parse, path):
    """Warm-up ends and every decay happens before the last epoch (a decay at or after it
    never takes effect), decays are in order, only the step schedule lists decay epochs, and
    the rate stays positive and at most the base rate at every epoch start."""
    values = parse(f"--flagfile={path.relative_to(PROJECT_ROOT)}")
    decay_epochs = [float(e) for e in values.lr_decay_epochs]
    assert values.warmup_epochs < values.epochs, path.name
    assert decay_epochs == sorted(set(decay_epochs)), path.name
    assert all(values.warmup_epochs <= e < values.epochs for e in decay_epochs), path.name
    assert values.lr_schedule == "step" or not decay_epochs, path.name
    steps_per_epoch = 10
    cfg = dataclasses.replace(jflags.optimizer_config(values, steps_per_epoch),
                              total_steps=values.epochs * steps_per_epoch)
    schedule = optimization.make_schedule(cfg)
    rates = [float(schedule(epoch * steps_per_epoch)) for epoch in range(values.epochs)]
    assert all(0.0 < r <= values.learning_rate * (1 + 1e-6) for r in rates), path.name


def test_ablation_overrides_the_base_config(parse):
    values = parse("--flagfile=experiments/ablations/m6.cfg")
    assert values.num_stripes == 6 and values.dataset == "market1501"
    assert paper.reference(values.paper_key)["rank1"] == 83.4


@pytest.mark.parametrize("argv,fragment", [
    (["--branches=both_ways"], "branches"), (["--num_stripes=11"], "num_stripes"),
    (["--optimizer=rmsprop"], "optimizer"), (["--global_widths=32,x"], "global_widths"),
    (["--dataset=imagenet"], "dataset"), (["--triplet_weight=1"], "sampler=pk"),
    (["--ibn_stages=5"], "ibn_stages"), (["--cameras_per_batch=2"], "sampler=camera"),
    (["--sampler=camera", "--batch_size=32", "--cameras_per_batch=3"], "divide --batch_size"),
    (["--sampler=camera", "--batch_size=32", "--cameras_per_batch=8"], "at least 8 images"),
    (["--sampler=camera", "--cameras_per_batch=2", "--sync_batch_norm"], "sync_batch_norm"),
    (["--triplet_weight=1", "--sampler=pk", "--images_per_identity=1"], "images_per_identity"),
    (["--triplet_weight=1", "--sampler=camera", "--cameras_per_batch=2"], "sampler=camera_pairs"),
    (["--dataset=viper", "--extra_train=grid,viper:train_all"], "extra_train must not name")])
def test_bad_flag_value_names_the_flag(parse, argv, fragment):
    with pytest.raises(flags.Error, match=fragment):
        parse(*argv)


def test_triplets_take_camera_pairs_whose_other_cameras_are_the_positives(parse):
    values = parse("--triplet_weight=1", "--sampler=camera_pairs", "--batch_size=32",
                   "--cameras_per_batch=2")
    assert values.triplet_weight == 1 and values.sampler == "camera_pairs"


def test_cameras_per_batch_sets_the_batch_norm_group_size(parse):
    values = parse("--sampler=camera", "--batch_size=32", "--cameras_per_batch=4")
    assert jflags.model_config(values).batch_norm_group_size == 8
    assert jflags.train_config(values).cameras_per_batch == 4
    assert jflags.model_config(parse("--sampler=camera")).batch_norm_group_size == 0


def test_enum_error_lists_allowed_values(parse):
    with pytest.raises(flags.Error, match="global.*local"):
        parse("--branches=neither")


def _run_dirs_of_configs(parse):
    return {parse(f"--flagfile={p.relative_to(PROJECT_ROOT)}").run_dir: p for p in CONFIGS}


def test_every_init_from_is_a_pre_training_without_the_target_data_set(parse):
    """A fine-tuning config names the run another config writes, whose feature weights fit its
    own model (warm_start's rule: batch-norm grouping or input size may differ), trained on
    no image of the fine-tuning's data set (no test identity can leak); a continuation
    (--init_classifiers) trains on exactly its source's data; a fine-tuning of one split's
    joint model (<run_dir>/trial_NN) fine-tunes that split alone, and one of every split's
    (<run_dir>/trial_{trial:02d}) only splits its source trained; a joint stage (--extra_train
    with a pre-training source) trains on every data set its source saw, and no other."""
    run_dirs = _run_dirs_of_configs(parse)
    for path in CONFIGS:
        values = parse(f"--flagfile={path.relative_to(PROJECT_ROOT)}")
        if not values.init_from:
            continue
        model = jflags.model_config(values, 10)
        source_dir, _, trial = values.init_from.partition("/trial_")
        assert source_dir in run_dirs, f"{path.name}: --init_from={values.init_from}"
        source = parse(f"--flagfile={run_dirs[source_dir].relative_to(PROJECT_ROOT)}")
        warm_start.check_compatible(jflags.model_config(source, 10), model,
                                    f"{values.init_from} (in {path.name})")
        data = lambda v: (v.dataset, v.protocol, v.manual_dir, v.extra_train)  # noqa: E731
        if values.init_classifiers:
            assert data(values) == data(source), path.name
            continue
        if "{" in trial:  # each split from its own split's model
            assert (values.dataset, values.protocol) == (source.dataset, source.protocol)
            assert set(values.trials) <= set(source.trials) or source.trials == ["all"], \
                path.name
            for t in values.trials if values.trials != ["all"] else ["0", "9"]:
                assert values.init_from.format(trial=int(t)) == \
                    str(run_dir_lib.trial_dir(source_dir, int(t))), path.name
            continue
        if trial:
            assert (values.dataset, values.protocol) == (source.dataset, source.protocol)
            assert [int(t) for t in values.trials] == [int(trial)], path.name
            continue
        source_sets = [(source.dataset, source.protocol, source.manual_dir)] + [
            jflags.extra_train_spec(s) for s in source.extra_train]
        seen = {name for name, _, _ in source_sets}
        assert values.dataset not in seen, \
            f"{path.name} fine-tunes on {values.dataset}, pre-trained on {seen}"
        if values.extra_train:  # a joint stage: the split with every person its source saw
            assert sorted(map(jflags.extra_train_spec, values.extra_train)) == \
                sorted(source_sets), path.name


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_extra_training_sets_name_known_data_sets_and_protocols(parse, path):
    import jlml_tf_datasets

    for spec in parse(f"--flagfile={path.relative_to(PROJECT_ROOT)}").extra_train:
        name, protocol, _ = jflags.extra_train_spec(spec)
        assert name in jlml_tf_datasets.MODULES, spec
        assert protocol in jlml_tf_datasets.protocols(name), spec
