"""Measuring helpers for benchmarks/run.py: timed windows, the matmul peak, FLOP arithmetic and
Markdown tables. Nothing here builds a model; TensorFlow is imported only by `matmul_peak`.

FLOP conventions (one multiply-add = 2 FLOPs, multiply-adds counted by
`jlml_tf.model_summary.count_macs` over conv and dense layers):
- training:  FLOP/s = images/s x 3 x forward multiply-adds x 2 (forward + two backward passes)
- inference: FLOP/s = images/s x forward multiply-adds x 2
- an n x n by n x n matmul: 2 n^3 FLOPs
"""
from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from typing import Any, Callable, Sequence

# The dtype the convolutions and matmuls of a Keras precision policy run in.
POLICY_DTYPE = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}

# ----------------------------------------------------------------------------------------------
# FLOP arithmetic


def training_gflops(images_per_s: float, forward_macs: int) -> float:
    """GFLOP/s of training at `images_per_s`: forward + backward = 3 forward passes."""
    return images_per_s * 3 * forward_macs * 2 / 1e9


def inference_gflops(images_per_s: float, forward_macs: int) -> float:
    return images_per_s * forward_macs * 2 / 1e9


def matmul_flops(n: int) -> int:
    """FLOPs of one [n, n] x [n, n] matrix product."""
    return 2 * n ** 3


def percent_of(value: float | None, reference: float | None) -> float | None:
    """100 * value / reference, or None when either is missing (or the reference is 0)."""
    if value is None or not reference:
        return None
    return 100.0 * value / reference


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


# ----------------------------------------------------------------------------------------------
# Timing


@dataclasses.dataclass
class Timing:
    """Throughput over several timed windows (warm-up excluded); `rate` is their median."""

    rate: float  # items/s, median over windows
    window_rates: list[float]  # items/s of each window
    timed_steps: int
    timed_seconds: float
    warmup_steps: int
    warmup_seconds: float  # the warm-up steps (tracing, compilation, caches), not in `rate`
    budget_limited: bool = False  # fewer steps than asked, to keep within the time budget

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def budget_steps(steps: int, windows: int, step_seconds: float, budget_s: float | None) -> int:
    """Steps per window: `steps`, lowered (to 1 at least) so `windows` windows of steps taking
    `step_seconds` each fit in `budget_s` seconds (None: no budget)."""
    if budget_s is None or step_seconds <= 0:
        return steps
    return max(1, min(steps, int(budget_s / (windows * step_seconds))))


def measure(step: Callable[[], Any], items_per_step: int, warmup: int, steps: int, windows: int,
            min_window_s: float = 0.0, budget_s: float | None = None,
            clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Runs `step` `warmup` times untimed, then `windows` timed windows of at least `steps`
    calls and at least `min_window_s` seconds each; returns items/s per window and their median.
    `step` must return only when its work is done (fetch a result to the host).

    `budget_s` bounds slow cases: the warm-up stops once it has run 2 steps and `budget_s`
    seconds, and the timed windows shrink to fewer steps (1 at least) and at most
    `budget_s / windows` seconds each when the last warm-up step says they would take longer.
    """
    if steps < 1 or windows < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1, windows >= 1, warmup >= 0; got {steps}, {windows}, "
                         f"{warmup}")
    start = clock()
    last, done = 0.0, 0
    for done in range(1, warmup + 1):
        tick = clock()
        step()
        last = clock() - tick
        if budget_s is not None and done >= 2 and clock() - start > budget_s:
            break
    warmup_seconds = clock() - start
    per_window = budget_steps(steps, windows, last, budget_s)
    if budget_s is not None:
        min_window_s = min(min_window_s, budget_s / windows)
    rates, total_steps, total_seconds = [], 0, 0.0
    for _ in range(windows):
        count, begin = 0, clock()
        while True:
            step()
            count += 1
            elapsed = clock() - begin
            if count >= per_window and elapsed >= min_window_s:
                break
        rates.append(count * items_per_step / max(elapsed, 1e-12))
        total_steps += count
        total_seconds += elapsed
    return Timing(statistics.median(rates), rates, total_steps, total_seconds, done,
                  warmup_seconds, budget_limited=per_window < steps)


def matmul_peak(dtype: str, n: int, warmup: int = 2, repeats: int = 5) -> Timing:
    """GFLOP/s of tf.linalg.matmul on two [n, n] matrices of `dtype` in a tf.function
    (median over `repeats` single-product windows); `rate` is in GFLOP/s."""
    import tensorflow as tf

    a = tf.cast(tf.random.stateless_uniform([n, n], [1, 2], -1.0, 1.0), dtype)
    b = tf.cast(tf.random.stateless_uniform([n, n], [3, 4], -1.0, 1.0), dtype)

    @tf.function
    def product(x, y):
        # The sum (n^2 additions, negligible beside n^3) brings one scalar back to the host.
        return tf.reduce_sum(tf.cast(tf.linalg.matmul(x, y), tf.float32))

    return measure(lambda: product(a, b).numpy(), matmul_flops(n) / 1e9, warmup, 1, repeats)


# ----------------------------------------------------------------------------------------------
# Machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(wanted: Sequence[str] = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16",
                                       "amx_bf16", "amx_tile")) -> list[str]:
    """The instruction-set extensions of `wanted` this CPU reports (Linux only)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# ----------------------------------------------------------------------------------------------
# Tables


@dataclasses.dataclass
class Column:
    header: str
    key: str
    fmt: str | Callable[[Any], str] = "{}"


def format_cell(value: Any, fmt: str | Callable[[Any], str]) -> str:
    if value is None:
        return "n/a"
    return fmt(value) if callable(fmt) else fmt.format(value)


def markdown_table(rows: list[dict], columns: list[Column]) -> str:
    lines = ["| " + " | ".join(c.header for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(format_cell(row.get(c.key), c.fmt) for c in columns) + " |")
    return "\n".join(lines)
