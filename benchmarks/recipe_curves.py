"""Training-accuracy curves of several runs side by side, for comparing recipes.

    python benchmarks/recipe_curves.py --out=results/recipe/curves \
        "flip, pad, erasing=/tmp/exp/q_aug" "flip only=/tmp/exp/q_noaug"

Reads one TensorBoard scalar of each run (--tag; default train/acc_global, the batch accuracy
of the global branch), averages it over windows of --window steps and writes OUT.json (the numbers, so the figure can
be redrawn without the runs) and OUT.png (accuracy against images seen).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import numpy as np  # noqa: E402

LABELS = {"train/acc_global": ("training-batch accuracy, global branch (%)", 100.0),
          "train/ce_global": ("training cross-entropy, global branch", 1.0)}


def windowed(steps: np.ndarray, values: np.ndarray, window: int) -> list[tuple[int, float]]:
    """(window start, mean value) for every window of `window` steps that holds a point."""
    out = []
    for start in range(0, int(steps.max()) + 1, window):
        inside = (steps >= start) & (steps < start + window)
        if inside.any():
            out.append((start, float(values[inside].mean())))
    return out


def read_run(run: str, window: int, tag: str) -> dict:
    from jlml_tf import visualize
    from jlml_tf.inference import run_dir as run_dir_lib

    run = pathlib.Path(run)
    trial = run if (run / run_dir_lib.CONFIG_FILE).is_file() else sorted(run.glob("trial_*"))[0]
    batch = int(run_dir_lib.read_config(trial)["train"]["batch_size"])
    (label, folder), = list(visualize.event_dirs(trial).items())[:1]
    steps, values = visualize.read_scalars(folder)[tag]
    return {"run": str(run), "batch_size": batch, "window_steps": window, "tag": tag,
            "values": [[s, a] for s, a in windowed(steps, values, window)]}


def plot(curves: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name, c in curves.items():
        label, scale = LABELS.get(c["tag"], (c["tag"], 1.0))
        points = np.array(c["values"], float)
        ax.plot((points[:, 0] + c["window_steps"] / 2) * c["batch_size"], scale * points[:, 1],
                marker="o", label=name)
    ax.set_xlabel("training images seen")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="NAME=RUN_DIR pairs")
    parser.add_argument("--out", required=True, help="output path without extension")
    parser.add_argument("--window", type=int, default=50, help="steps averaged per point")
    parser.add_argument("--tag", default="train/acc_global", help="TensorBoard scalar to plot")
    args = parser.parse_args(argv)
    curves = {}
    for item in args.runs:
        name, sep, run = item.rpartition("=")
        if not sep or not name:
            parser.error(f"{item!r}: expected NAME=RUN_DIR")
        curves[name] = read_run(run, args.window, args.tag)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(curves, indent=1))
    plot(curves, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
