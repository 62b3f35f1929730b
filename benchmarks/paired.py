"""Paired difference between two results files on the trials (splits) both have.

    python benchmarks/paired.py results/cpu-cuhk01_485_486_single/results_xqda.json \
        results/lomo_xqda/cuhk01_485_486_single_shot_none/results.json

Prints, per metric, the mean difference first - second in percentage points with its t interval
(jlml_tf/evaluation/paired.py, 95 % unless --confidence), and each trial's difference.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from jlml_tf.evaluation.paired import paired_difference  # noqa: E402
from jlml_tf.evaluation.report import read_trials  # noqa: E402


def report(first: dict[str, dict], second: dict[str, dict], keys: list[str],
           confidence: float) -> str:
    lines = []
    for key in keys:
        d = paired_difference(first, second, key, confidence)
        each = " ".join(f"{x:+.1f}" for x in d["differences"])
        lines.append(f"{key}: {d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}] over "
                     f"{len(d['splits'])} trials ({each})")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=pathlib.Path)
    parser.add_argument("second", type=pathlib.Path)
    parser.add_argument("--keys", default="rank1,map", help="comma-separated metric names")
    parser.add_argument("--confidence", type=float, default=0.95)
    args = parser.parse_args(argv)
    if not 0 < args.confidence < 1:
        parser.error(f"--confidence={args.confidence}: expected a fraction between 0 and 1")
    trials = []
    for path in (args.first, args.second):
        if not path.is_file():
            parser.error(f"{path}: no such results file")
        try:
            trials.append(read_trials(path))
        except ValueError as e:
            parser.error(str(e))
    first, second = trials
    shared = sorted(set(first) & set(second))
    if len(shared) < 2:
        parser.error(f"{args.first} and {args.second} share {len(shared)} trials; a paired "
                     "difference needs two")
    keys = args.keys.split(",")
    missing = [k for k in keys if any(k not in first[s] or k not in second[s] for s in shared)]
    if missing:
        parser.error(f"--keys: {missing} not in every shared trial of both files")
    print(report(first, second, keys, args.confidence))
    return 0


if __name__ == "__main__":
    sys.exit(main())
