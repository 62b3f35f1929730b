"""Result files of an evaluation run: results.json, results.md and cmc.png.

`results` maps a name (e.g. "JLML l2") to the list of per-trial dicts returned by
protocol.evaluate (one entry for single-split benchmarks). Rates are stored as returned
(fractions) in the JSON and shown as percentages, the paper's unit, in the table and plot.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Mapping, Sequence

import numpy as np

from jlml_tf.evaluation import metrics
from jlml_tf.evaluation.protocol import aggregate_trials

JSON_FILE, MARKDOWN_FILE, CMC_FILE = "results.json", "results.md", "cmc.png"
# (column title, result key) of the Markdown table, the paper's columns plus ours.
COLUMNS = tuple((title, key) for key, title in metrics.RATE_TITLES.items())
FIGURE_SIZE, FIGURE_DPI = (6.4, 4.8), 100  # cmc.png is 640 x 480 pixels


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _cell(mean: dict, std: dict | None, key: str) -> str:
    if key not in mean:
        return "-"
    text = f"{100 * mean[key]:.1f}"
    return text + f" ± {100 * std[key]:.1f}" if std is not None else text


def markdown_table(summaries: Mapping[str, dict], paper: Mapping[str, float] | None = None,
                   paper_label: str = "Paper") -> str:
    """Markdown table, one row per result (mean, ± std over several trials), percentages.

    paper: the published figures for comparison, in percent, keyed like the results
    ("rank1", "map_official", ...); missing columns show "-".
    """
    lines = ["| Method | " + " | ".join(t for t, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for name, summary in summaries.items():
        std = summary["std"] if summary["num_trials"] > 1 else None
        lines.append(f"| {name} | " + " | ".join(_cell(summary["mean"], std, k)
                                                  for _, k in COLUMNS) + " |")
    if paper:
        lines.append(f"| {paper_label} | " + " | ".join(
            f"{paper[k]:.1f}" if k in paper else "-" for _, k in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def plot_cmc(path, summaries: Mapping[str, dict], max_rank: int = 50,
             title: str | None = None) -> pathlib.Path:
    """CMC curves to `max_rank`: one line per result, a shaded ± std band over trials."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGURE_SIZE, dpi=FIGURE_DPI)
    try:
        for name, summary in summaries.items():
            mean = 100 * np.asarray(summary["mean"]["cmc"])[:max_rank]
            ranks = np.arange(1, len(mean) + 1)
            (line,) = ax.plot(ranks, mean, label=name)
            if summary["num_trials"] > 1:
                std = 100 * np.asarray(summary["std"]["cmc"])[:max_rank]
                ax.fill_between(ranks, mean - std, np.minimum(mean + std, 100), alpha=0.2,
                                color=line.get_color())
        ax.set_xlabel("Rank")
        ax.set_ylabel("Matching rate (%)")
        ax.set_xlim(1, max_rank)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
        if title:
            ax.set_title(title)
        path = pathlib.Path(path)
        fig.savefig(path, dpi=FIGURE_DPI)  # no bbox_inches="tight": keep the pixel size fixed
    finally:
        plt.close(fig)
    return path


def write_report(out_dir: str | os.PathLike, results: Mapping[str, Sequence[dict]],
                 paper: Mapping[str, float] | None = None, paper_label: str = "Paper",
                 title: str | None = None, max_rank: int = 50,
                 extra: Mapping | None = None) -> dict[str, pathlib.Path]:
    """Writes results.json, results.md and cmc.png into out_dir; returns their paths.

    results: {name: list of per-trial result dicts (or one dict)}; paper: published figures
    in percent for a comparison row (see markdown_table); extra: anything JSON-able to keep
    with the numbers (data set, checkpoint, options).

    results.json = {"title", "paper", "extra", "results": {name: {"trials": [...],
    "num_trials", "mean": {...}, "std": {...}}}}.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not results:
        raise ValueError("no results to report")
    # A single result dict (one-split benchmark) counts as a list of one trial.
    results = {name: [trials] if isinstance(trials, Mapping) else list(trials)
               for name, trials in results.items()}
    summaries = {name: aggregate_trials(trials) for name, trials in results.items()}
    document = {"title": title, "paper": dict(paper) if paper else None,
                "extra": dict(extra) if extra else None,
                "results": {name: {"trials": list(results[name]), **summaries[name]}
                            for name in results}}
    paths = {"json": out / JSON_FILE, "markdown": out / MARKDOWN_FILE, "cmc": out / CMC_FILE}
    paths["json"].write_text(json.dumps(_jsonable(document), indent=2) + "\n")
    heading = f"# {title}\n\n" if title else ""
    paths["markdown"].write_text(heading + markdown_table(summaries, paper, paper_label))
    plot_cmc(paths["cmc"], summaries, max_rank, title)
    return paths


def read_trials(path: str | os.PathLike) -> dict[str, dict]:
    """{trial name: its metrics} of a results.json `write_report` wrote with one method; trials
    are named as its extra["trials"] names them, else trial0, trial1, ..."""
    document = json.loads(pathlib.Path(path).read_text())
    if "results" not in document:
        raise ValueError(f"{path}: not a results file (no 'results' entry)")
    methods = document["results"]
    if len(methods) != 1:
        raise ValueError(f"{path}: {len(methods)} methods ({', '.join(methods)}); expected one")
    (entry,) = methods.values()
    names = (document.get("extra") or {}).get("trials") or [
        f"trial{i}" for i in range(len(entry["trials"]))]
    if len(names) != len(entry["trials"]):
        raise ValueError(f"{path}: {len(names)} trial names for {len(entry['trials'])} trials")
    return dict(zip(names, entry["trials"]))
