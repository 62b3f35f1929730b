"""The README's real-data table, from the committed results files alone.

    python benchmarks/real_data_table.py            # Markdown to stdout
    python benchmarks/real_data_table.py --results=results

For each benchmark and each JLML trained for it (half width: the CPU recipe's widths; paper
width: the paper's widths at the CPU recipe's 128x48, or at 160x64 where the label says so,
where run; each labelled with its plain +
augmented pre-training epochs): JLML fine-tuned per trial
from its joint pre-training, the same pre-training without fine-tuning (direct transfer: no
image of the benchmark seen), LOMO + XQDA on the same trials (best of the Retinex variants
measured; the range over them beside it) and the paper. A pre-training evaluated only by direct
transfer (the camera-group runs of docs/cpu_recipe.md section 22) has that row alone; rows
read out otherwise than plainly (per camera, `--camera_bn=train`) say so. Where `python -m jlml_tf.evaluate
--metric=xqda` was run on the fine-tuned models, their features matched by XQDA (the paper's
ablation) too, and where `--metric=xqda_map --suffix=xqda_map` was (`..._cbn-train` for a
per-camera readout), XQDA built into the exported model (its map on the unit sphere of one more
dimension, matched by L2). Mean ± std over trials. Hours are wall time on the machine that trained (a
2-core CPU, not always the same one, sometimes shared with other work), summed over every
start-to-stop segment in each trial's train_log.jsonl; a fine-tuned row's hours include its
pre-training.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from jlml_tf import paper  # noqa: E402
from jlml_tf.inference.run_dir import training_hours  # noqa: E402
from jlml_tf.evaluation.metrics import RANK_KEYS as RANKS  # noqa: E402

LOMO_VARIANTS = ("none", "msr", "msrcr")


@dataclasses.dataclass(frozen=True)
class TrainedJlml:
    """A JLML trained for a benchmark: its rows read `run`, its hours include `pretrain`."""
    label: str  # its widths (half: experiments/cpu/base.cfg, paper: cpu/paper_width.cfg), epochs
    run: str | None  # the fine-tuned run (None: a pre-training read out by direct transfer only)
    pretrain: tuple[str, ...]  # the pre-training runs it started from, continuation included
    transfer: str | None = None  # the pre-training's direct-transfer results file
    # Trained (pre-training and fine-tuning) on one-camera groups and read out per camera:
    # results_<...>_cbn-train.json files (docs/cpu_recipe.md sections 22-23).
    camera_groups: bool = False


FOR_CUHK01 = ("cpu-pretrain_for_cuhk01", "cpu-continue_pretrain_for_cuhk01")
FOR_VIPER_GRID = ("cpu-pretrain_for_viper_grid", "cpu-continue_pretrain_for_viper_grid")
PAPER_WIDTH_FOR_CUHK01 = ("cpu-paper_width-pretrain_for_cuhk01",
                          "cpu-paper_width-continue_for_cuhk01")
PAPER_WIDTH25_FOR_CUHK01 = ("cpu-paper_width-pretrain25_for_cuhk01",
                            "cpu-paper_width-continue25_for_cuhk01")
PAPER_WIDTH160_FOR_CUHK01 = ("recipe/paper_width_160x64_8ep/pretrain",
                             "recipe/paper_width_160x64_8ep/continue")
PAPER_WIDTH_FOR_VIPER_GRID = ("cpu-paper_width-pretrain_for_viper_grid",
                              "cpu-paper_width-continue_for_viper_grid")
CAMERA_GROUPS = "recipe/camera_bn_pooled_variance"  # docs/cpu_recipe.md sections 22-23
PER_CAMERA_SUFFIX = "_cbn-train"  # evaluate --camera_bn=train --suffix=...cbn-train
# each camera's batch norm calibrated on the split's unlabelled training images at test time
PER_CAMERA_READOUT = "read out per camera, `--camera_bn=train`"


def camera_groups(pretrain: tuple[str, ...], transfer: str, epochs: str, seed: int = 0,
                  fine_tuned: str | None = None) -> TrainedJlml:
    """A pre-training on batches of two one-camera groups (`CAMERA_GROUPS`/`pretrain`, its
    continuation included), its direct transfer (`transfer`) and, where run, its fine-tuning on
    groups (`fine_tuned`)."""
    continued = "; the last 12 with pad and random erasing" if len(pretrain) > 1 else ""
    return TrainedJlml(f"half width, {epochs} epochs on one-camera groups "
                       f"(`--cameras_per_batch=2`{continued}), seed {seed}",
                       f"{CAMERA_GROUPS}/{fine_tuned}" if fine_tuned else None,
                       tuple(f"{CAMERA_GROUPS}/{run}" for run in pretrain),
                       f"{CAMERA_GROUPS}/{transfer}/results_transfer{PER_CAMERA_SUFFIX}.json",
                       camera_groups=True)


def camera_groups_for_viper_grid(target: str, seed: int = 0, epochs: int = 6,
                                 fine_tuned: str | None = None) -> TrainedJlml:
    """One of the camera-group pre-trainings without VIPeR and GRID (section 22)."""
    tag = viper_grid_tag(seed, epochs)
    return camera_groups((f"pretrain_camera_groups{tag}",), f"camera_groups{tag}_{target}_transfer",
                         str(epochs), seed, fine_tuned)


def viper_grid_tag(seed: int, epochs: int) -> str:
    """How the VIPeR/GRID camera-group runs' folders name their seed and epochs."""
    return (f"_seed{seed}" if seed else "") + (f"_{epochs}ep" if epochs != 6 else "")


# Pre-trained without CUHK01 and fine-tuned per split, both on one-camera groups (section 23).
CUHK01_PRETRAIN = "pretrain_camera_groups_for_cuhk01"
CAMERA_GROUPS_CUHK01 = camera_groups((CUHK01_PRETRAIN,),
                                     "camera_groups_for_cuhk01_transfer", "12",
                                     fine_tuned="camera_groups_for_cuhk01_ft")
# The same 12 epochs continued 12 more on groups with pad and random erasing, then fine-tuned
# on groups (section 24).
CAMERA_GROUPS_CONTINUED_CUHK01 = camera_groups(
    (CUHK01_PRETRAIN, "continue_camera_groups_for_cuhk01"),
    "camera_groups_continue_for_cuhk01_transfer", "12 + 12",
    fine_tuned="camera_groups_continue_for_cuhk01_ft")

# That chain with a joint stage per split before its fine-tuning (section 25); its direct
# transfer is the continued chain's row.
CAMERA_GROUPS_JOINT_CUHK01 = dataclasses.replace(
    CAMERA_GROUPS_CONTINUED_CUHK01,
    label=CAMERA_GROUPS_CONTINUED_CUHK01.label + ", a 4-epoch joint stage per trial (its "
    "training identities together with the pre-training's)",
    run=f"{CAMERA_GROUPS}/camera_groups_continue_joint_cuhk01_ft",
    pretrain=CAMERA_GROUPS_CONTINUED_CUHK01.pretrain
    + (f"{CAMERA_GROUPS}/camera_groups_continue_joint_cuhk01",),
    transfer=None)
# The same joint stage, then 8 epochs of fine-tuning instead of 4 (section 27).
CAMERA_GROUPS_JOINT_CUHK01_FT8 = dataclasses.replace(
    CAMERA_GROUPS_JOINT_CUHK01,
    label=CAMERA_GROUPS_JOINT_CUHK01.label + ", 8 fine-tuning epochs instead of 4",
    run=f"{CAMERA_GROUPS}/camera_groups_continue_joint_cuhk01_ft_8ep")


def camera_groups_continued_for_viper_grid(target: str,
                                           fine_tuned: str | None = None) -> TrainedJlml:
    """The 12-epoch camera-group pre-training without VIPeR and GRID, continued."""
    tag = viper_grid_tag(0, 12)
    return camera_groups((f"pretrain_camera_groups{tag}", f"continue_camera_groups{tag}"),
                         f"camera_groups_continue{tag}_{target}_transfer", "12 + 12",
                         fine_tuned=fine_tuned)


CUHK01_485_486 = (
    TrainedJlml("half width, 25 + 12 epochs", "cpu-cuhk01_485_486_single", FOR_CUHK01,
                "transfer-cuhk01_485_486_single/results_transfer.json"),
    TrainedJlml("paper width, 8 + 12 epochs", "cpu-paper_width-cuhk01_485_486_single",
                PAPER_WIDTH_FOR_CUHK01,
                "transfer-paper_width-cuhk01_485_486_single/results_transfer.json"),
    TrainedJlml("paper width, 25 + 12 epochs", "cpu-paper_width25-cuhk01_485_486_single",
                PAPER_WIDTH25_FOR_CUHK01),
    TrainedJlml("paper width at 160x64, 8 + 12 epochs",
                "recipe/paper_width_160x64_8ep/continue_cuhk01", PAPER_WIDTH160_FOR_CUHK01),
    CAMERA_GROUPS_CUHK01, CAMERA_GROUPS_CONTINUED_CUHK01, CAMERA_GROUPS_JOINT_CUHK01,
    CAMERA_GROUPS_JOINT_CUHK01_FT8)
# (label, paper key, models, their results file, LOMO results folder prefix)
BENCHMARKS = (
    ("CUHK01 485/486 single shot", "cuhk01/485_486_single_shot", CUHK01_485_486, "results.json",
     "lomo_xqda/cuhk01_485_486_single_shot"),
    ("CUHK01 485/486 multi shot", "cuhk01/485_486_multi_shot",
     tuple(dataclasses.replace(m, transfer=None) for m in CUHK01_485_486),
     "results_multi_shot.json", "lomo_xqda/cuhk01_485_486_multi_shot"),
    ("CUHK01 871/100 single shot", "cuhk01/871_100_single_shot",
     (TrainedJlml("half width, 25 + 12 epochs", "cpu-cuhk01_871_100_single", FOR_CUHK01),
      TrainedJlml("paper width at 160x64, 8 + 12 epochs",
                  "recipe/paper_width_160x64_8ep/continue_cuhk01_871_100",
                  PAPER_WIDTH160_FOR_CUHK01)),
     "results.json",
     "lomo_xqda/cuhk01_871_100_single_shot"),
    ("GRID 125/125 + 775 distractors", "grid/125_125",
     (TrainedJlml("half width, 21 + 12 epochs", "cpu-grid", FOR_VIPER_GRID,
                  "transfer-grid/results_transfer.json"),
      TrainedJlml("paper width, 8 + 12 epochs", "cpu-paper_width-grid",
                  PAPER_WIDTH_FOR_VIPER_GRID,
                  "transfer-paper_width-grid/results_transfer.json"),
      camera_groups_for_viper_grid("grid"), camera_groups_for_viper_grid("grid", seed=1),
      camera_groups_for_viper_grid("grid", epochs=12, fine_tuned="camera_groups_12ep_grid_ft"),
      camera_groups_for_viper_grid("grid", seed=1, epochs=12),
      camera_groups_continued_for_viper_grid("grid")),
     "results.json", "lomo_xqda/grid_125_125"),
    ("VIPeR 316/316", "viper/316_316",
     (TrainedJlml("half width, 21 + 12 epochs", "cpu-viper", FOR_VIPER_GRID,
                  "transfer-viper/results_transfer.json"),
      TrainedJlml("paper width, 8 + 12 epochs", "cpu-paper_width-viper",
                  PAPER_WIDTH_FOR_VIPER_GRID,
                  "transfer-paper_width-viper/results_transfer.json"),
      camera_groups_for_viper_grid("viper"), camera_groups_for_viper_grid("viper", seed=1),
      camera_groups_for_viper_grid("viper", epochs=12),
      camera_groups_for_viper_grid("viper", seed=1, epochs=12),
      camera_groups_continued_for_viper_grid("viper", "camera_groups_continue_12ep_viper_ft")),
     "results.json", "lomo_xqda/viper_316_316"),
)


# No-training floor per benchmark label (benchmarks/floor_baselines.py), the row it shows.
FLOORS = {"CUHK01 485/486 single shot": "floor/cuhk01_485_486_single.json",
          "GRID 125/125 + 775 distractors": "floor/grid_125_125.json",
          "VIPeR 316/316": "floor/viper_316_316.json"}
FLOOR_METHOD = "HSV histograms, 8 stripes"


def floor_summary(path: pathlib.Path) -> dict | None:
    """The HSV-histogram row of a floor_baselines.py file, as `summary` gives it."""
    if not path.is_file():
        return None
    document = json.loads(path.read_text())
    values = document["results"][FLOOR_METHOD]
    trials = len(values["rank1"]["trials"])
    return {"method": FLOOR_METHOD, "trials": trials,
            "mean": {k: v["mean"] for k, v in values.items()},
            "std": {k: v["std"] for k, v in values.items()}}


def summary(path: pathlib.Path) -> dict | None:
    """(method, mean, std) of a results.json written by the project's report code."""
    if not path.is_file():
        return None
    (method, values), = json.loads(path.read_text())["results"].items()
    return {"method": method, "mean": values["mean"], "std": values.get("std", {}),
            "trials": values.get("num_trials", 1)}


def cells(s: dict) -> list[str]:
    def one(key):
        mean = 100 * s["mean"][key]
        std = s["std"].get(key)
        spread = std is not None and s["trials"] > 1
        return f"{mean:.1f} ± {100 * std:.1f}" if spread else f"{mean:.1f}"
    return [one(k) if k in s["mean"] else "-" for k in RANKS + ("map",)]


def model_rows(results: pathlib.Path, label: str, model: TrainedJlml, name: str) -> list[str]:
    """The fine-tuned model's row, its features matched by XQDA, and its direct transfer (that
    row alone for a model without a fine-tuned run)."""
    pre_hours = sum(training_hours(results / r) or 0 for r in model.pretrain)
    method = f"JLML {model.label}"
    rows = []
    moved = summary(results / model.transfer) if model.transfer else None
    unseen = (f"no label of it seen; {PER_CAMERA_READOUT}" if model.camera_groups
              else "no image of it seen")
    transfer_row = [f"| {label} | {method}, direct transfer (pre-training only, {unseen}) | "
                    f"{moved['trials']} | " + " | ".join(cells(moved)) +
                    f" | {pre_hours:.2f} |"] if moved else []
    if model.run is None:
        return transfer_row
    hours = (training_hours(results / model.run) or 0) + pre_hours
    suffix, fine_tuning = ((PER_CAMERA_SUFFIX, f" on one-camera groups ({PER_CAMERA_READOUT})")
                           if model.camera_groups else ("", ""))
    tuned = summary(results / model.run / name.replace(".json", suffix + ".json"))
    if tuned:
        rows.append(f"| {label} | {method}, joint pre-training + fine-tuning per trial"
                    f"{fine_tuning} | {tuned['trials']} | " + " | ".join(cells(tuned)) +
                    f" | {hours:.2f} |")
    plain = name == "results.json" and not model.camera_groups  # XQDA was fitted on those only
    xqda = summary(results / model.run / name.replace("results", "results_xqda", 1)) \
        if plain else None
    if xqda:
        rows.append(f"| {label} | {method}, its features + XQDA fitted on each trial's "
                    f"training split | {xqda['trials']} | " + " | ".join(cells(xqda)) +
                    f" | {hours:.2f} |")
    mapped_name = name.replace("results", "results_xqda_map", 1).replace(".json", suffix + ".json")
    mapped = summary(results / model.run / mapped_name) if name == "results.json" else None
    if mapped:  # a per-camera readout's map was fitted on each camera's calibrated features
        export = ("one export per camera, `export --camera_bn_images --linear_map`"
                  if model.camera_groups else "`export --linear_map`")
        rows.append(f"| {label} | {method}, XQDA built into the model ({export}: "
                    f"the map on the unit sphere, L2) | {mapped['trials']} | "
                    + " | ".join(cells(mapped)) + f" | {hours:.2f} |")
    return rows + transfer_row


def table(results: pathlib.Path) -> str:
    lines = ["| benchmark | method | trials | R1 | R5 | R10 | R20 | mAP | hours (2-core CPU) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, key, models, name, lomo in BENCHMARKS:
        for model in models:
            lines.extend(model_rows(results, label, model, name))
        floor = floor_summary(results / FLOORS[label]) if label in FLOORS else None
        if floor:
            lines.append(f"| {label} | {FLOOR_METHOD}, L2 (no training: the floor) | "
                         f"{floor['trials']} | " + " | ".join(cells(floor)) + " | - |")
        variants = {v: summary(results / f"{lomo}_{v}" / "results.json") for v in LOMO_VARIANTS}
        variants = {v: s for v, s in variants.items() if s}
        if variants:
            best = max(variants.values(), key=lambda s: s["mean"]["rank1"])
            r1 = sorted(100 * s["mean"]["rank1"] for s in variants.values())
            lines.append(f"| {label} | {best['method']} (R1 {r1[0]:.1f}-{r1[-1]:.1f} over "
                         f"{len(variants)} Retinex variants) | {best['trials']} | " +
                         " | ".join(cells(best)) + " | - |")
        ref = paper.reference(key)
        if ref:
            lines.append(f"| {label} | JLML, the paper (GPU, full width, 224x96) | 10 | " +
                         " | ".join(f"{ref[k]:.1f}" if k in ref else "-" for k in RANKS + ("map",))
                         + " | - |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__), os.pardir,
                                                          "results"))
    args = parser.parse_args(argv)
    results = pathlib.Path(args.results)
    if not results.is_dir():
        parser.error(f"--results={results}: no such folder")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
