"""jlml_tf.evaluation.paired: the paired difference and its t interval, by hand; the results
file reader, benchmarks/paired.py and benchmarks/per_split.py on hand-made files."""
import json
import math

import pytest

from conftest import load_benchmark
from jlml_tf.evaluation.paired import paired_difference
from jlml_tf.evaluation.report import read_trials


def test_paired_difference_and_its_t_interval_by_hand():
    better = {"trial0": {"rank1": 0.30}, "trial1": {"rank1": 0.34}, "trial2": {"rank1": 0.32}}
    worse = {"trial0": {"rank1": 0.25}, "trial1": {"rank1": 0.27}, "trial2": {"rank1": 0.28},
             "trial7": {"rank1": 0.99}}  # not shared: ignored
    d = paired_difference(better, worse)
    # differences 5, 7, 4 points: mean 16/3, sd sqrt(7/3), t(0.975, 2) = 4.303
    half = 4.302653 * math.sqrt(7 / 3) / math.sqrt(3)  # t(0.975, df=2)
    assert d["splits"] == ["trial0", "trial1", "trial2"]
    assert d["differences"] == [pytest.approx(5), pytest.approx(7), pytest.approx(4)]
    assert d["mean"] == pytest.approx(16 / 3)
    assert (d["low"], d["high"]) == (pytest.approx(16 / 3 - half), pytest.approx(16 / 3 + half))
    assert d["low"] > 0  # 5.33 - 3.80
    assert paired_difference(better, {"trial0": {"rank1": 0.1}}) is None  # one shared split
    wide = paired_difference(better, worse, confidence=0.995)  # t(0.9975, df=2) = 14.089
    assert wide["high"] - wide["mean"] == pytest.approx(14.0890 * math.sqrt(7 / 3) / math.sqrt(3), rel=1e-4)
    assert wide["low"] < 0 < wide["high"]


def _results_file(path, rank1s, names=None, methods=("method",)):
    trials = [{"rank1": r, "map": r / 2} for r in rank1s]
    document = {"extra": {"trials": names} if names else None,  # None: as write_report writes it
                "results": {m: {"trials": trials} for m in methods}}
    path.write_text(json.dumps(document))
    return path


def test_read_trials_names_trials_as_the_file_does_or_by_position(tmp_path):
    named = read_trials(_results_file(tmp_path / "a.json", [0.3, 0.4], ["split0", "split1"]))
    assert named == {"split0": {"rank1": 0.3, "map": 0.15}, "split1": {"rank1": 0.4, "map": 0.2}}
    assert list(read_trials(_results_file(tmp_path / "b.json", [0.3, 0.4]))) == ["trial0", "trial1"]


def test_read_trials_names_the_file_it_cannot_read(tmp_path):
    with pytest.raises(ValueError, match=r"c.json: 2 methods \(a, b\); expected one"):
        read_trials(_results_file(tmp_path / "c.json", [0.3], methods=("a", "b")))
    with pytest.raises(ValueError, match="d.json: 1 trial names for 2 trials"):
        read_trials(_results_file(tmp_path / "d.json", [0.3, 0.4], ["split0"]))


def test_paired_cli_reports_each_metric_and_each_trial(tmp_path, capsys):
    first = _results_file(tmp_path / "first.json", [0.30, 0.34, 0.32])
    second = _results_file(tmp_path / "second.json", [0.25, 0.27, 0.28, 0.99])
    assert load_benchmark("paired").main([str(first), str(second)]) == 0
    rank1, map_ = capsys.readouterr().out.splitlines()
    assert rank1 == "rank1: +5.3 [+1.5, +9.1] over 3 trials (+5.0 +7.0 +4.0); 32.0 against 26.7 on them"
    assert map_.startswith("map: +2.7 [")


def test_paired_cli_leaves_out_excluded_trials(tmp_path, capsys):
    """Without trial0: differences 7 and 4, mean 5.5, standard error 1.5, t(0.975, 1) = 12.71."""
    first = _results_file(tmp_path / "first.json", [0.30, 0.34, 0.32])
    second = _results_file(tmp_path / "second.json", [0.25, 0.27, 0.28])
    paired_cli = load_benchmark("paired")
    assert paired_cli.main([str(first), str(second), "--exclude=trial0", "--keys=rank1"]) == 0
    assert capsys.readouterr().out == \
        "rank1: +5.5 [-13.6, +24.6] over 2 trials (+7.0 +4.0); 33.0 against 27.5 on them\n"
    with pytest.raises(SystemExit):
        paired_cli.main([str(first), str(second), "--exclude=split9"])
    assert "--exclude: ['split9']" in capsys.readouterr().err


def test_paired_cli_names_a_missing_file_or_metric(tmp_path, capsys):
    first = _results_file(tmp_path / "first.json", [0.3, 0.4])
    paired_cli = load_benchmark("paired")
    with pytest.raises(SystemExit):
        paired_cli.main([str(first), str(tmp_path / "nothing.json")])
    assert "nothing.json: no such results file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        paired_cli.main([str(first), str(first), "--keys=rank1,minp"])
    assert "['minp']" in capsys.readouterr().err
    other = _results_file(tmp_path / "other.json", [0.3, 0.4], ["split0", "split1"])
    with pytest.raises(SystemExit):
        paired_cli.main([str(first), str(other)])
    assert "share 0 trials" in capsys.readouterr().err


def test_paired_cli_reads_one_readout_of_a_readouts_file(tmp_path, capsys):
    readouts = {"run_dir": "runs/x", "per_trial": {
        f"trial{i}": {"deployed: both": {"rank1": r, "map": r}, "global branch": {"rank1": 0.0, "map": 0.0}}
        for i, r in enumerate([0.25, 0.27, 0.28])}}
    path = tmp_path / "readouts.json"
    path.write_text(json.dumps(readouts))
    first = _results_file(tmp_path / "first.json", [0.30, 0.34, 0.32])
    paired_cli = load_benchmark("paired")
    assert paired_cli.main([str(first), f"{path}#deployed"]) == 0
    assert capsys.readouterr().out.startswith("rank1: +5.3 [+1.5, +9.1] over 3 trials")
    with pytest.raises(SystemExit):
        paired_cli.main([str(first), f"{path}#"])  # empty prefix: every readout matches
    with pytest.raises(SystemExit):
        paired_cli.main([str(first), f"{path}#local"])
    assert "readouts.json#local: 0 readouts start with 'local'" in capsys.readouterr().err


def test_per_split_tables_the_splits_every_file_has(tmp_path, capsys):
    a = _results_file(tmp_path / "a.json", [0.30, 0.34, 0.32])
    b = _results_file(tmp_path / "b.json", [0.25, 0.27, 0.28, 0.99])  # trial3: not in a
    assert load_benchmark("per_split").main([f"model A={a}", f"B={b}", "--key=map"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "| | trial0 | trial1 | trial2 | mean |",
        "|---|---|---|---|---|",
        "| model A | 15.0 | 17.0 | 16.0 | 16.0 |",
        "| B | 12.5 | 13.5 | 14.0 | 13.3 |"]


def test_per_split_labels_may_hold_equals_and_bars_and_plot_from_the_command(tmp_path, capsys):
    a = _results_file(tmp_path / "a.json", [0.30, 0.34])
    png = tmp_path / "p.png"
    assert load_benchmark("per_split").main([f"k=1 | L2={a}", f"--plot={png}"]) == 0
    assert capsys.readouterr().out.splitlines()[2] == r"| k=1 \| L2 | 30.0 | 34.0 | 32.0 |"
    assert png.stat().st_size > 0


def test_per_split_plot_draws_one_line_per_file(tmp_path):
    per_split = load_benchmark("per_split")
    values = {"A": [30.0, 34.0], "B": [25.0, 27.0]}
    figure = per_split.plot(["trial0", "trial1"], values, "rank1", tmp_path / "sub" / "p.png")
    assert (tmp_path / "sub" / "p.png").stat().st_size > 0
    lines = figure.axes[0].lines
    assert [list(line.get_ydata()) for line in lines] == [[30.0, 34.0], [25.0, 27.0]]
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == [
        "A (mean 32.0)", "B (mean 26.0)"]


def test_per_split_names_a_bad_argument_file_or_metric(tmp_path, capsys):
    per_split = load_benchmark("per_split")
    a = _results_file(tmp_path / "a.json", [0.30, 0.34])
    other = _results_file(tmp_path / "other.json", [0.1, 0.2, 0.3, 0.4], ["s0", "s1", "s2", "s3"])
    with_cmc = tmp_path / "cmc.json"  # a curve, not a number
    with_cmc.write_text(json.dumps({"results": {"m": {"trials": [{"rank1": 0.3, "cmc": [0.3, 0.5]}]}}}))
    for argv, message in (([str(a)], "expected LABEL=FILE"),
                          ([f"A={tmp_path / 'gone.json'}"], "gone.json: no such results file"),
                          ([f"A={a}", f"A={a}"], "label 'A' given twice"),
                          ([f"A={a}", f"B={other}"],
                           "the files share no split: A has trial0, trial1; B has s0, s1, s2, ..."),
                          ([f"A={a}", "--key=mINP"], "--key=mINP: A has no number 'mINP' in trial0, trial1"),
                          ([f"C={with_cmc}", "--key=cmc"], "--key=cmc: C has no number 'cmc' in trial0")):
        with pytest.raises(SystemExit):
            per_split.main(argv)
        assert message in capsys.readouterr().err
