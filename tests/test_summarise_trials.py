"""benchmarks/summarise_trials.py: per-trial evaluation files -> the run's summary."""
import json

import numpy as np
import pytest

from conftest import load_benchmark
from jlml_tf import evaluate as ev

summarise_trials = load_benchmark("summarise_trials")


def _trial(run, name, rank1, method="JLML xqda_map"):
    result = {"rank1": rank1, "map": rank1 / 2, "cmc": [rank1, 1.0]}
    ev.write_results(run / name, "_xqda_map", {method: [result]},
                     title=f"d / p / trial{int(name[-2:])}")


def test_summary_is_the_mean_and_std_over_the_trials_files(tmp_path):
    for name, rank1 in (("trial_00", 0.5), ("trial_01", 0.6), ("trial_02", 0.7)):
        _trial(tmp_path, name, rank1)
    assert summarise_trials.main([f"--run_dir={tmp_path}", "--suffix=xqda_map"]) == 0
    document = json.loads((tmp_path / "results_xqda_map.json").read_text())
    entry = document["results"]["JLML xqda_map"]
    assert entry["num_trials"] == 3 and document["title"] == "d / p"
    assert entry["mean"]["rank1"] == pytest.approx(0.6)
    assert entry["std"]["rank1"] == pytest.approx(np.std([0.5, 0.6, 0.7]))
    assert document["extra"]["trials"] == ["trial0", "trial1", "trial2"]  # as the files name them


def test_refuses_missing_or_mixed_files(tmp_path, capsys):
    with pytest.raises(SystemExit):
        summarise_trials.main([f"--run_dir={tmp_path}", "--suffix=_xqda_map"])
    assert "no trial_NN/results_xqda_map.json" in capsys.readouterr().err
    _trial(tmp_path, "trial_00", 0.5)
    _trial(tmp_path, "trial_01", 0.5, method="JLML l2")
    with pytest.raises(SystemExit):
        summarise_trials.main([f"--run_dir={tmp_path}", "--suffix=_xqda_map"])
    assert "different methods" in capsys.readouterr().err
