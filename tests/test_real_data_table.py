"""benchmarks/real_data_table.py on a hand-made results folder: rows, hours, best LOMO variant."""
import json
import pathlib

import pytest

from conftest import load_benchmark
import run_fixtures as fixtures

real_data_table = load_benchmark("real_data_table")


def _results(path, method, rank1, trials=10):
    path.parent.mkdir(parents=True, exist_ok=True)
    mean = {"rank1": rank1, "rank5": 0.5, "rank10": 0.6, "rank20": 0.7, "map": 0.3}
    std = {k: 0.01 for k in mean}
    path.write_text(json.dumps({"results": {method: {"num_trials": trials, "mean": mean,
                                                      "std": std}}}))


def test_rows_of_a_benchmark(tmp_path):
    _results(tmp_path / "cpu-viper/results.json", "JLML (this run)", 0.25)
    fixtures.write_train_log(tmp_path / "cpu-viper/trial_00/train_log.jsonl", ("start", 0), ("finished", 1800))
    fixtures.write_train_log(tmp_path / "cpu-pretrain_for_viper_grid/train_log.jsonl", ("start", 0), ("finished", 2700))
    fixtures.write_train_log(tmp_path / "cpu-continue_pretrain_for_viper_grid/train_log.jsonl", ("start", 0),
         ("finished", 900))  # the continuation counts as pre-training too
    _results(tmp_path / "transfer-viper/results_transfer.json", "L2", 0.1)
    _results(tmp_path / "lomo_xqda/viper_316_316_none/results.json", "LOMO (none) + XQDA", 0.384)
    _results(tmp_path / "lomo_xqda/viper_316_316_msr/results.json", "LOMO (MSR) + XQDA", 0.37)
    rows = [r for r in real_data_table.table(tmp_path).splitlines() if r.startswith("| VIPeR")]
    assert len(rows) == 4
    assert "| 25.0 ± 1.0 |" in rows[0] and rows[0].endswith("| 1.50 |")  # 0.5 h + 1 h pre-training
    assert "direct transfer" in rows[1] and "| 10.0 ± 1.0 |" in rows[1] and rows[1].endswith("| 1.00 |")
    assert "LOMO (none)" in rows[2] and "best of 2 Retinex variants (R1 37.0-38.4)" in rows[2]
    assert "| 50.2 |" in rows[3]


def test_each_model_of_a_benchmark_has_its_rows_and_its_own_pre_training_hours(tmp_path):
    half, wide = real_data_table.CUHK01_485_486[:2]
    for model, rank1, pre_seconds in ((half, 0.46, 3600), (wide, 0.5, 7200)):
        _results(tmp_path / model.run / "results.json", "JLML (this run)", rank1)
        fixtures.write_train_log(tmp_path / model.run / "trial_00/train_log.jsonl", ("start", 0),
                                 ("finished", 1800))
        fixtures.write_train_log(tmp_path / model.pretrain[0] / "train_log.jsonl", ("start", 0),
                                 ("finished", pre_seconds))
    rows = [r for r in real_data_table.table(tmp_path).splitlines()
            if r.startswith("| CUHK01 485/486 single shot | JLML ")]
    assert rows[0].startswith("| CUHK01 485/486 single shot | JLML half width, 25 + 12 ep | fine-tuned, L2 |")
    assert "| 46.0 ± 1.0 |" in rows[0] and rows[0].endswith("| 1.50 |")
    assert rows[1].startswith("| CUHK01 485/486 single shot | JLML paper width, 8 + 12 ep | fine-tuned, L2 |")
    assert "| 50.0 ± 1.0 |" in rows[1] and rows[1].endswith("| 2.50 |")


def test_floor_row_sits_before_the_hand_crafted_baseline(tmp_path):
    floor = {"results": {real_data_table.FLOOR_METHOD: {
        "rank1": {"mean": 0.07, "std": 0.009, "trials": [0.06, 0.08]},
        "rank5": {"mean": 0.2, "std": 0.01, "trials": [0.19, 0.21]},
        "map": {"mean": 0.11, "std": 0.0, "trials": [0.11, 0.11]}}}}
    path = tmp_path / real_data_table.FLOORS["VIPeR 316/316"]
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(floor))
    _results(tmp_path / "lomo_xqda/viper_316_316_none/results.json", "LOMO (none) + XQDA", 0.384)
    rows = [r for r in real_data_table.table(tmp_path).splitlines() if r.startswith("| VIPeR")]
    assert "no training" in rows[0] and "| 2 | 7.0 ± 0.9 | 20.0 ± 1.0 | - | - | 11.0 ± 0.0 |" in rows[0]
    assert "LOMO" in rows[1]


def test_xqda_rows_follow_the_model_they_were_fitted_on(tmp_path):
    model = real_data_table.CUHK01_485_486[1]
    _results(tmp_path / model.run / "results.json", "JLML (this run)", 0.48)
    _results(tmp_path / model.run / "results_xqda.json", "JLML xqda", 0.56)
    _results(tmp_path / model.run / "results_xqda_map.json", "JLML xqda_map", 0.53)
    rows = [r for r in real_data_table.table(tmp_path).splitlines()
            if r.startswith("| CUHK01 485/486 single shot | JLML ")]
    assert len(rows) == 3 and "| 48.0 ± 1.0 |" in rows[0]
    assert "| fine-tuned, XQDA on its features |" in rows[1] and "| 56.0 ± 1.0 |" in rows[1]
    assert "| fine-tuned, XQDA map built in |" in rows[2] and "| 53.0 ± 1.0 |" in rows[2]


def test_a_transfer_only_model_gives_its_direct_transfer_row_with_its_readout(tmp_path):
    model = real_data_table.camera_groups_for_viper_grid("grid")
    assert model.run is None
    _results(tmp_path / model.transfer, "JLML l2", 0.215)
    fixtures.write_train_log(tmp_path / model.pretrain[0] / "train_log.jsonl", ("start", 0),
                             ("finished", 1800))
    # a results.json beside the pre-training's log is its own data set's, not GRID's
    _results(tmp_path / model.pretrain[0] / "results.json", "JLML (this run)", 0.1, trials=1)
    rows = [r for r in real_data_table.table(tmp_path).splitlines()
            if r.startswith("| GRID") and "JLML half width, camera groups, 6 ep |" in r]
    assert len(rows) == 1 and "| direct transfer, L2 per camera |" in rows[0]
    assert "| 21.5 ± 1.0 |" in rows[0] and rows[0].endswith("| 0.50 |")


def test_camera_group_rows_read_the_per_camera_results_and_say_so(tmp_path):
    model = real_data_table.CAMERA_GROUPS_CUHK01
    _results(tmp_path / model.run / "results.json", "JLML (this run)", 0.1)  # trained statistics
    _results(tmp_path / model.run / "results_xqda.json", "JLML xqda", 0.9)  # not this readout's
    _results(tmp_path / model.run / "results_cbn-train.json", "JLML l2", 0.5)
    _results(tmp_path / model.run / "results_multi_shot_cbn-train.json", "JLML l2", 0.55)
    _results(tmp_path / model.transfer, "JLML l2", 0.29)
    _results(tmp_path / model.run / "results_xqda_map.json", "JLML xqda_map", 0.8)  # not either
    _results(tmp_path / model.run / "results_xqda_map_cbn-train.json", "JLML xqda_map", 0.58)
    lines = real_data_table.table(tmp_path).splitlines()
    single = [r for r in lines if r.startswith("| CUHK01 485/486 single shot | JLML half width, camera groups, 12 ep |")]
    assert len(single) == 3 and "| fine-tuned, L2 per camera |" in single[0]
    assert "| 50.0 ± 1.0 |" in single[0]
    assert "| fine-tuned, XQDA map built in per camera |" in single[1]
    assert "| 58.0 ± 1.0 |" in single[1]
    assert "| direct transfer, L2 per camera |" in single[2] and "| 29.0 ± 1.0 |" in single[2]
    multi = [r for r in lines if r.startswith("| CUHK01 485/486 multi shot | JLML half width, camera groups, 12 ep |")]
    assert len(multi) == 1 and "| 55.0 ± 1.0 |" in multi[0]


def test_a_camera_group_fine_tuning_counts_its_pre_training_hours(tmp_path):
    model = real_data_table.camera_groups_for_viper_grid(
        "grid", epochs=12, fine_tuned="camera_groups_12ep_grid_ft")
    assert model in real_data_table.BENCHMARKS[3][2]  # the GRID row set
    _results(tmp_path / model.run / "results_cbn-train.json", "JLML l2", 0.2)
    fixtures.write_train_log(tmp_path / model.run / "trial_00/train_log.jsonl", ("start", 0),
                             ("finished", 720))
    fixtures.write_train_log(tmp_path / model.pretrain[0] / "train_log.jsonl", ("start", 0),
                             ("finished", 1800))
    rows = [r for r in real_data_table.table(tmp_path).splitlines()
            if r.startswith("| GRID") and "camera groups, 12 ep |" in r]
    assert len(rows) == 1 and "| 20.0 ± 1.0 |" in rows[0] and rows[0].endswith("| 0.70 |")


def test_a_continued_camera_group_chain_counts_both_pre_training_runs(tmp_path):
    model = real_data_table.CAMERA_GROUPS_CONTINUED_CUHK01
    assert len(model.pretrain) == 2 and model in real_data_table.CUHK01_485_486
    _results(tmp_path / model.run / "results_cbn-train.json", "JLML l2", 0.47)
    _results(tmp_path / model.transfer, "JLML l2", 0.3)
    fixtures.write_train_log(tmp_path / model.run / "trial_00/train_log.jsonl", ("start", 0),
                             ("finished", 1800))
    for run, seconds in zip(model.pretrain, (1800, 3600)):
        fixtures.write_train_log(tmp_path / run / "train_log.jsonl", ("start", 0),
                                 ("finished", seconds))
    rows = [r for r in real_data_table.table(tmp_path).splitlines()
            if r.startswith("| CUHK01 485/486 single shot | JLML half width, camera groups, 12 + 12 ep |")]
    assert len(rows) == 2 and "| fine-tuned, L2 per camera |" in rows[0]
    assert "| 47.0 ± 1.0 |" in rows[0] and rows[0].endswith("| 2.00 |")  # 0.5 + 0.5 + 1 h
    assert "direct transfer" in rows[1] and rows[1].endswith("| 1.50 |")


def test_a_joint_fine_tuning_counts_its_joint_stage_and_repeats_no_transfer_row(tmp_path):
    """The joint stage runs per trial (trial_NN/ logs), so its hours are every trial's; the
    direct transfer it shares with the continued chain is shown once."""
    model = real_data_table.CAMERA_GROUPS_JOINT_CUHK01
    continued = real_data_table.CAMERA_GROUPS_CONTINUED_CUHK01
    assert model in real_data_table.CUHK01_485_486
    _results(tmp_path / model.run / "results_cbn-train.json", "JLML l2", 0.52)
    _results(tmp_path / continued.transfer, "JLML l2", 0.3)
    fixtures.write_train_log(tmp_path / model.run / "trial_00/train_log.jsonl", ("start", 0),
                             ("finished", 1800))
    for run, seconds in zip(model.pretrain[:2], (1800, 3600)):
        fixtures.write_train_log(tmp_path / run / "train_log.jsonl", ("start", 0),
                                 ("finished", seconds))
    for trial in ("trial_00", "trial_01"):
        fixtures.write_train_log(tmp_path / model.pretrain[2] / trial / "train_log.jsonl",
                                 ("start", 0), ("finished", 900))
    lines = real_data_table.table(tmp_path).splitlines()
    rows = [r for r in lines if r.startswith("| CUHK01 485/486 single shot")
            and "joint stage, 4-ep fine-tuning" in r]
    assert len(rows) == 1 and "| 52.0 ± 1.0 |" in rows[0]
    assert rows[0].endswith("| 2.50 |")  # 0.5 + 1 h pre-training, 2 x 0.25 h joint, 0.5 h
    assert sum("| 30.0 ± 1.0 |" in r and "direct transfer" in r for r in lines) == 1


def test_the_871_100_joint_chain_counts_its_own_joint_stage(tmp_path):
    model = real_data_table.CAMERA_GROUPS_JOINT_CUHK01_871_100
    assert model in real_data_table.BENCHMARKS[2][2]  # the 871/100 row set
    _results(tmp_path / model.run / "results_cbn-train.json", "JLML l2", 0.72, trials=2)
    fixtures.write_train_log(tmp_path / model.run / "trial_00/train_log.jsonl", ("start", 0),
                             ("finished", 900))
    fixtures.write_train_log(tmp_path / model.pretrain[-1] / "trial_00/train_log.jsonl",
                             ("start", 0), ("finished", 1800))
    # the 485/486 joint stage is another chain's and must not count here
    fixtures.write_train_log(tmp_path / real_data_table.CAMERA_GROUPS_JOINT_CUHK01.pretrain[-1]
                             / "trial_00/train_log.jsonl", ("start", 0), ("finished", 3600))
    rows = [r for r in real_data_table.table(tmp_path).splitlines()
            if r.startswith("| CUHK01 871/100 single shot | JLML half")]
    assert len(rows) == 1 and "| fine-tuned, L2 per camera | 2 | 72.0 ± 1.0 |" in rows[0]
    assert rows[0].endswith("| 0.75 |")


def test_the_paper_width_chain_counts_its_own_pre_training_not_the_half_width_one(tmp_path):
    model = real_data_table.PAPER_WIDTH_CAMERA_GROUPS_JOINT_CUHK01_FT8
    pre_trained = real_data_table.PAPER_WIDTH_CAMERA_GROUPS_CONTINUED_CUHK01
    assert model.label == "paper width, camera groups, 12 + 12 ep, joint stage, 8-ep fine-tuning"
    _results(tmp_path / model.run / "results_cbn-train.json", "JLML l2", 0.54)
    _results(tmp_path / pre_trained.transfer, "JLML l2", 0.28)
    fixtures.write_train_log(tmp_path / model.run / "trial_00/train_log.jsonl", ("start", 0),
                             ("finished", 900))
    for run in model.pretrain:
        fixtures.write_train_log(tmp_path / run / "train_log.jsonl", ("start", 0),
                                 ("finished", 1800))
    # the half-width chain's pre-training is another model's and must not count here
    fixtures.write_train_log(tmp_path / real_data_table.CAMERA_GROUPS_JOINT_CUHK01_FT8.pretrain[0]
                             / "train_log.jsonl", ("start", 0), ("finished", 36000))
    rows = [r for r in real_data_table.table(tmp_path).splitlines()
            if r.startswith("| CUHK01 485/486 single shot | JLML paper width, camera groups")]
    assert len(rows) == 2
    # its direct transfer counts the two pre-trainings alone, not the joint stage
    assert "| direct transfer, L2 per camera | 10 | 28.0 ± 1.0 |" in rows[0]
    assert rows[0].endswith("| 1.00 |")
    assert "| fine-tuned, L2 per camera | 10 | 54.0 ± 1.0 |" in rows[1]
    assert rows[1].endswith("| 1.75 |")  # 3 x 0.5 h pre-training and joint stage, 0.25 h


def test_the_paper_width_871_100_chain_counts_its_own_joint_stage_not_the_485_486_one(tmp_path):
    model = real_data_table.PAPER_WIDTH_CAMERA_GROUPS_JOINT_CUHK01_871_100
    assert model in real_data_table.BENCHMARKS[2][2]  # the 871/100 row set
    assert model.label == "paper width, camera groups, 12 + 12 ep, joint stage, 8-ep fine-tuning"
    assert model.pretrain[-1].endswith("/paper_width_camera_groups_continue_joint_cuhk01_871_100")
    assert model.run.endswith("/paper_width_camera_groups_continue_joint_cuhk01_871_100_ft_8ep")
    _results(tmp_path / model.run / "results_cbn-train.json", "JLML l2", 0.75, trials=3)
    fixtures.write_train_log(tmp_path / model.run / "trial_00/train_log.jsonl", ("start", 0),
                             ("finished", 900))
    fixtures.write_train_log(tmp_path / model.pretrain[-1] / "trial_00/train_log.jsonl",
                             ("start", 0), ("finished", 1800))
    for run in model.pretrain[:2]:
        fixtures.write_train_log(tmp_path / run / "train_log.jsonl", ("start", 0),
                                 ("finished", 3600))
    # the paper-width 485/486 joint stage is another chain's and must not count here
    other = real_data_table.PAPER_WIDTH_CAMERA_GROUPS_JOINT_CUHK01_FT8.pretrain[-1]
    fixtures.write_train_log(tmp_path / other / "trial_00/train_log.jsonl", ("start", 0),
                             ("finished", 36000))
    rows = [r for r in real_data_table.table(tmp_path).splitlines()
            if r.startswith("| CUHK01 871/100 single shot | JLML paper width, camera groups")]
    assert len(rows) == 1 and "| fine-tuned, L2 per camera | 3 | 75.0 ± 1.0 |" in rows[0]
    assert rows[0].endswith("| 2.75 |")  # 2 x 1 h pre-training, 0.5 h joint stage, 0.25 h


def test_the_paper_width_viper_grid_pre_training_reads_its_own_folders(tmp_path):
    model = real_data_table.camera_groups_for_viper_grid("viper", epochs=12, width="paper")
    half = real_data_table.camera_groups_for_viper_grid("viper", epochs=12)
    assert model in real_data_table.BENCHMARKS[4][2]  # the VIPeR row set
    assert model.label == "paper width, camera groups, 12 ep"
    assert model.pretrain == (
        f"{real_data_table.CAMERA_GROUPS}/paper_width_pretrain_camera_groups_12ep",)
    assert model.transfer == (f"{real_data_table.CAMERA_GROUPS}/paper_width_camera_groups_12ep_"
                              "viper_transfer/results_transfer_cbn-train.json")
    _results(tmp_path / model.transfer, "JLML l2", 0.17)
    _results(tmp_path / half.transfer, "JLML l2", 0.16)
    fixtures.write_train_log(tmp_path / model.pretrain[0] / "train_log.jsonl", ("start", 0),
                             ("finished", 3600))
    fixtures.write_train_log(tmp_path / half.pretrain[0] / "train_log.jsonl", ("start", 0),
                             ("finished", 1800))
    rows = [r for r in real_data_table.table(tmp_path).splitlines()
            if r.startswith("| VIPeR") and "camera groups, 12 ep |" in r]
    paper = [r for r in rows if "| JLML paper width," in r]
    assert len(rows) == 2 and len(paper) == 1
    assert "| direct transfer, L2 per camera | 10 | 17.0 ± 1.0 |" in paper[0]
    assert paper[0].endswith("| 1.00 |")


def test_the_paper_width_continuation_counts_both_pre_training_runs(tmp_path):
    model = real_data_table.camera_groups_continued_for_viper_grid("grid", width="paper")
    assert model in real_data_table.BENCHMARKS[3][2]  # the GRID row set
    assert real_data_table.camera_groups_continued_for_viper_grid(  # and VIPeR's, fine-tuned too
        "viper", "paper_width_camera_groups_continue_12ep_viper_ft",
        width="paper") in real_data_table.BENCHMARKS[4][2]
    assert model.label == "paper width, camera groups, 12 + 12 ep"
    assert model.pretrain == tuple(f"{real_data_table.CAMERA_GROUPS}/paper_width_{stage}"
                                   "_camera_groups_12ep" for stage in ("pretrain", "continue"))
    assert model.transfer == (f"{real_data_table.CAMERA_GROUPS}/paper_width_camera_groups_"
                              "continue_12ep_grid_transfer/results_transfer_cbn-train.json")
    _results(tmp_path / model.transfer, "JLML l2", 0.25)
    for run, seconds in zip(model.pretrain, (3600, 1800)):
        fixtures.write_train_log(tmp_path / run / "train_log.jsonl", ("start", 0),
                                 ("finished", seconds))
    rows = [r for r in real_data_table.table(tmp_path).splitlines()
            if r.startswith("| GRID") and "| JLML paper width, camera groups, 12 + 12 ep |" in r]
    assert len(rows) == 1
    assert "| direct transfer, L2 per camera | 10 | 25.0 ± 1.0 |" in rows[0]
    assert rows[0].endswith("| 1.50 |")


def test_the_re_run_viper_rows_count_the_re_run_pre_training_not_the_first(tmp_path):
    pairs = real_data_table.PAPER_WIDTH_VIPER_RERUN_DISTILLED_PAIRS
    weight5 = real_data_table.PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS
    batch64 = real_data_table.PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS_B64
    rate0025 = real_data_table.PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS_B64_LR0025
    epochs48 = real_data_table.PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS_B64_LR0025_48EP
    control = real_data_table.PAPER_WIDTH_VIPER_RERUN_DISTILLED_24EP
    first = real_data_table.PAPER_WIDTH_VIPER_FT_DISTILLED_24EP
    assert pairs.pretrain == control.pretrain == weight5.pretrain == batch64.pretrain \
        == rate0025.pretrain == epochs48.pretrain
    assert set(control.pretrain).isdisjoint(first.pretrain)
    assert weight5.run.endswith("_rerun_viper_ft_distill_w5_pairs_24ep")
    assert batch64.run.endswith("_rerun_viper_ft_distill_w5_pairs_b64_24ep")
    assert rate0025.run.endswith("_rerun_viper_ft_distill_w5_pairs_b64_lr0025_24ep")
    assert epochs48.run.endswith("_rerun_viper_ft_distill_w5_pairs_b64_lr0025_48ep")
    assert "48-ep fine-tuning" in epochs48.label and "24-ep" not in epochs48.label
    for model, rank1 in ((control, 0.28), (pairs, 0.31), (weight5, 0.36), (batch64, 0.40),
                         (rate0025, 0.41), (epochs48, 0.42)):
        _results(tmp_path / model.run / "results_cbn-train.json", "JLML l2", rank1)
        fixtures.write_train_log(tmp_path / model.run / "trial_00/train_log.jsonl",
                                 ("start", 0), ("finished", 900))
    for run, seconds in zip(control.pretrain + first.pretrain, (1800, 1800, 36000, 36000)):
        fixtures.write_train_log(tmp_path / run / "train_log.jsonl", ("start", 0),
                                 ("finished", seconds))
    rows = [r for r in real_data_table.table(tmp_path).splitlines() if "ep re-run" in r]
    assert [r.split(" | ")[1] for r in rows] == [f"JLML {m.label}"
                                                 for m in (control, pairs, weight5, batch64,
                                                           rate0025, epochs48)]
    assert "| 28.0 ± 1.0 |" in rows[0] and "| 31.0 ± 1.0 |" in rows[1]
    assert "| 36.0 ± 1.0 |" in rows[2] and "| 40.0 ± 1.0 |" in rows[3]
    assert "| 41.0 ± 1.0 |" in rows[4] and "| 42.0 ± 1.0 |" in rows[5]
    assert all(r.endswith("| 1.25 |") for r in rows)  # 2 x 0.5 h pre-training, 0.25 h


def test_lomo_fused_rows_follow_their_model_fine_tuned_and_by_direct_transfer(tmp_path):
    model = real_data_table.camera_groups_continued_for_viper_grid(
        "viper", "paper_width_camera_groups_continue_12ep_viper_ft", width="paper")
    assert model in real_data_table.BENCHMARKS[4][2]  # the VIPeR row set
    _results(tmp_path / model.run / "results_cbn-train.json", "JLML l2", 0.24)
    _results(tmp_path / model.run / "results_xqda_lomo-none_cbn-train.json", "fused", 0.45)
    _results(tmp_path / model.transfer, "JLML l2", 0.18)
    _results(tmp_path / model.transfer.replace("results_transfer",
                                               "results_transfer_xqda_lomo-none"), "fused", 0.41)
    rows = [r for r in real_data_table.table(tmp_path).splitlines()
            if r.startswith("| VIPeR") and "| JLML paper width, camera groups, 12 + 12 ep |" in r]
    assert [r.split(" | ")[2] for r in rows] == [
        "fine-tuned, L2 per camera", "fine-tuned, XQDA on its features and LOMO's per camera",
        "direct transfer, L2 per camera",
        "direct transfer, XQDA on its features and LOMO's per camera"]
    assert [r.split(" | ")[4] for r in rows] == ["24.0 ± 1.0", "45.0 ± 1.0", "18.0 ± 1.0",
                                                 "41.0 ± 1.0"]


def test_a_camera_group_model_of_an_unknown_width_is_refused():
    with pytest.raises(ValueError, match="width='paper_width'"):
        real_data_table.camera_groups(("pretrain",), "transfer", "12", width="paper_width")


def test_a_second_seed_and_a_longer_fine_tuning_are_named_in_the_model_column():
    assert real_data_table.camera_groups_for_viper_grid("grid", seed=1).label \
        == "half width, camera groups, 6 ep, seed 1"
    assert real_data_table.camera_groups_for_viper_grid("grid").label \
        == "half width, camera groups, 6 ep"
    assert real_data_table.CAMERA_GROUPS_JOINT_CUHK01_FT8.label.endswith("joint stage, 8-ep fine-tuning")


def test_the_readme_table_is_the_committed_results_table():
    """The README quotes `python benchmarks/real_data_table.py` on results/: regenerate it after
    adding results."""
    root = pathlib.Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text().splitlines()
    table = real_data_table.table(root / "results").splitlines()
    start = readme.index(table[0])
    assert readme[start:start + len(table) + 1] == table + [""]  # the whole table, no stale row
