"""benchmarks/ablations.py: commands, paired differences and verdicts on hand-made results."""
import json

import pytest

from conftest import PROJECT_ROOT, load_benchmark
import run_fixtures as fixtures

ablations = load_benchmark("ablations")


def _write(results, variant, rank1_by_split, name="results.json"):
    run = results / variant / "cuhk01"
    run.mkdir(parents=True, exist_ok=True)
    names = [f"trial{s}" for s in rank1_by_split]
    trials = [{"rank1": r, "map": r / 2} for r in rank1_by_split.values()]
    (run / name).write_text(json.dumps({"extra": {"trials": names},
                                        "results": {"JLML": {"trials": trials}}}))


@pytest.mark.parametrize("low, high, expected", [(0.5, 2.0, "holds"), (-3.0, -0.1, "reversed"),
                                                 (-1.0, 2.0, "not resolved")])
def test_verdicts(low, high, expected):
    assert ablations.verdict({"low": low, "high": high}) == expected
    assert ablations.verdict(None) == "not run"


def test_report_from_committed_files(tmp_path):
    _write(tmp_path, "full", {0: 0.30, 1: 0.34, 2: 0.32})
    _write(tmp_path, "uniloss", {0: 0.32, 1: 0.365, 2: 0.35})  # better by 2-3 points on each
    _write(tmp_path, "full", {0: 0.20, 1: 0.22, 2: 0.21}, name="results_xqda.json")
    fixtures.write_train_log(tmp_path / "full/pretrain/train_log.jsonl", ("start", 0), ("finished", 3600))
    fixtures.write_train_log(tmp_path / "full/cuhk01/trial_00/train_log.jsonl", ("start", 0), ("finished", 1800))
    fixtures.write_train_log(tmp_path / "uniloss/cuhk01/trial_00/train_log.jsonl", ("start", 0), ("finished", 900))
    text = ablations.report(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    claims = {c["claim"]: c for c in summary["claims"]}
    assert claims["multi-loss beats UniLoss"]["verdict"] == "reversed"
    # -2, -2.5, -3 points: reversed at 95 %, not with all ten claims at once (99.5 %)
    assert claims["multi-loss beats UniLoss"]["family_verdict"] == "not resolved"
    assert claims["L2 beats XQDA on JLML features"]["family_verdict"] == "holds"  # +10, +12, +11
    assert claims["L2 beats XQDA on JLML features"]["verdict"] == "holds"
    assert claims["m = 4 beats m = 2"]["verdict"] == "not run"
    full = next(r for r in summary["variants"] if r["variant"] == "full")
    uniloss = next(r for r in summary["variants"] if r["variant"] == "uniloss")
    assert full["rank1"]["mean"] == pytest.approx(32.0) and full["paper_market_rank1"] == 85.1
    assert "| multi-loss beats UniLoss | +9.0 | -2.5 [" in text  # the paper: 85.1 - 76.1
    assert claims["L2 beats XQDA on JLML features"]["paper_difference"] == pytest.approx(85.1 - 82.6)
    assert full["hours"] == pytest.approx(1.5) and uniloss["hours"] == pytest.approx(0.25)
    assert next(r for r in summary["variants"] if r["variant"] == "xqda")["hours"] is None
    assert "| 1.50 | 85.1 |" in text
    assert (tmp_path / "ablations.png").stat().st_size > 0


def test_report_with_one_variant_has_no_claim_to_pair(tmp_path):
    _write(tmp_path, "full", {0: 0.30, 1: 0.34})
    text = ablations.report(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {c["verdict"] for c in summary["claims"]} == {"not run"}
    assert "| multi-loss beats UniLoss | +9.0 | - | not run | - | not run |" in text
    assert (tmp_path / "ablations.png").stat().st_size > 0


def test_budget_check_compares_the_sign_of_each_claim(tmp_path):
    short, long = tmp_path / "short", tmp_path / "long"
    _write(short, "full", {0: 0.30, 1: 0.34, 2: 0.32})
    _write(short, "uniloss", {0: 0.25, 1: 0.30, 2: 0.28})  # full better: +4.3
    _write(short, "no_sfl", {0: 0.31, 1: 0.35, 2: 0.33})  # full worse: -1.0
    _write(long, "full", {0: 0.40, 1: 0.44, 2: 0.42, 3: 0.41})
    _write(long, "uniloss", {0: 0.35, 1: 0.41, 2: 0.40})  # full better: +3.3
    _write(long, "no_sfl", {0: 0.38, 1: 0.43, 2: 0.41})  # full better: +1.3
    _write(long, "m2", {0: 0.38, 1: 0.43})  # not in the short run: no row
    rows = {r["claim"]: r for r in ablations.budget_rows(short, long)}
    assert set(rows) == {"multi-loss beats UniLoss", "selective feature learning helps"}
    assert rows["multi-loss beats UniLoss"]["same_sign"]
    assert not rows["selective feature learning helps"]["same_sign"]
    text = ablations.report(short, long)
    assert "| selective feature learning helps | -1.0 [" in text and "| no |" in text
    assert json.loads((short / "summary.json").read_text())["budget_check"][0]["long"]


def test_commands_run_the_variant_flagfiles_with_overrides(tmp_path):
    for variant in ablations.TRAINED:
        pretrain, finetune = ablations.train_commands(variant, None, None, 4, tmp_path)
        assert pretrain.index(f"--flagfile=experiments/ablations/cpu/{variant}.cfg") > 0
        assert not any(a.startswith(("--epochs", "--trials")) for a in pretrain)  # the file's
        flagfile = finetune.index(f"--flagfile=experiments/ablations/cpu/{variant}_cuhk01.cfg")
        assert finetune.index("--epochs=4") > flagfile  # absl: the later value wins
        assert not any(a.startswith("--trials") for a in finetune)  # the file's splits
        assert f"--run_dir={tmp_path / variant / 'pretrain'}" in pretrain
        assert f"--init_from={tmp_path / variant / 'pretrain'}" in finetune
        assert "--trials=0,2" in ablations.train_commands(variant, [0, 2], None, None, tmp_path)[1]


def _flagfile(path):
    return f"--flagfile={path.relative_to(PROJECT_ROOT)}"


# The flags a variant may change; every other flag must equal the full model's.
_VARIANT_FLAGS = {"branches", "loss_mode", "shared_stem", "global_group_lasso",
                  "local_exclusive_lasso", "num_stripes", "run_dir", "init_from"}


def test_variants_change_only_their_model_and_fine_tune_their_own_pre_training(parse):
    from jlml_tf import flags as jflags

    full = [parse(_flagfile(p)).flag_values_dict() for p in ablations.stage_configs(ablations.FULL)]
    models = set()
    for variant in ablations.TRAINED:
        stages = [parse(_flagfile(p)) for p in ablations.stage_configs(variant)]
        for values, reference in zip(stages, full):
            changed = {k for k, v in values.flag_values_dict().items() if reference[k] != v}
            assert changed <= _VARIANT_FLAGS, (variant, changed - _VARIANT_FLAGS)
        pretrain, finetune = stages
        assert finetune.init_from == pretrain.run_dir, variant
        assert jflags.model_config(pretrain, 10) == jflags.model_config(finetune, 10), variant
        models.add((repr(jflags.model_config(pretrain, 10)),
                    pretrain.global_group_lasso, pretrain.local_exclusive_lasso))
    assert len(models) == len(ablations.TRAINED)  # no two variants train the same model


def test_learned_metrics_use_the_test_time_views_of_the_l2_figure(tmp_path, parse):
    flip = parse(_flagfile(ablations.stage_configs(ablations.FULL)[1])).flip_test
    for variant in ablations.MATCHED:
        command = ablations.metric_command(variant, tmp_path)
        assert ("--flip_test" in command) == flip
        assert f"--metric={ablations.MATCHED[variant][1]}" in command
        assert f"--suffix={variant}" in command  # results_<variant>.json, read by per_split


def test_small_files_are_copied_and_checkpoints_are_not(tmp_path):
    run = tmp_path / "run"
    (run / "trial_00" / "checkpoints").mkdir(parents=True)
    (run / "trial_00" / "results.json").write_text("{}")
    (run / "trial_00" / "train_log.jsonl").write_text("")
    (run / "trial_00" / "checkpoints" / "config.json").write_text("{}")
    (run / "config.json").write_text("{}")
    assert ablations.copy_small_files(run, tmp_path / "out") == 3
    assert not (tmp_path / "out" / "trial_00" / "checkpoints").exists()


def test_bad_arguments_name_the_flag(capsys):
    with pytest.raises(SystemExit):
        ablations.parse_args(["run", "--variants=full,bogus"])
    assert "--variants: unknown ['bogus']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablations.parse_args(["run", "--splits=0,12"])
    assert "--splits" in capsys.readouterr().err
