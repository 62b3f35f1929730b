"""Each split's figure in several results files: a table and, with --plot, a chart.

    CHAIN=results/recipe/camera_bn_pooled_variance/camera_groups_continue_joint_cuhk01_871_100_ft_8ep
    python benchmarks/per_split.py "joint chain, L2=$CHAIN/results_cbn-train.json" \
        "joint chain, XQDA map=$CHAIN/results_xqda_map_cbn-train.json" \
        "LOMO + XQDA=results/lomo_xqda/cuhk01_871_100_single_shot_none/results.json" \
        --plot=results/recipe/cuhk01_871_100_per_split.png

Each argument is LABEL=FILE (the last '=' ends the label), FILE as benchmarks/paired.py reads
it (a results.json, or a readouts.py file#readout). Prints a Markdown table: one row per file,
its figure in percent (--key, rank1 unless told) on each split that every file has, and their
mean. --plot draws the same as one line per file over the splits, so one sees which splits
move together and where two models cross.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir))
sys.path.insert(0, HERE)

from paired import read  # noqa: E402  (the same files, the same readout#name syntax)


def parse(argument: str) -> tuple[str, str]:
    """LABEL=FILE -> (label, file); the label may hold '=', the file not."""
    label, equals, path = argument.rpartition("=")
    if not equals or not label or not path:
        raise ValueError(f"{argument!r}: expected LABEL=FILE")
    return label, path


def read_files(arguments: list[str]) -> dict[str, dict[str, dict]]:
    """{label: {split: metrics}} of LABEL=FILE arguments, in their order."""
    files = {}
    for argument in arguments:
        label, path = parse(argument)
        if label in files:
            raise ValueError(f"label {label!r} given twice")
        files[label] = read(path)
    return files


def per_split(files: dict[str, dict[str, dict]], key: str) -> tuple[list[str], dict[str, list[float]]]:
    """The splits every file has (in the first file's order) and each file's `key` on them, in
    percent."""
    first = next(iter(files.values()))
    splits = [s for s in first if all(s in trials for trials in files.values())]
    if not splits:
        raise ValueError("the files share no split: " + "; ".join(
            f"{label} has {', '.join(list(trials)[:3])}{', ...' if len(trials) > 3 else ''}"
            for label, trials in files.items()))
    for label, trials in files.items():
        bad = [s for s in splits if not isinstance(trials[s].get(key), (int, float))]
        if bad:
            raise ValueError(f"--key={key}: {label} has no number {key!r} in {', '.join(bad)}")
    return splits, {label: [100 * trials[s][key] for s in splits] for label, trials in files.items()}


def markdown(splits: list[str], values: dict[str, list[float]]) -> str:
    """One row per file: its figure on each split, then their mean."""
    lines = ["| | " + " | ".join(splits) + " | mean |", "|---" * (len(splits) + 2) + "|"]
    for label, v in values.items():
        escaped = label.replace("|", r"\|")  # a bare '|' would end the cell
        lines.append(f"| {escaped} | " + " | ".join(f"{x:.1f}" for x in v)
                     + f" | {statistics.fmean(v):.1f} |")
    return "\n".join(lines)


def plot(splits: list[str], values: dict[str, list[float]], key: str,
         path: pathlib.Path) -> "matplotlib.figure.Figure":
    """One line per file over the splits, written to `path`; returns the figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(1.2 + 0.6 * len(splits), 4.5))
    for label, v in values.items():
        axes.plot(range(len(splits)), v, marker="o", label=f"{label} (mean {statistics.fmean(v):.1f})")
    axes.set_xticks(range(len(splits)), splits)
    axes.set_xlabel("split")
    axes.set_ylabel(f"{key} (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return figure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="LABEL=FILE, FILE a results.json or a "
                        "readouts.py file#readout")
    parser.add_argument("--key", default="rank1", help="the metric (rank1, map, ...)")
    parser.add_argument("--plot", help="also draw the table as a PNG here")
    args = parser.parse_args(argv)
    try:
        splits, values = per_split(read_files(args.files), args.key)
    except ValueError as e:
        parser.error(str(e))
    print(markdown(splits, values))
    if args.plot:
        plot(splits, values, args.key, pathlib.Path(args.plot))
        print(f"Drawn to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
