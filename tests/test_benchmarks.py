"""benchmarks/run.py: exact FLOP arithmetic and timing windows, and a --quick run whose JSON has
every section with self-consistent columns. No timing figure is asserted."""
import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT


def _load(name):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}",
                                                  PROJECT_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


speed = _load("speed")
run = _load("run")


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


# -- the quick run -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # float16 conv gradients are very slow on CPUs and XLA compiles for a minute: the suite
    # checks the table logic on the two fast precisions; the full benchmark measures all.
    proc = subprocess.run([sys.executable, "benchmarks/run.py", "--quick", f"--out_dir={out}",
                           "--precisions=float32,mixed_bfloat16", "--xla_precisions="],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text(), proc


def _approx(value):
    return pytest.approx(value, rel=1e-9)


@pytest.mark.slow
def test_quick_run_has_every_section(quick_run):
    report, markdown, proc = quick_run
    assert list(report["sections"]) == list(run.SECTIONS)
    for section in report["sections"].values():
        assert section["rows"], section["title"]
        assert f"## {section['title']}" in markdown and f"## {section['title']}" in proc.stdout
    peaks = report["sections"]["machine"]["peaks"]
    assert set(peaks) == {"float32", "bfloat16", "float16"}
    assert all(p["gflops"] > 0 for p in peaks.values())
    for name in ("training", "inference", "pipeline"):
        assert all(r["images_per_s"] > 0 for r in report["sections"][name]["rows"]), name
    assert all(r["best_s"] > 0 and r["median_s"] >= r["best_s"]
               for r in report["sections"]["evaluation"]["rows"])
    # progress: one stderr line per measurement
    assert proc.stderr.count("[training]") == len(report["sections"]["training"]["rows"])
    assert proc.stderr.count("[inference] JLML") + proc.stderr.count("[inference] ResNet50") \
        == len(report["sections"]["inference"]["rows"])


def _expected_macs(height, width, num_classes):
    import keras

    from jlml_tf.config import ModelConfig
    from jlml_tf.model_summary import count_macs
    from jlml_tf.modeling import jlml

    training_model, embedding = jlml.build_jlml(
        ModelConfig(input_height=height, input_width=width, num_classes=num_classes))
    macs = {"JLML train": count_macs(training_model),
            "JLML embed": count_macs(jlml.with_l2_normalization(embedding))}
    macs["ResNet50 train"] = count_macs(keras.applications.ResNet50(
        weights=None, input_shape=(height, width, 3), classes=num_classes))
    macs["ResNet50 embed"] = count_macs(keras.applications.ResNet50(
        weights=None, include_top=False, pooling="avg", input_shape=(height, width, 3)))
    keras.backend.clear_session()
    return macs


@pytest.mark.slow
def test_quick_run_training_columns_consistent(quick_run):
    report = quick_run[0]
    settings, rows = report["settings"], report["sections"]["training"]["rows"]
    peaks = report["sections"]["machine"]["peaks"]
    assert settings["input_sizes"] == ["64x32"]
    macs = _expected_macs(64, 32, settings["num_classes"])
    resnet = {r["input"]: r for r in rows if r["model"] == "ResNet50"}
    assert set(resnet) == {"64x32"} and resnet["64x32"]["precision"] == "float32"
    jlml_rows = [r for r in rows if r["model"] == "JLML"]
    assert {r["precision"] for r in jlml_rows} == set(settings["precisions"])
    assert not any(r["xla"] for r in jlml_rows)  # the quick run above asks for no XLA row
    if run.has_fused_batch_norm():
        assert {r["batch_norm"] for r in jlml_rows
                if r["precision"] == "float32" and not r["xla"]} == {"plain Keras", "fused"}
    for r in rows:
        assert r["macs"] == macs[f"{r['model']} train"]
        assert r["batch"] == settings["batch_size"]
        assert r["gflops"] == _approx(r["images_per_s"] * 3 * r["macs"] * 2 / 1e9)
        assert r["peak_dtype"] == {"float32": "float32", "mixed_bfloat16": "bfloat16",
                                   "mixed_float16": "float16"}[r["precision"]]
        assert r["peak_gflops"] == peaks[r["peak_dtype"]]["gflops"]
        assert r["percent_of_peak"] == _approx(100 * r["gflops"] / r["peak_gflops"])
        assert r["relative_to_resnet50"] == _approx(r["gflops"] / resnet[r["input"]]["gflops"])
        assert r["loss_finite"]
        assert r["timing"]["rate"] == r["images_per_s"]


@pytest.mark.slow
def test_quick_run_inference_columns_consistent(quick_run):
    report = quick_run[0]
    settings, rows = report["settings"], report["sections"]["inference"]["rows"]
    peak = report["sections"]["machine"]["peaks"]["float32"]["gflops"]
    macs = _expected_macs(64, 32, settings["num_classes"])
    formats = {(r["model"], r["format"]) for r in rows}
    assert formats == {("JLML", "Keras (tf.function)"), ("JLML", "SavedModel"),
                       ("JLML", "TFLite float32"), ("JLML", "TFLite int8"),
                       ("ResNet50", "Keras (tf.function)")}
    reference = {r["batch"]: r for r in rows if r["model"] == "ResNet50"}
    assert sorted(reference) == sorted(settings["inference_batches"])
    for r in rows:
        assert r["macs"] == macs[f"{r['model']} embed"]
        assert r["gflops"] == _approx(r["images_per_s"] * r["macs"] * 2 / 1e9)
        assert r["ms_per_image"] == _approx(1000 / r["images_per_s"])
        assert r["percent_of_peak"] == _approx(100 * r["gflops"] / peak)
        assert r["relative_to_resnet50"] == _approx(r["gflops"] / reference[r["batch"]]["gflops"])


@pytest.mark.slow
def test_quick_run_pipeline_ratio_consistent(quick_run):
    report = quick_run[0]
    rows = report["sections"]["pipeline"]["rows"]
    assert [(r["input"], r["cache_decoded"]) for r in rows] == [("64x32", False), ("64x32", True)]
    training = max(r["images_per_s"] for r in report["sections"]["training"]["rows"]
                   if r["model"] == "JLML" and r["precision"] == "float32")
    for r in rows:
        assert r["training_images_per_s"] == training
        assert r["ratio"] == _approx(r["images_per_s"] / training)
        assert r["goal_met"] == (r["ratio"] >= 5.0)
