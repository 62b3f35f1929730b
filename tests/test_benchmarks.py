"""benchmarks/run.py: exact FLOP arithmetic, timing windows on a fake clock, flags, and the
report files of a seconds-long run. No timing figure is asserted."""
import json

import pytest

from conftest import load_benchmark


speed = load_benchmark("speed")
run = load_benchmark("run")


# -- pure helpers ------------------------------------------------------------------------------


def test_flop_arithmetic_exact():
    assert speed.training_gflops(10.0, 1_000_000_000) == 60.0  # 10 x 3 x 1e9 x 2
    assert speed.inference_gflops(10.0, 1_500_000_000) == 30.0  # 10 x 1.5e9 x 2
    assert speed.training_gflops(32.0, 1_430_000_000) == pytest.approx(274.56)
    assert speed.matmul_flops(2048) == 17_179_869_184
    assert speed.percent_of(50.0, 200.0) == 25.0
    assert speed.percent_of(None, 200.0) is None and speed.percent_of(1.0, 0.0) is None
    assert speed.ratio(3.0, 2.0) == 1.5 and speed.ratio(3.0, None) is None
    assert speed.POLICY_DTYPE == {"float32": "float32", "mixed_bfloat16": "bfloat16",
                                  "mixed_float16": "float16"}


class FakeClock:
    """A clock that only the step moves: every step takes `step_s` seconds."""

    def __init__(self, step_s):
        self.now, self.step_s, self.calls = 0.0, step_s, 0

    def __call__(self):
        return self.now

    def step(self):
        self.now += self.step_s
        self.calls += 1


def test_measure_windows_exclude_warmup():
    clock = FakeClock(0.5)
    t = speed.measure(clock.step, items_per_step=4, warmup=2, steps=3, windows=3, clock=clock)
    assert clock.calls == 2 + 9
    assert t.window_rates == [8.0, 8.0, 8.0]  # 3 steps x 4 items / 1.5 s
    assert t.rate == 8.0 and t.timed_steps == 9 and t.timed_seconds == 4.5
    assert t.warmup_steps == 2 and t.warmup_seconds == 1.0 and not t.budget_limited


def test_measure_min_window_seconds():
    clock = FakeClock(0.5)
    t = speed.measure(clock.step, 4, warmup=0, steps=1, windows=2, min_window_s=1.2, clock=clock)
    assert t.timed_steps == 6 and t.window_rates == [8.0, 8.0]  # 3 steps reach 1.5 s >= 1.2 s


def test_measure_median_of_windows():
    durations = iter([1.0, 2.0, 4.0])  # one step per window
    clock = FakeClock(0.0)

    def step():
        clock.now += next(durations)

    t = speed.measure(step, 8, warmup=0, steps=1, windows=3, clock=clock)
    assert t.window_rates == [8.0, 4.0, 2.0] and t.rate == 4.0


def test_measure_budget_shortens_slow_cases():
    clock = FakeClock(10.0)
    t = speed.measure(clock.step, 2, warmup=3, steps=5, windows=3, min_window_s=30.0,
                      budget_s=15.0, clock=clock)
    # warm-up stops after 2 steps (20 s > 15 s); one step per window (3 x 10 s > 15 s);
    # min_window_s is capped at 15 / 3 = 5 s
    assert t.warmup_steps == 2 and t.timed_steps == 3 and t.budget_limited
    assert t.window_rates == [0.2, 0.2, 0.2]


def test_budget_steps():
    assert speed.budget_steps(5, 3, 2.0, None) == 5
    assert speed.budget_steps(5, 3, 2.0, 120.0) == 5  # 15 steps x 2 s fit
    assert speed.budget_steps(5, 3, 10.0, 120.0) == 4  # int(120 / 30)
    assert speed.budget_steps(5, 3, 100.0, 120.0) == 1  # never below one


def test_markdown_table():
    columns = [speed.Column("A", "a", "{:.1f}"), speed.Column("B", "b"),
               speed.Column("C", "c", lambda v: "on" if v else "off")]
    text = speed.markdown_table([{"a": 1.26, "b": None, "c": True}], columns)
    assert text == "| A | B | C |\n|---|---|---|\n| 1.3 | n/a | on |"


def test_parse_flags():
    assert run.parse_size("224x96") == (224, 96)
    for bad in ("224", "ax96", "0x96"):
        with pytest.raises(ValueError):
            run.parse_size(bad)
    full = run.parse_args([])
    assert full.input_sizes == [(160, 64), (224, 96)] and full.batch_size == 32
    assert full.inference_batches == [32, 1] and full.sections == list(run.SECTIONS)
    quick = run.parse_args(["--quick", "--batch_size=8", "--sections=machine,evaluation",
                            "--budget_s=0"])
    assert quick.input_sizes == [(64, 32)] and quick.batch_size == 8  # explicit flags win
    assert quick.sections == ["machine", "evaluation"] and quick.budget_s is None
    with pytest.raises(ValueError, match="unknown"):
        run.parse_args(["--precisions=float64"])


def test_training_variants():
    all3, xla = ["float32", "mixed_bfloat16", "mixed_float16"], ["float32"]
    assert run.training_variants(all3, xla, True, True) == [
        ("float32", False, False), ("float32", False, True), ("float32", True, True),
        ("mixed_bfloat16", False, True), ("mixed_float16", False, True)]
    assert run.training_variants(all3, [], False, None) == [
        ("float32", False, None), ("mixed_bfloat16", False, None), ("mixed_float16", False, None)]


def test_fastest_float32_training_and_tile():
    rows = [{"model": "JLML", "precision": "float32", "input": "64x32", "images_per_s": 3.0},
            {"model": "JLML", "precision": "float32", "input": "64x32", "images_per_s": 5.0},
            {"model": "JLML", "precision": "mixed_bfloat16", "input": "64x32",
             "images_per_s": 9.0},
            {"model": "ResNet50", "precision": "float32", "input": "64x32", "images_per_s": 9.0}]
    assert run.fastest_float32_training(rows, "64x32") == 5.0
    assert run.fastest_float32_training(rows, "224x96") is None
    import numpy as np

    assert run.tile_batch(np.arange(3), 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert run.tile_batch(np.arange(3), 2).tolist() == [0, 1]


# -- the command ------------------------------------------------------------------------------


def test_command_writes_json_and_markdown_for_the_sections_asked(tmp_path):
    """The report plumbing on the one section that takes seconds (the others build the paper's
    model, ResNet50 and TFLite models; `python benchmarks/run.py --quick` runs them all)."""
    report = run.main(["--quick", "--sections=machine", f"--out_dir={tmp_path}",
                       "--matmul_size=64", "--matmul_repeats=1"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["command"] == report["command"] == (
        f"python benchmarks/run.py --quick --sections=machine --out_dir={tmp_path} "
        "--matmul_size=64 --matmul_repeats=1")
    assert saved["settings"]["quick"] and saved["settings"]["sections"] == ["machine"]
    assert saved["settings"]["input_sizes"] == ["64x32"]
    assert list(saved["sections"]) == ["machine"]
    machine = saved["sections"]["machine"]
    assert machine["columns"] == ["item", "value"]  # Column objects kept as their headers
    items = [row["item"] for row in machine["rows"]]
    assert items == ["CPU", "instruction sets", "cores usable / online", "TensorFlow / Keras",
                     "load average at start"] + [
        f"matmul peak {dtype} (64x64), GFLOP/s" for dtype in ("float32", "bfloat16", "float16")]
    assert set(machine["peaks"]) == {"float32", "bfloat16", "float16"}
    assert all(p["n"] == 64 and len(p["window_gflops"]) == 1 for p in machine["peaks"].values())
    markdown = (tmp_path / "results.md").read_text()
    assert markdown.startswith("# JLML benchmarks (")
    assert "(quick: tiny sizes, figures not meaningful)" in markdown
    assert "## Machine\n\n| item | value |\n|---|---|\n| CPU | " in markdown
