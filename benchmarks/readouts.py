"""Which test-time readout of a trained JLML matches best with L2? No training, only evaluation.

The deployed embedding is the concatenation of both branches' features after BNNeck, L2-normalised,
with test-time flip. This compares it, on a fine-tuned multi-trial run's own test splits, with:
the features before BNNeck, each branch normalised before concatenation, one branch alone, and
k-reciprocal re-ranking (Zhong et al. 2017) of the deployed embedding at several (k1, k2, lambda).

    python benchmarks/readouts.py --run_dir=runs/cpu-cuhk01_485_486_single --trials=0,1,2 \
        --out=results/recipe/cuhk01_test_time_readouts.json

Writes the per-trial R1/mAP of every readout (JSON) and a Markdown table beside it with the paired
R1 difference from the deployed readout (95 % t interval).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, os.fspath(ROOT))

import numpy as np  # noqa: E402

from jlml_tf.evaluation.paired import format_difference, paired_difference  # noqa: E402

DEPLOYED = "deployed: both branches after BNNeck, concatenated"
# readout name: (feature layer suffix, branches, normalise each branch before concatenating)
READOUTS = {
    DEPLOYED: ("post", ("global", "local"), False),
    "both branches before BNNeck, concatenated": ("pre", ("global", "local"), False),
    "both after BNNeck, each normalised, concatenated": ("post", ("global", "local"), True),
    "both before BNNeck, each normalised, concatenated": ("pre", ("global", "local"), True),
    "global branch after BNNeck": ("post", ("global",), False),
    "local branch after BNNeck": ("post", ("local",), False),
}
RERANKS = ((20, 6, 0.3), (6, 3, 0.3), (4, 1, 0.5))  # (k1, k2, lambda); the first is the paper's default


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def readout(views: list[dict[str, np.ndarray]], layer: str, branches: tuple[str, ...],
            per_branch: bool) -> np.ndarray:
    """One readout with test-time flip as the deployed model does it: each view's feature is
    normalised, the views are summed and the sum normalised again (jlml.with_flip_test)."""
    def one_view(parts):
        chosen = [parts[f"{b}_{layer}"] for b in branches]
        return unit(np.concatenate([unit(c) if per_branch else c for c in chosen], axis=1))
    return unit(sum(one_view(parts) for parts in views))


def branch_feature_model(training_model):
    """pixels -> {global_pre, global_post, local_pre, local_post}: each branch's feature before
    and after BNNeck."""
    import keras

    from jlml_tf.modeling.jlml import FEATURE_LAYERS  # ("global_feature", "local_feature")

    layers = {f"{name.split('_')[0]}_{stage}": name + suffix
              for name in FEATURE_LAYERS for stage, suffix in (("pre", ""), ("post", "_bn"))}
    names = {layer.name for layer in training_model.layers}
    missing = [n for n in layers.values() if n not in names]
    if missing:  # the readouts compare both branches, before and after BNNeck
        raise ValueError(f"needs a two-branch model trained with --feature_bn; no layer {missing}")
    return keras.Model(training_model.input,
                       {key: training_model.get_layer(name).output for key, name in layers.items()})


def trial_views(loaded, data, rows: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Branch features of `rows` for the image and its mirror."""
    import tensorflow as tf

    from jlml_tf.data import pipeline

    model = branch_feature_model(loaded.training_model)
    forward = tf.function(lambda x: {k: tf.cast(v, tf.float32) for k, v in model(x, training=False).items()})
    views = [{}, {}]
    cfg = loaded.model_cfg
    for images in pipeline.eval_dataset(data.table, rows, cfg.input_height, cfg.input_width, 64):
        for view, pixels in zip(views, (images, tf.reverse(images, axis=[2]))):
            for key, value in forward(pixels).items():
                view.setdefault(key, []).append(value.numpy())
    return [{k: np.concatenate(v) for k, v in view.items()} for view in views]


def evaluate_trial(trial_dir: pathlib.Path) -> dict[str, dict]:
    """{readout name: {"rank1", "map"}} on the trial the model was fine-tuned for."""
    import jlml_tf_datasets
    from jlml_tf.evaluation import protocol
    from jlml_tf.evaluation.rerank import RerankConfig
    from jlml_tf.inference.run_dir import data_source, load_run

    loaded = load_run(trial_dir)
    source = data_source(loaded.config)
    data = jlml_tf_datasets.load(source.name, source.protocol, data_dir=source.data_dir,
                                 manual_dir=source.manual_dir, **source.options)
    (trial,) = [t for t in data.trials if t.name == loaded.config["data"]["trial"]]
    rows = np.unique(np.concatenate([trial.query, trial.gallery]))
    views = trial_views(loaded, data, rows)
    pids, cams = data.table.pids, data.table.camids

    def score(features, rerank=None):
        q, g = features[np.searchsorted(rows, trial.query)], features[np.searchsorted(rows, trial.gallery)]
        r = protocol.evaluate_features(q, pids[trial.query], cams[trial.query], g,
                                       pids[trial.gallery], cams[trial.gallery], metric="l2",
                                       same_camera_junk=data.same_camera_junk, rerank=rerank).results
        return {"rank1": float(r["rank1"]), "map": float(r["map"])}

    scores = {name: score(readout(views, *spec)) for name, spec in READOUTS.items()}
    deployed = readout(views, *READOUTS[DEPLOYED])
    for k1, k2, lam in RERANKS:
        scores[rerank_name(k1, k2, lam)] = score(deployed, RerankConfig(k1, k2, lam))
    return scores


def rerank_name(k1: int, k2: int, lam: float) -> str:
    return f"deployed + k-reciprocal re-ranking k1={k1}, k2={k2}, lambda={lam}"


def markdown(per_trial: dict[str, dict[str, dict]]) -> str:
    """Mean +- std per readout over the trials and its paired R1 difference from the deployed one."""
    trials = sorted(per_trial, key=lambda name: int(name.removeprefix("trial")))
    names = list(per_trial[trials[0]])
    by_readout = {n: {t: per_trial[t][n] for t in trials} for n in names}
    lines = [f"Trials: {', '.join(trials)}", "",
             "| readout | R1 | mAP | paired R1 difference from the deployed readout |",
             "|---|---|---|---|"]
    for name in names:
        r1 = 100 * np.array([by_readout[name][t]["rank1"] for t in trials])
        mp = 100 * np.array([by_readout[name][t]["map"] for t in trials])
        spread = lambda v: f"{v.mean():.1f} ± {v.std():.1f}"  # noqa: E731  (std over trials as every table here)
        d = None if name == DEPLOYED else paired_difference(by_readout[name], by_readout[DEPLOYED])
        diff = "-" if d is None else format_difference(d)
        lines.append(f"| {name} | {spread(r1)} | {spread(mp)} | {diff} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, help="a multi-trial run (trial_NN/ folders)")
    parser.add_argument("--trials", default="0,1,2", help="trial indices, e.g. 0,1,2")
    parser.add_argument("--out", required=True, help="JSON to write; the Markdown goes beside it")
    args = parser.parse_args(argv)
    run = pathlib.Path(args.run_dir)
    try:
        trials = [int(t) for t in args.trials.split(",")]
    except ValueError:
        parser.error(f"--trials={args.trials}: expected indices such as 0,1,2")
    missing = [t for t in trials if not (run / f"trial_{t:02d}" / "config.json").is_file()]
    if missing:
        parser.error(f"--run_dir={run}: no trial_NN/config.json for trials {missing}")
    per_trial = {}
    for t in trials:
        try:
            per_trial[f"trial{t}"] = evaluate_trial(run / f"trial_{t:02d}")
        except ValueError as e:
            parser.error(f"--run_dir={run / f'trial_{t:02d}'}: {e}")
        print(f"trial {t}: deployed R1 {100 * per_trial[f'trial{t}'][DEPLOYED]['rank1']:.1f}", flush=True)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run_dir": os.fspath(run), "per_trial": per_trial}, indent=1))
    table = markdown(per_trial)
    out.with_suffix(".md").write_text(f"# Test-time readouts of {run}\n\n{table}")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
