"""Paired difference between two results files on the trials (splits) both have.

    python benchmarks/paired.py results/cpu-paper_width-cuhk01_485_486_single/results.json \
        results/cpu-cuhk01_485_486_single/results.json

Prints, per metric, the mean difference first - second in percentage points with its 95 % t
interval (jlml_tf/evaluation/paired.py), and each trial's difference.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from jlml_tf.evaluation.paired import paired_difference, per_trial  # noqa: E402


def report(first: dict[str, dict], second: dict[str, dict], keys: list[str],
           confidence: float) -> str:
    lines = []
    for key in keys:
        d = paired_difference(first, second, key, confidence)
        if d is None:
            lines.append(f"{key}: fewer than two shared trials")
            continue
        each = " ".join(f"{100 * (first[s][key] - second[s][key]):+.1f}" for s in d["splits"])
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
    for path in (args.first, args.second):
        if not path.is_file():
            parser.error(f"{path}: no such results file")
    first, second = per_trial(args.first), per_trial(args.second)
    keys = args.keys.split(",")
    missing = [k for k in keys if any(k not in t for t in list(first.values()) + list(second.values()))]
    if missing:
        parser.error(f"--keys: {missing} not in every trial of both files")
    print(report(first, second, keys, args.confidence))
    return 0


if __name__ == "__main__":
    sys.exit(main())
