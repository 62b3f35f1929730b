"""benchmarks/data_scaling.py: pre-training runs and their transfer files -> the scaling table."""
import json

import numpy as np
import pytest

from conftest import load_benchmark
from jlml_tf.evaluation import report

data_scaling = load_benchmark("data_scaling")


def _pretraining(results, name, identities, images, epochs, own_rank1, transfers):
    run = results / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({
        "data": {"dataset": "cuhk03", "train_identities": identities, "train_images": images},
        "train": {"batch_size": 32, "epochs": epochs, "init_from": None}}))
    steps = images // 32 * epochs  # as the trainer runs them, in two segments
    (run / "train_log.jsonl").write_text("\n".join(json.dumps(e) for e in [
        {"event": "start", "step": 0}, {"event": "interrupted", "step": steps // 2},
        {"event": "start", "step": steps // 2}, {"event": "finished", "step": steps}]) + "\n")
    report.write_report(run, {"JLML": [{"rank1": own_rank1, "cmc": [own_rank1, 1.0]}]})
    for target, ranks in transfers.items():
        out = results / f"{name}-{target}"
        out.mkdir()
        document = {"results": {"JLML l2": {"trials": [{"rank1": r} for r in ranks]}}}
        (out / "results_transfer.json").write_text(json.dumps(document))


def test_points_slopes_and_files(tmp_path):
    results = tmp_path / "scaling"
    # R1 on viper rises 4 points per doubling: 10, 14, 18 at 100, 200, 400 identities.
    _pretraining(results, "f100", 400, 3210, 2, 0.30, {"viper": [0.17, 0.19], "grid": [0.1]})
    _pretraining(results, "f25", 100, 800, 8, 0.20, {"viper": [0.09, 0.11]})
    _pretraining(results, "f50", 200, 1600, 4, 0.25, {"viper": [0.14, 0.14]})
    fine_tuned = results / "f50-viper_ft"  # a run fine-tuned from f50: its results.json
    report.write_report(fine_tuned, {"JLML": [{"rank1": 0.2, "cmc": [0.2, 1.0]},
                                              {"rank1": 0.3, "cmc": [0.3, 1.0]}]})
    (results / "f25-empty").mkdir()  # nothing scored there: no column
    one_trial_ft = results / "f100-market_ft"  # fine-tuned, one trial: a column, not a point
    report.write_report(one_trial_ft, {"JLML": [{"rank1": 0.5, "cmc": [0.5, 1.0]}]})
    (one_trial_ft / "config.json").write_text(json.dumps({
        "data": {"train_identities": 751, "train_images": 12936},
        "train": {"batch_size": 32, "epochs": 4, "init_from": "runs/scaling/f100"}}))
    points = data_scaling.read_points(results)
    assert [p["run"] for p in points] == ["f25", "f50", "f100"]  # by identities
    assert [p["images_seen"] for p in points] == [800 * 8 // 32 * 32, 1600 * 4, 3200 * 2]
    assert points[0]["r1"]["viper"] == pytest.approx((10.0, 1.0, 2))
    assert points[2]["r1"]["cuhk03 (own test split)"][0] == pytest.approx(30.0)
    assert data_scaling.slope_per_doubling(points, "viper") == pytest.approx(4.0)
    assert points[1]["r1"]["viper_ft"] == pytest.approx((25.0, 5.0, 2))
    assert points[2]["r1"]["market_ft"] == pytest.approx((50.0, 0.0, 1))
    assert data_scaling.slope_per_doubling(points, "grid") is None  # one point only
    table = data_scaling.markdown(points)
    assert "| f25 | 100 | 6,400 | 20.0 ± 0.0 | - | - | 10.0 ± 1.0 | - |" in table
    assert table.rstrip().endswith("| +5.0 | - | - | +4.0 | - |")
    assert data_scaling.main([f"--results={results}", f"--out={tmp_path / 'curve'}"]) == 0
    saved = json.loads((tmp_path / "curve.json").read_text())
    assert saved["r1_per_doubling"]["viper"] == pytest.approx(4.0)
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_no_runs_is_an_error_naming_the_folder(tmp_path):
    with pytest.raises(SystemExit, match=str(tmp_path)):
        data_scaling.main([f"--results={tmp_path}"])
