"""Paired difference between two results files on the trials (splits) both have.

    python benchmarks/paired.py results/cpu-cuhk01_485_486_single/results_xqda.json \
        results/lomo_xqda/cuhk01_485_486_single_shot_none/results.json

Prints, per metric, the mean difference first - second in percentage points with its t interval
(jlml_tf/evaluation/paired.py, 95 % unless --confidence), each trial's difference and both
files' means on the shared trials. A file written by benchmarks/readouts.py is named with the
readout after a '#' (a prefix of its name):

    python benchmarks/paired.py results/cpu-paper_width-cuhk01_485_486_single/results.json \
        "results/recipe/cuhk01_test_time_readouts.json#deployed: both"

`--exclude=trial0` leaves trials out (e.g. one whose test results chose a setting).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from jlml_tf.evaluation.paired import format_difference, paired_difference  # noqa: E402
from jlml_tf.evaluation.report import read_trials  # noqa: E402


def read_readout(path: pathlib.Path, prefix: str) -> dict[str, dict]:
    """{trial: metrics} of the one readout whose name starts with `prefix` in a readouts.py file."""
    per_trial = json.loads(path.read_text())["per_trial"]
    names = {name for readouts in per_trial.values() for name in readouts if name.startswith(prefix)}
    if len(names) != 1:
        raise ValueError(f"{path}#{prefix}: {len(names)} readouts start with {prefix!r}; expected one")
    (name,) = names
    return {trial: readouts[name] for trial, readouts in per_trial.items() if name in readouts}


def read(spec: str) -> dict[str, dict]:
    path, hash_sign, readout = spec.partition("#")
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such results file")
    return read_readout(path, readout) if hash_sign else read_trials(path)


def report(first: dict[str, dict], second: dict[str, dict], keys: list[str],
           confidence: float) -> str:
    lines = []
    for key in keys:
        d = paired_difference(first, second, key, confidence)
        each = " ".join(f"{x:+.1f}" for x in d["differences"])
        means = [100 * sum(r[s][key] for s in d["splits"]) / len(d["splits"])
                 for r in (first, second)]  # the figures a comparison on the same splits quotes
        lines.append(f"{key}: {format_difference(d)} over {len(d['splits'])} trials ({each}); "
                     f"{means[0]:.1f} against {means[1]:.1f} on them")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", help="results.json, or a readouts.py file#readout")
    parser.add_argument("second")
    parser.add_argument("--keys", default="rank1,map", help="comma-separated metric names")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--exclude", default="", help="comma-separated trial names to leave out")
    args = parser.parse_args(argv)
    if not 0 < args.confidence < 1:
        parser.error(f"--confidence={args.confidence}: expected a fraction between 0 and 1")
    try:
        first, second = read(args.first), read(args.second)
    except ValueError as e:
        parser.error(str(e))
    excluded = {name for name in args.exclude.split(",") if name}
    unknown = excluded - set(first) - set(second)
    if unknown:
        parser.error(f"--exclude: {sorted(unknown)} not a trial of either file")
    first, second = ({k: v for k, v in r.items() if k not in excluded} for r in (first, second))
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
