"""run_dir: load_run (the one way tools restore a trained run), training_hours and the data
sets a run was trained on."""
import keras
import numpy as np
import pytest

from jlml_tf.inference import run_dir as run_dir_lib
import run_fixtures as fixtures


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [fixtures.make_run(root / f"run{seed}", seed=seed) for seed in (0, 1)]


def test_load_run_restores_the_checkpoint_and_normalises_the_embedding(two_runs):
    a, a_again, b = (run_dir_lib.load_run(r) for r in (two_runs[0], two_runs[0], two_runs[1]))
    cfg = a.model_cfg
    x = np.random.default_rng(0).integers(
        0, 256, (3, cfg.input_height, cfg.input_width, 3)).astype(np.float32)
    ea, ea2, eb = (r.embedding_model(x, training=False).numpy() for r in (a, a_again, b))
    np.testing.assert_allclose(np.linalg.norm(ea, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ea, ea2, atol=1e-6)  # the restored weights, not a fresh init
    assert np.abs(ea - eb).max() > 1e-3
    assert a.run_dir == two_runs[0] and a.checkpoint.startswith(str(two_runs[0]))
    assert a.config["model"] == cfg.to_dict()


def test_load_run_builds_float32_under_any_policy_and_leaves_the_policy_as_it_was(two_runs):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        loaded = run_dir_lib.load_run(two_runs[0])
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert {layer.compute_dtype for layer in loaded.training_model.layers} == {"float32"}


def test_load_run_accepts_a_checkpoint_prefix_and_names_bad_paths(two_runs, tmp_path):
    loaded = run_dir_lib.load_run(two_runs[0])
    again = run_dir_lib.load_run(loaded.checkpoint)
    assert again.checkpoint == loaded.checkpoint and again.run_dir == loaded.run_dir
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        run_dir_lib.load_run(tmp_path)


RUN_CONFIG = {"data": {"dataset": "grid", "protocol": "125_125"},
              "train": {"manual_dir": "rel/grid", "data_dir": "cache",
                        "dataset_option": ["splits=s.json"]}}


def test_data_source_fills_from_the_run_and_lets_each_flag_win():
    own = run_dir_lib.data_source(RUN_CONFIG)
    assert (own.name, own.protocol, own.manual_dir, own.data_dir, own.options) == \
        ("grid", "125_125", "rel/grid", "cache", {"splits": "s.json"})
    assert not own.other_than_trained_on
    flagged = run_dir_lib.data_source(RUN_CONFIG, dataset="grid", protocol="other",
                                      manual_dir="elsewhere", options={})
    assert (flagged.protocol, flagged.manual_dir, flagged.options) == ("other", "elsewhere", {})
    assert not flagged.other_than_trained_on


def test_data_source_for_another_data_set_takes_nothing_of_the_run_s_own_release():
    other = run_dir_lib.data_source(RUN_CONFIG, dataset="viper")
    assert other.other_than_trained_on
    assert (other.name, other.protocol, other.manual_dir, other.options) == \
        ("viper", None, None, {})
    assert other.data_dir == "cache"  # the prepared-data cache is not tied to one data set


def test_training_hours_add_every_segment_of_every_trial(tmp_path):
    fixtures.write_train_log(tmp_path / "run/trial_00" / run_dir_lib.TRAIN_LOG, ("start", 0), ("interrupted", 1800),
         ("start", 5000), ("finished", 6800))
    fixtures.write_train_log(tmp_path / "run/trial_01" / run_dir_lib.TRAIN_LOG, ("start", 0), ("evaluated", 10),
         ("finished", 3600))
    assert run_dir_lib.training_hours(tmp_path / "run") == 2.0
    fixtures.write_train_log(tmp_path / "single" / run_dir_lib.TRAIN_LOG, ("start", 0), ("diverged", 900),
         ("start", 1000))  # a segment still running counts nothing yet
    assert run_dir_lib.training_hours(tmp_path / "single") == 0.25
    assert run_dir_lib.training_hours(tmp_path / "missing") is None


def test_training_hours_count_a_killed_segment_up_to_its_last_checkpoint(tmp_path):
    fixtures.write_train_log(tmp_path / run_dir_lib.TRAIN_LOG, ("start", 0), ("checkpoint", 600),
         ("checkpoint", 1800), ("start", 2000), ("checkpoint", 2900), ("finished", 3800))
    assert run_dir_lib.training_hours(tmp_path) == (1800 + 1800) / 3600
    fixtures.write_train_log(tmp_path / "no_checkpoint" / run_dir_lib.TRAIN_LOG, ("start", 0),
         ("start", 100), ("finished", 1000))  # killed before it kept anything
    assert run_dir_lib.training_hours(tmp_path / "no_checkpoint") == 900 / 3600
    fixtures.write_train_log(tmp_path / "last_killed" / run_dir_lib.TRAIN_LOG, ("start", 0),
         ("finished", 900), ("start", 1000), ("checkpoint", 1900))  # killed, never resumed
    assert run_dir_lib.training_hours(tmp_path / "last_killed") == 1800 / 3600


def test_training_datasets_follow_every_init_from_to_the_first_run(tmp_path):
    from jlml_tf.config import ModelConfig

    def run(name, dataset, extra=(), init_from=None):
        train = {"extra_train": list(extra), "init_from": init_from}
        run_dir_lib.write_config(tmp_path / name, ModelConfig(num_classes=2), train,
                                 {"dataset": dataset})
        return str(tmp_path / name)

    first = run("first", "cuhk03", ["viper:train_all:../data/viper", "grid:train_all:/a:b"])
    second = run("second", "cuhk03", ["caviar4reid:train_all:../data/caviar4reid"], first)
    # a trial fine-tuned from a checkpoint prefix of the second run
    third = run("third", "cuhk01", [], f"{second}/checkpoints/ckpt-12")
    assert run_dir_lib.training_datasets(first) == {"cuhk03", "viper", "grid"}
    assert run_dir_lib.training_datasets(third) == {"cuhk01", "cuhk03", "viper", "grid",
                                                    "caviar4reid"}
    orphan = run("orphan", "cuhk01", [], str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match="gone"):
        run_dir_lib.training_datasets(orphan)
    run("loop", "cuhk01", [], str(tmp_path / "loop"))
    with pytest.raises(ValueError, match="--init_from links"):
        run_dir_lib.training_datasets(tmp_path / "loop")
