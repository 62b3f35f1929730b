"""Parity report: does every exported format compute what the Keras model computes?

For each format, on an evaluation set (the query + gallery rows of a data set's trial, the
run's own or the first, or a folder of images): the largest absolute difference and the mean cosine similarity of its
embeddings to the Keras model's, rank-1 and mAP and their change from the Keras model's (in
percentage points, with the Market-1501 rules of `jlml_tf.evaluation`), the file size, and the
latency per image (median and p95 over repeated runs, batch 1 and batch 32, on `num_threads`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Callable

import numpy as np

from jlml_tf.data.types import ReidData
from jlml_tf.data import preprocessing

PARITY_MD = "parity.md"
PARITY_JSON = "parity.json"
# Goal: full int8 rank-1 at most 1 point below TFLite float32. A gain is not a failure: on a
# test set of Q queries one point is 100/Q queries, so small gains and losses are both noise.
RANK1_GOAL_POINTS = 1.0


@dataclasses.dataclass
class EvalSet:
    """Decoded images; with identities, the first `num_query` rows are queries, the rest gallery."""

    images: np.ndarray  # uint8 [N, H, W, 3]
    description: str
    encoded: list[bytes] | None = None  # the original files, for the bytes signature
    pids: np.ndarray | None = None
    camids: np.ndarray | None = None
    num_query: int = 0
    same_camera_junk: bool = True

    @property
    def has_identities(self) -> bool:
        return self.pids is not None and 0 < self.num_query < len(self.images)


def pick_trial(data: ReidData, name: str | None = None):
    """The trial called `name`, or the first: a model fine-tuned for one split of a multi-split
    protocol is checked on that split, whose test people it has not seen."""
    if not data.trials:
        raise ValueError(f"data set {data.name}/{data.protocol} has no trials")
    names = [t.name for t in data.trials]
    if name is None:
        return data.trials[0]
    if name not in names:
        raise ValueError(f"{data.name}/{data.protocol} has no trial {name!r} (trials: {names})")
    return data.trials[names.index(name)]


def own_trial_name(data: ReidData, run_config: dict) -> str | None:
    """The trial a run was trained for, when `data` is its data set and protocol, else None."""
    own = run_config.get("data", {})
    if (data.name, data.protocol) == (own.get("dataset"), own.get("protocol")):
        return own.get("trial")
    return None


def eval_set_from_reid(data: ReidData, height: int, width: int, max_query: int | None = None,
                       max_gallery: int | None = None, trial_name: str | None = None) -> EvalSet:
    """A trial's query + gallery rows (optionally the first max_query/max_gallery); the trial
    called `trial_name`, or the first."""
    from jlml_tf.data import pipeline

    trial = pick_trial(data, trial_name)
    query, gallery = trial.query[:max_query], trial.gallery[:max_gallery]
    if len(query) == 0 or len(gallery) == 0:
        raise ValueError(f"{data.name}/{data.protocol} trial {trial.name}: empty query "
                         f"({len(query)}) or gallery ({len(gallery)})")
    rows = np.concatenate([query, gallery])
    table = data.table.subset(rows)
    return EvalSet(images=pipeline.decode_all(table, height, width),
                   description=f"{data.name}/{data.protocol} trial {trial.name}: "
                               f"{len(query)} query + {len(gallery)} gallery images",
                   encoded=[bytes(b) for b in table.images], pids=table.pids,
                   camids=table.camids, num_query=len(query),
                   same_camera_junk=data.same_camera_junk)


def eval_set_from_files(paths, height: int, width: int) -> EvalSet:
    """A folder (or list) of images: differences, sizes and latency only (no identities)."""
    files = preprocessing.list_images(paths)
    if not files:
        raise ValueError(f"--parity_images={list(map(str, paths))}: no images found")
    encoded = [pathlib.Path(f).read_bytes() for f in files]
    return EvalSet(images=preprocessing.load_images(encoded, height, width),
                   description=f"{len(files)} images from {', '.join(map(str, paths))}",
                   encoded=encoded)


def evaluate_ranking(features: np.ndarray, s: EvalSet) -> dict | None:
    if not s.has_identities:
        return None
    from jlml_tf.evaluation import evaluate

    q, g = slice(0, s.num_query), slice(s.num_query, None)
    res = evaluate(features[q], s.pids[q], s.camids[q], features[g], s.pids[g], s.camids[g],
                   metric="l2", same_camera_junk=s.same_camera_junk)
    return {"rank1": 100.0 * float(res["rank1"]), "map": 100.0 * float(res["map"])}


def latency(fn: Callable[[np.ndarray], object], images: np.ndarray, batch_size: int, runs: int,
            warmup: int = 2, tick: Callable[[], object] = lambda: None) -> dict:
    """Milliseconds per image of fn(batch): median and p95 over `runs` timed calls.
    `tick()` is called after every call (warm-up included), for a progress bar."""
    reps = -(-batch_size // len(images))
    batch = np.concatenate([images] * reps)[:batch_size] if reps > 1 else images[:batch_size]
    for _ in range(warmup):
        fn(batch)
        tick()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(batch)
        times.append((time.perf_counter() - start) * 1000.0 / batch_size)
        tick()
    return {"median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)),
            "runs": runs}


def compare(reference: np.ndarray, features: np.ndarray) -> dict:
    ref, feat = np.asarray(reference, np.float64), np.asarray(features, np.float64)
    cos = (ref * feat).sum(1) / np.maximum(np.linalg.norm(ref, axis=1)
                                           * np.linalg.norm(feat, axis=1), 1e-12)
    return {"max_abs_diff": float(np.abs(ref - feat).max()), "mean_cosine": float(cos.mean()),
            "min_cosine": float(cos.min())}


@dataclasses.dataclass
class Candidate:
    """One format to check: `embed` maps the eval set to features, `timed` one batch."""

    name: str
    description: str
    embed: Callable[[EvalSet], np.ndarray]
    timed: Callable[[np.ndarray], object]
    path: str | None = None
    size_bytes: int | None = None
    batch_input: Callable[[EvalSet], object] | None = None  # what `timed` takes; default pixels


def _subset(s: EvalSet, start: int, stop: int) -> EvalSet:
    return dataclasses.replace(s, images=s.images[start:stop],
                               encoded=None if s.encoded is None else s.encoded[start:stop],
                               pids=None, camids=None, num_query=0)


def embed_in_chunks(cand: Candidate, s: EvalSet, chunk: int = 64, bar=None) -> np.ndarray:
    """cand.embed over the evaluation set a chunk at a time, behind a progress bar."""
    progress = bar(total=len(s.images), desc=f"{cand.name}: embedding", unit="img") \
        if bar else None
    try:
        outs = []
        for start in range(0, len(s.images), chunk):
            outs.append(np.asarray(cand.embed(_subset(s, start, start + chunk))))
            if progress is not None:
                progress.update(len(outs[-1]))
        return np.concatenate(outs)
    finally:
        if progress is not None:
            progress.close()


def run(reference: Candidate, candidates: list[Candidate], eval_set: EvalSet,
        latency_runs: tuple[int, int] = (30, 10), num_threads: int = 2,
        batch_sizes: tuple[int, int] = (1, 32), progress: Callable[[str], None] = print,
        bar=None, warmup: int = 2) -> dict:
    """Compares every candidate to the reference on eval_set; returns the report dict.

    `progress(message)` is told each format as it starts; `bar`, a tqdm-like factory (called
    with total=, desc=, unit=), draws progress bars over the images embedded and the timed
    runs (None: no bars)."""
    progress(f"parity on {eval_set.description}: {1 + len(candidates)} formats")
    rows, ref_features, ref_rank = {}, None, None
    for i, cand in enumerate([reference] + candidates, start=1):
        progress(f"parity [{i}/{1 + len(candidates)}]: {cand.name}")
        feats = embed_in_chunks(cand, eval_set, bar=bar)
        if cand is reference:
            ref_features, ref_rank = feats, evaluate_ranking(feats, eval_set)
        row = {"description": cand.description, "path": cand.path, "size_bytes": cand.size_bytes,
               **compare(ref_features, feats)}
        rank = evaluate_ranking(feats, eval_set)
        if rank is not None:
            row.update(rank1=rank["rank1"], map=rank["map"],
                       rank1_change=rank["rank1"] - ref_rank["rank1"],
                       map_change=rank["map"] - ref_rank["map"])
        else:
            row.update(rank1=None, map=None, rank1_change=None, map_change=None)
        inputs = cand.batch_input(eval_set) if cand.batch_input else eval_set.images
        timer = bar(total=sum(latency_runs) + warmup * len(batch_sizes),
                    desc=f"{cand.name}: timing", unit="call") if bar else None
        tick = timer.update if timer is not None else (lambda: None)
        try:
            row["latency"] = {f"batch{b}": latency(cand.timed, inputs, b, runs, warmup, tick)
                              for b, runs in zip(batch_sizes, latency_runs)}
        finally:
            if timer is not None:
                timer.close()
        rows[cand.name] = row
    report = {"eval_set": eval_set.description, "num_images": int(len(eval_set.images)),
              "reference": reference.name, "num_threads": num_threads,
              "rank1_goal_points": RANK1_GOAL_POINTS, "formats": rows}
    if "tflite_int8" in rows and rows["tflite_int8"]["rank1_change"] is not None:
        base = rows.get("tflite_float32", rows[reference.name])
        gap = rows["tflite_int8"]["rank1"] - base["rank1"]
        report["int8_rank1_gap_to_float32"] = gap
        report["int8_meets_goal"] = bool(gap >= -RANK1_GOAL_POINTS)
        report["num_queries"] = int(eval_set.num_query)
    return report


def points(value: float) -> str:
    """'1 point', '0.5 points', '16.7 points' (rank-1 percentage points)."""
    text = f"{value:.3g}"
    return f"{text} point" + ("" if text == "1" else "s")


def _f(v, spec=".4g") -> str:
    return "n/a" if v is None else format(v, spec)


def report_markdown(report: dict) -> str:
    lines = ["# Parity report", "",
             f"Evaluation set: {report['eval_set']}. Reference: the Keras model "
             f"(`{report['reference']}`). Latency: milliseconds per image, median / p95, "
             f"{report['num_threads']} threads.", "",
             "| format | size (bytes) | max abs diff | mean cosine | rank-1 % | Δ rank-1 | mAP % "
             "| Δ mAP | batch 1 ms | batch 32 ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["formats"].items():
        lat = r["latency"]
        lines.append(
            f"| {name} | {_f(r['size_bytes'], ',')} | {_f(r['max_abs_diff'], '.3g')} "
            f"| {_f(r['mean_cosine'], '.6f')} | {_f(r['rank1'], '.2f')} "
            f"| {_f(r['rank1_change'], '+.2f')} | {_f(r['map'], '.2f')} "
            f"| {_f(r['map_change'], '+.2f')} "
            f"| {lat['batch1']['median_ms']:.2f} / {lat['batch1']['p95_ms']:.2f} "
            f"| {lat['batch32']['median_ms']:.2f} / {lat['batch32']['p95_ms']:.2f} |")
    lines.append("")
    if "int8_meets_goal" in report:
        verdict = "meets" if report["int8_meets_goal"] else "MISSES"
        queries = report.get("num_queries") or 0
        one_query = (f" With {queries} queries one query is {points(100 / queries)}."
                     if queries else "")
        lines.append(f"Full int8 rank-1 is {report['int8_rank1_gap_to_float32']:+.2f} points from "
                     f"TFLite float32: it {verdict} the goal (at most "
                     f"{points(report['rank1_goal_points'])} lower).{one_query}")
    elif not any(r["rank1"] is not None for r in report["formats"].values()):
        lines.append("No identities in the evaluation set: rank-1 and mAP are not measured.")
    lines += ["", "Formats:", ""]
    lines += [f"- {name}: {r['description']}" + (f" (`{r['path']}`)" if r["path"] else "")
              for name, r in report["formats"].items()]
    return "\n".join(lines) + "\n"


def write_report(report: dict, directory: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path]:
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    md, js = directory / PARITY_MD, directory / PARITY_JSON
    js.write_text(json.dumps(report, indent=2) + "\n")
    md.write_text(report_markdown(report))
    return md, js
