"""The paper's ablations on a real benchmark here: CUHK01 485/486 single shot, same splits.

Every variant gets the same data, budget and seeds: a joint pre-training without CUHK01
(`experiments/ablations/cpu/<variant>.cfg`: the CUHK01 pre-training cut to 8 epochs, with the
variant's change), then fine-tuning on splits 0-2 (`<variant>_cuhk01.cfg`; `--splits` adds
more). KISSME and XQDA are the full model's features matched with a metric fitted on each
split's training identities.

    python benchmarks/ablations.py run --jobs=2     # resumable, reuses finished trials
    python benchmarks/ablations.py report                           # table, paired differences, PNG

`run` keeps every run under runs/ablations/<variant>/ and copies its small files (results,
config, training logs; no weights) to results/ablations/<variant>/. `report` reads only
results/ablations/, so it works on a fresh clone.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, os.fspath(ROOT))

from jlml_tf import paper  # noqa: E402
from jlml_tf.evaluation.paired import format_difference, paired_difference as paired  # noqa: E402
from jlml_tf.evaluation.report import read_trials  # noqa: E402
from jlml_tf.inference.run_dir import training_hours  # noqa: E402

CONFIGS = ROOT / "experiments" / "ablations" / "cpu"  # <variant>.cfg, <variant>_cuhk01.cfg
FULL = "full"
# name: (label, key of the paper's Market-1501 figure); the training flags are in CONFIGS
TRAINED = {
    FULL: ("JLML (both branches, multi-loss, shared stem, SFL, m = 4)", "m4"),
    "global_only": ("global branch only", "global_only"),
    "local_only": ("local branch only", "local_only"),
    "uniloss": ("UniLoss: one softmax on the concatenated feature", "uniloss"),
    "no_shared_stem": ("no shared low-level layers", "no_shared_stem"),
    "no_sfl": ("no selective feature learning", "no_sfl"),
    "m2": ("m = 2 stripes", "m2"),
    "m6": ("m = 6 stripes", "m6"),
    "m8": ("m = 8 stripes", "m8"),
}
# name: (label, metric) evaluated on the full model's features
MATCHED = {"kissme": ("full model, KISSME instead of L2", "kissme"),
           "xqda": ("full model, XQDA instead of L2", "xqda")}
VARIANTS = list(TRAINED) + list(MATCHED)
# (the paper's claim, the variant it says is better, the one it says is worse)
CLAIMS = (
    ("multi-loss beats UniLoss", FULL, "uniloss"),
    ("the joint model beats global only", FULL, "global_only"),
    ("the joint model beats local only", FULL, "local_only"),
    ("shared low-level layers help", FULL, "no_shared_stem"),
    ("selective feature learning helps", FULL, "no_sfl"),
    ("m = 4 beats m = 2", FULL, "m2"),
    ("m = 4 beats m = 6", FULL, "m6"),
    ("m = 4 beats m = 8", FULL, "m8"),
    ("L2 beats KISSME on JLML features", FULL, "kissme"),
    ("L2 beats XQDA on JLML features", FULL, "xqda"),
)
SMALL_FILES = ("results*.json", "results*.md", "config.json", "train_log.jsonl")


# ----------------------------------------------------------------------------------------------
# Commands


def stage_configs(variant: str) -> tuple[pathlib.Path, pathlib.Path]:
    """The variant's pre-training and fine-tuning flagfiles."""
    return CONFIGS / f"{variant}.cfg", CONFIGS / f"{variant}_cuhk01.cfg"


def train_commands(variant: str, splits: list[int] | None, pretrain_epochs: int | None,
                   finetune_epochs: int | None, runs: pathlib.Path) -> list[list[str]]:
    """The pre-training and the fine-tuning command of a trained variant: its flagfiles, with
    the budget and splits overridden where given."""
    pretrain_cfg, finetune_cfg = stage_configs(variant)
    pretrain, finetune = runs / variant / "pretrain", runs / variant / "cuhk01"
    python = [sys.executable, "-m", "jlml_tf.train"]
    epochs = lambda n: [f"--epochs={n}"] if n else []  # noqa: E731
    return [
        python + [f"--flagfile={pretrain_cfg.relative_to(ROOT)}", *epochs(pretrain_epochs),
                  f"--run_dir={pretrain}"],
        python + [f"--flagfile={finetune_cfg.relative_to(ROOT)}", *epochs(finetune_epochs),
                  f"--init_from={pretrain}", f"--run_dir={finetune}",
                  *(["--trials=" + ",".join(map(str, splits))] if splits else [])],
    ]


def metric_command(variant: str, runs: pathlib.Path) -> list[str]:
    # --flip_test: the same test-time views as the L2 figure of the fine-tuning (cpu/base.cfg);
    # --suffix: results_<variant>.json, where per_split reads it
    return [sys.executable, "-m", "jlml_tf.evaluate", f"--run_dir={runs / FULL / 'cuhk01'}",
            f"--metric={MATCHED[variant][1]}", "--flip_test", f"--suffix={variant}"]


def copy_small_files(run: pathlib.Path, dest: pathlib.Path) -> int:
    """Copies a run's results, config and logs (never checkpoints) to `dest`; returns a count."""
    copied = 0
    for pattern in SMALL_FILES:
        for path in run.rglob(pattern):
            if "checkpoints" in path.parts:
                continue
            target = dest / path.relative_to(run)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied += 1
    return copied


def run_variant(variant: str, args) -> str:
    runs, results = pathlib.Path(args.runs), pathlib.Path(args.results)
    commands = (train_commands(variant, args.splits, args.pretrain_epochs,
                               args.finetune_epochs, runs) if variant in TRAINED
                else [metric_command(variant, runs)])
    log = runs / f"{variant}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        for command in commands:
            print(f"[{variant}] {' '.join(command[1:])}", flush=True)
            done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            if done.returncode:
                return f"{variant}: failed (exit {done.returncode}), see {log}"
    source = runs / (variant if variant in TRAINED else FULL)
    copied = copy_small_files(source, results / (variant if variant in TRAINED else FULL))
    return f"{variant}: done, {copied} files in {results}"


# ----------------------------------------------------------------------------------------------
# Report


def per_split(results: pathlib.Path, variant: str) -> dict[str, dict]:
    """{trial name: its metrics} of a variant, from the committed result files."""
    run = results / (FULL if variant in MATCHED else variant) / "cuhk01"
    name = f"results_{variant}.json" if variant in MATCHED else "results.json"
    path = run / name
    return read_trials(path) if path.is_file() else {}


def verdict(difference: dict | None) -> str:
    if difference is None:
        return "not run"
    if difference["low"] > 0:
        return "holds"
    if difference["high"] < 0:
        return "reversed"
    return "not resolved"


def paper_rank1(variant: str) -> float | None:
    """The paper's Market-1501 single-query R1 of a variant."""
    key = TRAINED[variant][1] if variant in TRAINED else variant
    market = paper.ABLATIONS.get(key)
    return market[0] if market else None


def summary_rows(results: pathlib.Path) -> list[dict]:
    rows = []
    for variant in VARIANTS:
        trials = per_split(results, variant)
        label = TRAINED[variant][0] if variant in TRAINED else MATCHED[variant][0]
        row = {"variant": variant, "label": label, "splits": sorted(trials),
               "paper_market_rank1": paper_rank1(variant),
               "hours": variant_hours(results, variant)}
        for metric in ("rank1", "map"):
            values = [100 * t[metric] for t in trials.values()]
            if values:
                mean = sum(values) / len(values)
                row[metric] = {"mean": mean, "std": math.sqrt(
                    sum((v - mean) ** 2 for v in values) / len(values))}
        rows.append(row)
    return rows


def variant_hours(results: pathlib.Path, variant: str) -> float | None:
    """Training wall hours of a trained variant: its pre-training plus every split's
    fine-tuning (None for the matched variants, which reuse the full model's features)."""
    if variant not in TRAINED:
        return None
    parts = [training_hours(results / variant / part) for part in ("pretrain", "cuhk01")]
    return None if parts == [None, None] else sum(h or 0.0 for h in parts)


# Ten claims tested at once: Bonferroni keeps the chance of any false verdict under 5 %.
FAMILY_CONFIDENCE = 1 - 0.05 / len(CLAIMS)


def claim_rows(results: pathlib.Path) -> list[dict]:
    out = []
    for claim, better, worse in CLAIMS:
        runs = per_split(results, better), per_split(results, worse)
        difference = paired(*runs)
        family = paired(*runs, confidence=FAMILY_CONFIDENCE)
        out.append({"claim": claim, "better": better, "worse": worse,
                    "difference": difference, "verdict": verdict(difference),
                    "family_difference": family, "family_verdict": verdict(family),
                    "paper_difference": paper_rank1(better) - paper_rank1(worse)})
    return out


def markdown(rows: list[dict], claims: list[dict]) -> str:
    def cell(row, key):
        return f"{row[key]['mean']:.1f} ± {row[key]['std']:.1f}" if key in row else "-"

    lines = ["| variant | splits | R1 | mAP | CPU hours (wall, 2 cores) | the paper's Market-1501 R1 |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        market, hours = row["paper_market_rank1"], row["hours"]
        lines.append(f"| {row['label']} | {len(row['splits'])} | {cell(row, 'rank1')} | "
                     f"{cell(row, 'map')} | {f'{hours:.2f}' if hours is not None else '-'} | "
                     f"{market if market is not None else '-'} |")
    family = f"{100 * FAMILY_CONFIDENCE:.1f} %"
    lines += ["", "| the paper's claim | the paper's R1 difference (Market-1501) | "
              "R1 difference here, 95 % interval (points) | here | "
              f"all {len(CLAIMS)} claims at once: {family} interval (Bonferroni) | at once |",
              "|---|---|---|---|---|---|"]
    for c in claims:
        d, f = c["difference"], c["family_difference"]
        text = f"{format_difference(d)} over {len(d['splits'])} splits" if d else "-"
        wide = f"[{f['low']:+.1f}, {f['high']:+.1f}]" if f else "-"
        lines.append(f"| {c['claim']} | {c['paper_difference']:+.1f} | {text} | {c['verdict']} | "
                     f"{wide} | {c['family_verdict']} |")
    return "\n".join(lines)


def plot(rows: list[dict], claims: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if "rank1" in r]
    fig, (ours, theirs, differences) = plt.subplots(
        1, 3, figsize=(17, 5), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    names = [r["variant"] for r in shown]
    ours.bar(names, [r["rank1"]["mean"] for r in shown],
             yerr=[r["rank1"]["std"] for r in shown], capsize=3, color="tab:blue")
    ours.set_title("CUHK01 485/486, here (mean ± std over splits)")
    ours.set_ylabel("rank-1 (%)")
    theirs.bar(names, [r["paper_market_rank1"] or 0 for r in shown], color="tab:gray")
    theirs.set_title("the paper, Market-1501 single query")
    for axis in (ours, theirs):
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
        axis.grid(axis="y", alpha=0.3)
    plot_claims(differences, [c for c in claims if c["difference"]])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_claims(axis, claims: list[dict]) -> None:
    """Each claim's paired R1 difference here with its 95 % interval, the paper's beside it:
    a claim holds where the whole interval is right of zero."""
    if not claims:  # one variant measured: nothing to pair yet
        axis.set_axis_off()
        return
    y = list(range(len(claims)))[::-1]
    means = [c["difference"]["mean"] for c in claims]
    spans = [[m - c["difference"]["low"] for m, c in zip(means, claims)],
             [c["difference"]["high"] - m for m, c in zip(means, claims)]]
    axis.errorbar(means, y, xerr=spans, fmt="o", color="tab:blue", capsize=3,
                  label="here, 95 % interval")
    axis.scatter([c["paper_difference"] for c in claims], y, marker="D", color="tab:gray",
                 label="the paper (Market-1501)", zorder=3)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_yticks(y, [f"{c['claim']}\n({c['verdict']})" for c in claims], fontsize=8)
    axis.set_xlabel("R1 difference, better minus worse (points)")
    axis.set_title("the paper's claims")
    axis.grid(axis="x", alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")


def budget_rows(results: pathlib.Path, longer: pathlib.Path) -> list[dict]:
    """Each claim measured at both budgets (this one and a longer run's results folder), and
    whether the two agree in sign: the check that the short budget ranks like the long one."""
    long_claims = {c["claim"]: c for c in claim_rows(longer)}
    out = []
    for short in claim_rows(results):
        long = long_claims[short["claim"]]
        if short["difference"] and long["difference"]:
            agree = (short["difference"]["mean"] > 0) == (long["difference"]["mean"] > 0)
            out.append({"claim": short["claim"], "short": short, "long": long,
                        "same_sign": agree})
    return out


def budget_markdown(rows: list[dict]) -> str:
    def interval(c):
        d = c["difference"]
        return f"{format_difference(d)} ({c['verdict']})"

    lines = ["| the paper's claim | this budget: R1 difference | longer budget | same sign |",
             "|---|---|---|---|"]
    lines += [f"| {r['claim']} | {interval(r['short'])} | {interval(r['long'])} | "
              f"{'yes' if r['same_sign'] else 'no'} |" for r in rows]
    return "\n".join(lines)


def report(results: pathlib.Path, longer: pathlib.Path | None = None) -> str:
    rows, claims = summary_rows(results), claim_rows(results)
    budget = budget_rows(results, longer) if longer else []
    (results / "summary.json").write_text(json.dumps(
        {"variants": rows, "claims": claims, "budget_check": budget}, indent=1))
    if any("rank1" in r for r in rows):
        plot(rows, claims, results / "ablations.png")
    text = markdown(rows, claims)
    if longer:
        text += f"\n\nThe same claims at the budget of {longer}:\n\n" + budget_markdown(budget)
    (results / "summary.md").write_text(text + "\n")
    return text


# ----------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("--variants", default="all",
                        help=f"comma-separated, or 'all': {','.join(VARIANTS)}")
    parser.add_argument("--splits", default=None,
                        help="override the CUHK01 485/486 splits (0-9) of experiments/ablations/cpu/")
    parser.add_argument("--pretrain_epochs", type=_positive, default=None,
                        help="override the pre-training epochs of experiments/ablations/cpu/")
    parser.add_argument("--finetune_epochs", type=_positive, default=None,
                        help="override the fine-tuning epochs of experiments/ablations/cpu/")
    parser.add_argument("--jobs", type=int, default=2, help="variants trained side by side")
    parser.add_argument("--runs", default=os.fspath(ROOT / "runs" / "ablations"))
    parser.add_argument("--results", default=os.fspath(ROOT / "results" / "ablations"))
    parser.add_argument("--budget_check", default=None, metavar="RESULTS",
                        help="report: compare each claim with a longer budget's results folder")
    args = parser.parse_args(argv)
    chosen = VARIANTS if args.variants == "all" else args.variants.split(",")
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; known: {','.join(VARIANTS)}")
    args.variants = chosen
    if args.splits is None:
        return args
    try:
        args.splits = sorted({int(s) for s in args.splits.split(",")})
    except ValueError:
        parser.error(f"--splits={args.splits}: give split numbers such as 0,1,2")
    if not all(0 <= s <= 9 for s in args.splits):
        parser.error(f"--splits={args.splits}: CUHK01 485/486 has splits 0-9")
    return args


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give a positive number of epochs")
    return value


def main(argv=None) -> int:
    args = parse_args(argv)
    results = pathlib.Path(args.results)
    if args.command == "report":
        results.mkdir(parents=True, exist_ok=True)
        longer = pathlib.Path(args.budget_check) if args.budget_check else None
        if longer and not longer.is_dir():
            print(f"--budget_check={longer}: no such results folder", file=sys.stderr)
            return 2
        print(report(results, longer))
        return 0
    trained = [v for v in args.variants if v in TRAINED]
    matched = [v for v in args.variants if v in MATCHED]
    if matched and FULL not in trained and not (pathlib.Path(args.runs) / FULL).exists():
        trained.insert(0, FULL)  # KISSME and XQDA are evaluated on the full model's features
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        outcomes = list(pool.map(lambda v: run_variant(v, args), trained))
    outcomes += [run_variant(v, args) for v in matched]
    print("\n".join(outcomes))
    return int(any("failed" in o for o in outcomes))


if __name__ == "__main__":
    sys.exit(main())
