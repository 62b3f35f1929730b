"""R1 against the number of pre-training identities, at a fixed number of images seen.

    python benchmarks/data_scaling.py --results=results/scaling --out=results/scaling/curve

Each pre-training run RESULTS/NAME (config.json, train_log.jsonl, results.json: its own data
set's test split) may have scores beside it in RESULTS/NAME-LABEL: direct transfer
(results_transfer.json, by `python -m jlml_tf.evaluate --run_dir=runs/scaling/NAME
--output_dir=...-LABEL --suffix=transfer`) or a run fine-tuned from it (results.json of
`python -m jlml_tf.train --init_from=runs/scaling/NAME --run_dir=...-LABEL`). Prints a
Markdown table (identities, images seen, R1 per target, mean +- std over its trials), the
least-squares slope of R1 against log2(identities) per target (R1 points per doubling of the
identities), and writes OUT.json and OUT.png.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import numpy as np  # noqa: E402

from jlml_tf.evaluation import report  # noqa: E402

OWN_TEST = "own test split"


def rank1(path: pathlib.Path) -> tuple[float, float, int]:
    """(mean, std, trials) of rank-1 in percent over the trials of a results file."""
    values = [100 * t["rank1"] for t in report.read_trials(path).values()]
    return float(np.mean(values)), float(np.std(values)), len(values)


def steps_trained(run: pathlib.Path) -> int:
    """The last step a training segment of RUN/train_log.jsonl finished at."""
    events = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return max(e["step"] for e in events if e["event"] == "finished")


def read_point(run: pathlib.Path, config: dict) -> dict:
    """One pre-training run and the scores beside it (direct transfer, fine-tuned runs)."""
    point = {"run": run.name, "identities": config["data"]["train_identities"],
             "images_seen": steps_trained(run) * config["train"]["batch_size"],
             "r1": {f"{config['data']['dataset']} ({OWN_TEST})": rank1(run / "results.json")}}
    for scored in sorted(run.parent.glob(f"{run.name}-*")):
        files = [scored / "results_transfer.json", scored / "results.json"]
        found = [f for f in files if f.is_file()]
        if found:
            point["r1"][scored.name[len(run.name) + 1:]] = rank1(found[0])
    return point


def read_points(results: pathlib.Path) -> list[dict]:
    """Every pre-training run in RESULTS (a NAME/config.json not started from another run's
    weights: a one-trial fine-tuned run has its config.json there too), by identities."""
    configs = {p.parent: json.loads(p.read_text()) for p in sorted(results.glob("*/config.json"))}
    runs = {run: c for run, c in configs.items() if not c["train"].get("init_from")}
    if not runs:
        raise SystemExit(f"{results}: no pre-training run (NAME/config.json) found")
    return sorted((read_point(r, c) for r, c in runs.items()), key=lambda p: p["identities"])


def slope_per_doubling(points: list[dict], target: str) -> float | None:
    """Least-squares slope of R1 against log2(identities); None with fewer than two points."""
    pairs = [(np.log2(p["identities"]), p["r1"][target][0]) for p in points if target in p["r1"]]
    if len(pairs) < 2:
        return None
    x, y = np.array(pairs).T
    return float(np.polyfit(x, y, 1)[0])


def targets_of(points: list[dict]) -> list[str]:
    return sorted({t for p in points for t in p["r1"]})


def markdown(points: list[dict]) -> str:
    targets = targets_of(points)
    lines = ["| run | identities | images seen | " + " | ".join(f"R1 {t}" for t in targets) + " |",
             "|---|---|---|" + "---|" * len(targets)]
    for p in points:
        cells = [f"{p['r1'][t][0]:.1f} ± {p['r1'][t][1]:.1f}" if t in p["r1"] else "-"
                 for t in targets]
        lines.append(f"| {p['run']} | {p['identities']:,} | {p['images_seen']:,} | "
                     + " | ".join(cells) + " |")
    slopes = [slope_per_doubling(points, t) for t in targets]
    lines.append("| R1 points per doubling of the identities | | | "
                 + " | ".join("-" if s is None else f"{s:+.1f}" for s in slopes) + " |")
    return "\n".join(lines) + "\n"


def plot(points: list[dict], path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for target in targets_of(points):
        xs = [p["identities"] for p in points if target in p["r1"]]
        ys = [p["r1"][target] for p in points if target in p["r1"]]
        ax.errorbar(xs, [m for m, _, _ in ys], yerr=[s for _, s, _ in ys], marker="o",
                    capsize=3, label=target)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("pre-training identities (log scale; same number of images seen)")
    ax.set_ylabel("rank-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/scaling", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, help="write OUT.json and OUT.png")
    args = parser.parse_args(argv)
    points = read_points(args.results)
    print(markdown(points), end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        slopes = {t: slope_per_doubling(points, t) for t in targets_of(points)}
        args.out.with_suffix(".json").write_text(json.dumps(
            {"points": points, "r1_per_doubling": slopes}, indent=2) + "\n")
        plot(points, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
