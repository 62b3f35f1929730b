"""The README's real-data table, from the committed results files alone.

    python benchmarks/real_data_table.py            # Markdown to stdout
    python benchmarks/real_data_table.py --results=results

One row per benchmark, model and readout: each JLML trained for the benchmark (the model
column: widths, input size if not 128x48, pre-training epochs, camera groups and their seed if
not 0, joint stage and fine-tuning epochs),
read out fine-tuned per trial and, where run, by direct transfer (the pre-training alone), by L2
(per camera for camera-group models, `--camera_bn=train`), XQDA on its features
(`evaluate --metric=xqda`), XQDA's map built in (`--metric=xqda_map`) or XQDA on its features
and LOMO's concatenated (`--metric=xqda --fuse_lomo=none`, results_xqda_lomo-none[...].json and
results_transfer_xqda_lomo-none[...].json); then the no-training floor, LOMO + XQDA on the same trials (the best Retinex variant, the range over all beside it)
and the paper. XQDA on its features (results_xqda.json) was fitted on the random-batch
single-shot models only; XQDA's map is results_xqda_map[_cbn-train].json; a pre-training
evaluated only by direct transfer (results_transfer[_cbn-train].json) has that row alone. The
README's legend under the table says what each word means. Mean ± std over
trials. Hours are wall time on the machine that trained (a 2-core CPU, not always the same one,
sometimes shared with other work), summed over every start-to-stop segment in each trial's
train_log.jsonl; a fine-tuned row's hours include its pre-training.
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
    label: str  # the model column: widths (half: cpu/base.cfg, paper: cpu/paper_width.cfg), epochs, ...
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
# The readout column's words; the README's legend under the table says what each means.
FINE_TUNED, TRANSFER = "fine-tuned", "direct transfer"
L2, XQDA_ON_FEATURES, XQDA_MAP = "L2", "XQDA on its features", "XQDA map built in"
FUSED = "XQDA on its features and LOMO's"  # evaluate --metric=xqda --fuse_lomo=none
FUSED_SUFFIX = "_xqda_lomo-none"  # the results files' suffix of that readout
# each camera's batch norm calibrated on the split's unlabelled training images at test time
PER_CAMERA = " per camera"


def camera_groups(pretrain: tuple[str, ...], transfer: str, epochs: str, seed: int = 0,
                  fine_tuned: str | None = None, width: str = "half") -> TrainedJlml:
    """A pre-training on batches of two one-camera groups (`CAMERA_GROUPS`/`pretrain`, its
    continuation included), its direct transfer (`transfer`) and, where run, its fine-tuning on
    groups (`fine_tuned`); `width` is "half" (cpu/base.cfg) or "paper" (cpu/paper_width.cfg)."""
    if width not in ("half", "paper"):
        raise ValueError(f"width={width!r}: not 'half' or 'paper'")
    return TrainedJlml(f"{width} width, camera groups, {epochs} ep"
                       + (f", seed {seed}" if seed else ""),
                       f"{CAMERA_GROUPS}/{fine_tuned}" if fine_tuned else None,
                       tuple(f"{CAMERA_GROUPS}/{run}" for run in pretrain),
                       f"{CAMERA_GROUPS}/{transfer}/results_transfer{PER_CAMERA_SUFFIX}.json",
                       camera_groups=True)


def camera_groups_for_viper_grid(target: str, seed: int = 0, epochs: int = 6,
                                 fine_tuned: str | None = None,
                                 width: str = "half") -> TrainedJlml:
    """One of the camera-group pre-trainings without VIPeR and GRID (section 22; the paper's
    widths: section 34): at the paper's widths its pre-training and transfer folders carry a
    paper_width_ prefix; `fine_tuned` is taken as given."""
    tag, prefix = viper_grid_tag(seed, epochs), width_prefix(width)
    return camera_groups((f"{prefix}pretrain_camera_groups{tag}",),
                         f"{prefix}camera_groups{tag}_{target}_transfer", str(epochs), seed,
                         fine_tuned, width)


def width_prefix(width: str) -> str:
    """How a paper-width camera-group run's folders begin ("" at half width)."""
    return "paper_width_" if width == "paper" else ""


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

def joint_chain(continued: TrainedJlml, joint: str, fine_tuned: str, epochs: int) -> TrainedJlml:
    """`continued`'s pre-training, then per split a joint stage (`CAMERA_GROUPS`/`joint`) and
    `epochs` of fine-tuning (`fine_tuned`); its direct transfer is `continued`'s row."""
    return dataclasses.replace(
        continued, label=continued.label + f", joint stage, {epochs}-ep fine-tuning",
        run=f"{CAMERA_GROUPS}/{fine_tuned}",
        pretrain=continued.pretrain + (f"{CAMERA_GROUPS}/{joint}",), transfer=None)


# That chain with a joint stage per split before its fine-tuning (section 25), then 8 epochs of
# fine-tuning instead of 4 (section 27).
CAMERA_GROUPS_JOINT_CUHK01 = joint_chain(
    CAMERA_GROUPS_CONTINUED_CUHK01, "camera_groups_continue_joint_cuhk01",
    "camera_groups_continue_joint_cuhk01_ft", 4)
CAMERA_GROUPS_JOINT_CUHK01_FT8 = joint_chain(
    CAMERA_GROUPS_CONTINUED_CUHK01, "camera_groups_continue_joint_cuhk01",
    "camera_groups_continue_joint_cuhk01_ft_8ep", 8)
# The same chain for CUHK01 871/100 (section 29): the same pre-training, the joint stage on
# each split's 871 identities.
CAMERA_GROUPS_JOINT_CUHK01_871_100 = joint_chain(
    CAMERA_GROUPS_CONTINUED_CUHK01, "camera_groups_continue_joint_cuhk01_871_100",
    "camera_groups_continue_joint_cuhk01_871_100_ft_8ep", 8)

# The joint chain at the paper's widths (section 32): its own pre-training and continuation,
# read out by direct transfer, then the joint stage and 8 epochs of fine-tuning per split.
PAPER_WIDTH_CAMERA_GROUPS_CONTINUED_CUHK01 = camera_groups(
    ("paper_width_pretrain_camera_groups_for_cuhk01",
     "paper_width_continue_camera_groups_for_cuhk01"),
    "paper_width_camera_groups_continue_for_cuhk01_transfer", "12 + 12", width="paper")
PAPER_WIDTH_CAMERA_GROUPS_JOINT_CUHK01_FT8 = joint_chain(
    PAPER_WIDTH_CAMERA_GROUPS_CONTINUED_CUHK01, "paper_width_camera_groups_continue_joint_cuhk01",
    "paper_width_camera_groups_continue_joint_cuhk01_ft_8ep", 8)
# The same paper-width chain for CUHK01 871/100 (section 33).
PAPER_WIDTH_CAMERA_GROUPS_JOINT_CUHK01_871_100 = joint_chain(
    PAPER_WIDTH_CAMERA_GROUPS_CONTINUED_CUHK01,
    "paper_width_camera_groups_continue_joint_cuhk01_871_100",
    "paper_width_camera_groups_continue_joint_cuhk01_871_100_ft_8ep", 8)


def camera_groups_continued_for_viper_grid(target: str, fine_tuned: str | None = None,
                                           width: str = "half") -> TrainedJlml:
    """The 12-epoch camera-group pre-training without VIPeR and GRID, continued (the paper's
    widths: section 34, folders prefixed as in `camera_groups_for_viper_grid`)."""
    tag, prefix = viper_grid_tag(0, 12), width_prefix(width)
    return camera_groups((f"{prefix}pretrain_camera_groups{tag}",
                          f"{prefix}continue_camera_groups{tag}"),
                         f"{prefix}camera_groups_continue{tag}_{target}_transfer", "12 + 12",
                         fine_tuned=fine_tuned, width=width)


# The paper-width VIPeR fine-tuning with LOMO + XQDA distilled into it (section 38); its
# pre-training's direct transfer is the row above it.
PAPER_WIDTH_VIPER_FT_DISTILLED = dataclasses.replace(
    camera_groups_continued_for_viper_grid(
        "viper", "paper_width_camera_groups_continue_12ep_viper_ft_distill", width="paper"),
    label="paper width, camera groups, 12 + 12 ep, LOMO + XQDA distilled", transfer=None)
# The same fine-tuning for 24 epochs instead of 6 (section 39).
PAPER_WIDTH_VIPER_FT_DISTILLED_24EP = dataclasses.replace(
    PAPER_WIDTH_VIPER_FT_DISTILLED,
    run=f"{CAMERA_GROUPS}/paper_width_camera_groups_continue_12ep_viper_ft_distill_24ep",
    label="paper width, camera groups, 12 + 12 ep, LOMO + XQDA distilled, 24-ep fine-tuning")
# Its matched control: the same 24 epochs without the teacher (section 40).
PAPER_WIDTH_VIPER_FT_24EP = dataclasses.replace(
    PAPER_WIDTH_VIPER_FT_DISTILLED,
    run=f"{CAMERA_GROUPS}/paper_width_camera_groups_continue_12ep_viper_ft_24ep",
    label="paper width, camera groups, 12 + 12 ep, 24-ep fine-tuning")
# The same pre-training re-run (section 41), then the 24-epoch distilled fine-tuning on the camera
# sampler and on matched-pair batches (`--sampler=camera_pairs`; sections 42-43).
PAPER_WIDTH_VIPER_RERUN_DISTILLED_24EP = dataclasses.replace(
    PAPER_WIDTH_VIPER_FT_DISTILLED_24EP,
    run=f"{CAMERA_GROUPS}/paper_width_camera_groups_continue_12ep_rerun_viper_ft_distill_24ep",
    pretrain=tuple(f"{run}_rerun" for run in PAPER_WIDTH_VIPER_FT_DISTILLED_24EP.pretrain),
    label="paper width, camera groups, 12 + 12 ep re-run, LOMO + XQDA distilled, "
          "24-ep fine-tuning")


def one_change(base: TrainedJlml, old: str, new: str, label: str) -> TrainedJlml:
    """`base` with one fine-tuning change: `old` becomes `new` in its run name (the results
    folder) and `label` is appended to its label; the pre-training stays base's."""
    return dataclasses.replace(base, run=base.run.replace(old, new), label=base.label + label)


PAPER_WIDTH_VIPER_RERUN_DISTILLED_PAIRS = one_change(
    PAPER_WIDTH_VIPER_RERUN_DISTILLED_24EP, "_distill_", "_distill_pairs_", " on matched pairs")
# The teacher at weight 5 instead of 10 on the matched pairs (sections 44-45).
PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS = one_change(
    PAPER_WIDTH_VIPER_RERUN_DISTILLED_PAIRS, "_pairs_", "_w5_pairs_", ", the teacher at weight 5")
# The same with batches of 64, 32 people of both cameras (section 46).
PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS_B64 = one_change(
    PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS, "_pairs_", "_pairs_b64_", ", batches of 64")
# The same at learning rate 0.025 instead of 0.05 (section 47).
PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS_B64_LR0025 = one_change(
    PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS_B64, "_b64_", "_b64_lr0025_",
    ", learning rate 0.025")
# The same for 48 epochs instead of 24 (section 48).
PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS_B64_LR0025_48EP = dataclasses.replace(
    PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS_B64_LR0025,
    run=PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS_B64_LR0025.run.replace("_24ep", "_48ep"),
    label=PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS_B64_LR0025.label.replace("24-ep", "48-ep"))

CUHK01_485_486 = (
    TrainedJlml("half width, 25 + 12 ep", "cpu-cuhk01_485_486_single", FOR_CUHK01,
                "transfer-cuhk01_485_486_single/results_transfer.json"),
    TrainedJlml("paper width, 8 + 12 ep", "cpu-paper_width-cuhk01_485_486_single",
                PAPER_WIDTH_FOR_CUHK01,
                "transfer-paper_width-cuhk01_485_486_single/results_transfer.json"),
    TrainedJlml("paper width, 25 + 12 ep", "cpu-paper_width25-cuhk01_485_486_single",
                PAPER_WIDTH25_FOR_CUHK01),
    TrainedJlml("paper width, 160x64, 8 + 12 ep",
                "recipe/paper_width_160x64_8ep/continue_cuhk01", PAPER_WIDTH160_FOR_CUHK01),
    CAMERA_GROUPS_CUHK01, CAMERA_GROUPS_CONTINUED_CUHK01, CAMERA_GROUPS_JOINT_CUHK01,
    CAMERA_GROUPS_JOINT_CUHK01_FT8, PAPER_WIDTH_CAMERA_GROUPS_CONTINUED_CUHK01,
    PAPER_WIDTH_CAMERA_GROUPS_JOINT_CUHK01_FT8)
# (label, paper key, models, their results file, LOMO results folder prefix)
BENCHMARKS = (
    ("CUHK01 485/486 single shot", "cuhk01/485_486_single_shot", CUHK01_485_486, "results.json",
     "lomo_xqda/cuhk01_485_486_single_shot"),
    ("CUHK01 485/486 multi shot", "cuhk01/485_486_multi_shot",
     tuple(dataclasses.replace(m, transfer=None) for m in CUHK01_485_486),
     "results_multi_shot.json", "lomo_xqda/cuhk01_485_486_multi_shot"),
    ("CUHK01 871/100 single shot", "cuhk01/871_100_single_shot",
     (TrainedJlml("half width, 25 + 12 ep", "cpu-cuhk01_871_100_single", FOR_CUHK01),
      TrainedJlml("paper width, 160x64, 8 + 12 ep",
                  "recipe/paper_width_160x64_8ep/continue_cuhk01_871_100",
                  PAPER_WIDTH160_FOR_CUHK01),
      CAMERA_GROUPS_JOINT_CUHK01_871_100, PAPER_WIDTH_CAMERA_GROUPS_JOINT_CUHK01_871_100,
      # the joint chain's pre-training alone, read out on the 871/100 splits (section 31)
      dataclasses.replace(CAMERA_GROUPS_CONTINUED_CUHK01, run=None, transfer=(
          f"{CAMERA_GROUPS}/camera_groups_continue_for_cuhk01_transfer_871_100/"
          f"results_transfer{PER_CAMERA_SUFFIX}.json"))),
     "results.json",
     "lomo_xqda/cuhk01_871_100_single_shot"),
    ("GRID 125/125 + 775 distractors", "grid/125_125",
     (TrainedJlml("half width, 21 + 12 ep", "cpu-grid", FOR_VIPER_GRID,
                  "transfer-grid/results_transfer.json"),
      TrainedJlml("paper width, 8 + 12 ep", "cpu-paper_width-grid",
                  PAPER_WIDTH_FOR_VIPER_GRID,
                  "transfer-paper_width-grid/results_transfer.json"),
      camera_groups_for_viper_grid("grid"), camera_groups_for_viper_grid("grid", seed=1),
      camera_groups_for_viper_grid("grid", epochs=12, fine_tuned="camera_groups_12ep_grid_ft"),
      camera_groups_for_viper_grid("grid", seed=1, epochs=12),
      camera_groups_for_viper_grid("grid", epochs=12, width="paper"),
      camera_groups_continued_for_viper_grid("grid"),
      camera_groups_continued_for_viper_grid("grid", width="paper")),
     "results.json", "lomo_xqda/grid_125_125"),
    ("VIPeR 316/316", "viper/316_316",
     (TrainedJlml("half width, 21 + 12 ep", "cpu-viper", FOR_VIPER_GRID,
                  "transfer-viper/results_transfer.json"),
      TrainedJlml("paper width, 8 + 12 ep", "cpu-paper_width-viper",
                  PAPER_WIDTH_FOR_VIPER_GRID,
                  "transfer-paper_width-viper/results_transfer.json"),
      camera_groups_for_viper_grid("viper"), camera_groups_for_viper_grid("viper", seed=1),
      camera_groups_for_viper_grid("viper", epochs=12),
      camera_groups_for_viper_grid("viper", seed=1, epochs=12),
      camera_groups_for_viper_grid("viper", epochs=12, width="paper"),
      camera_groups_continued_for_viper_grid("viper", "camera_groups_continue_12ep_viper_ft"),
      camera_groups_continued_for_viper_grid(
          "viper", "paper_width_camera_groups_continue_12ep_viper_ft", width="paper"),
      PAPER_WIDTH_VIPER_FT_24EP, PAPER_WIDTH_VIPER_FT_DISTILLED,
      PAPER_WIDTH_VIPER_FT_DISTILLED_24EP, PAPER_WIDTH_VIPER_RERUN_DISTILLED_24EP,
      PAPER_WIDTH_VIPER_RERUN_DISTILLED_PAIRS, PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS,
      PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS_B64,
      PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS_B64_LR0025,
      PAPER_WIDTH_VIPER_RERUN_DISTILLED_W5_PAIRS_B64_LR0025_48EP),
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


def row(benchmark: str, model: str, readout: str, s: dict, hours: str) -> str:
    return (f"| {benchmark} | {model} | {readout} | {s['trials']} | " + " | ".join(cells(s))
            + f" | {hours} |")


def model_rows(results: pathlib.Path, label: str, model: TrainedJlml, name: str) -> list[str]:
    """The fine-tuned model's row, its features matched by XQDA, XQDA's map built in, XQDA on
    its features and LOMO's, and its direct transfer by L2 and fused with LOMO (those rows alone
    for a model without a fine-tuned run)."""
    pre_hours = sum(training_hours(results / r) or 0 for r in model.pretrain)
    jlml = f"JLML {model.label}"
    per_camera = PER_CAMERA if model.camera_groups else ""
    transfer_rows = []
    for readout, name_in in ((L2, ""), (FUSED, FUSED_SUFFIX)):
        moved = summary(results / model.transfer.replace(
            "results_transfer", "results_transfer" + name_in, 1)) if model.transfer else None
        if moved:
            transfer_rows.append(row(label, jlml, f"{TRANSFER}, {readout}{per_camera}", moved,
                                    f"{pre_hours:.2f}"))
    if model.run is None:
        return transfer_rows
    hours = f"{(training_hours(results / model.run) or 0) + pre_hours:.2f}"
    suffix = PER_CAMERA_SUFFIX if model.camera_groups else ""
    rows = []
    tuned = summary(results / model.run / name.replace(".json", suffix + ".json"))
    if tuned:
        rows.append(row(label, jlml, f"{FINE_TUNED}, {L2}{per_camera}", tuned, hours))
    plain = name == "results.json" and not model.camera_groups  # XQDA was fitted on those only
    xqda = summary(results / model.run / name.replace("results", "results_xqda", 1)) \
        if plain else None
    if xqda:
        rows.append(row(label, jlml, f"{FINE_TUNED}, {XQDA_ON_FEATURES}", xqda, hours))
    if name == "results.json":  # XQDA's map and the fused XQDA: single-shot readouts only
        for readout, tag in ((XQDA_MAP, "_xqda_map"), (FUSED, FUSED_SUFFIX)):
            # a per-camera readout was fitted on each camera's calibrated features
            learned = summary(results / model.run / f"results{tag}{suffix}.json")
            if learned:
                rows.append(row(label, jlml, f"{FINE_TUNED}, {readout}{per_camera}", learned,
                                hours))
    return rows + transfer_rows


def table(results: pathlib.Path) -> str:
    lines = ["| benchmark | model | readout | trials | R1 | R5 | R10 | R20 | mAP "
             "| hours (2-core CPU) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, key, models, name, lomo in BENCHMARKS:
        for model in models:
            lines.extend(model_rows(results, label, model, name))
        floor = floor_summary(results / FLOORS[label]) if label in FLOORS else None
        if floor:
            lines.append(row(label, FLOOR_METHOD, f"{L2}, no training (the floor)", floor, "-"))
        variants = {v: summary(results / f"{lomo}_{v}" / "results.json") for v in LOMO_VARIANTS}
        variants = {v: s for v, s in variants.items() if s}
        if variants:
            best = max(variants.values(), key=lambda s: s["mean"]["rank1"])
            r1 = sorted(100 * s["mean"]["rank1"] for s in variants.values())
            lines.append(row(label, best["method"], f"best of {len(variants)} Retinex variants "
                             f"(R1 {r1[0]:.1f}-{r1[-1]:.1f})", best, "-"))
        ref = paper.reference(key)
        if ref:
            lines.append(f"| {label} | JLML, the paper (GPU, full width, 224x96) | {L2} | 10 | "
                         + " | ".join(f"{ref[k]:.1f}" if k in ref else "-"
                                      for k in RANKS + ("map",)) + " | - |")
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
