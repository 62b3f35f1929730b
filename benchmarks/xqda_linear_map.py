"""XQDA on a run's features as plain L2 after a linear map: can a deployment keep XQDA's gain?

XQDA's distance is (x - y)^T W M W^T (x - y) with M = I - inv(Lambda) positive semi-definite, so
it equals the squared L2 distance after x -> L^T x (`Metric.linear_map`): an exported model could
carry L as a last layer. The stack around the exported model (gallery, threshold, search)
assumes unit-norm embeddings, so this also measures the two ways to get them: normalising after
the map (drops |L^T x|), and putting the mapped vector on the unit sphere of one more dimension
(metric_learning.onto_sphere: `--metric=xqda_map`, what `export --linear_map` computes).
Per trial of a multi-trial run: features with test-time flip, XQDA fitted on the trial's
training split, then R1/mAP for L2 (the run's own readout), XQDA, L2 after the map, L2 after the
map and a normalisation, and L2 after the map on the sphere.

    python benchmarks/xqda_linear_map.py --run_dir=runs/probe/paper_width_160x64/cuhk01 \
        --out=results/recipe/paper_width_160x64_8ep/xqda_linear_map.json
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import numpy as np  # noqa: E402

READOUTS = ("l2", "xqda", "linear_map_l2", "linear_map_normalised_l2", "linear_map_sphere_l2")


def trial_readouts(trial_dir: pathlib.Path) -> dict:
    import jlml_tf_datasets
    from jlml_tf.evaluation.distances import l2_normalise
    from jlml_tf.evaluation.metric_learning import fit_metric, fit_xqda
    from jlml_tf.evaluation.protocol import evaluate_features
    from jlml_tf.inference import eval_trial, run_dir as run_dir_lib

    config = json.loads((trial_dir / run_dir_lib.CONFIG_FILE).read_text())
    source = run_dir_lib.data_source(config)
    data = jlml_tf_datasets.load(source.name, source.protocol, data_dir=source.data_dir,
                                 manual_dir=source.manual_dir, **source.options)
    trial = next(t for t in data.trials if t.name == config["data"]["trial"])
    loaded = run_dir_lib.load_run(run_dir_lib.resolve_checkpoint(trial_dir)[1])
    rows = np.unique(np.concatenate([trial.train, trial.query, trial.gallery]))
    features = eval_trial.extract_features(
        loaded.embedding_model, data.table, rows, loaded.model_cfg.input_height,
        loaded.model_cfg.input_width, verbose=0, flip=True)
    lookup = lambda r: features[np.searchsorted(rows, r)]  # noqa: E731
    table, q, g = data.table, trial.query, trial.gallery
    xqda = fit_xqda(lookup(trial.train), table.pids[trial.train], table.camids[trial.train])
    linear = xqda.linear_map()
    deployed = fit_metric("xqda_map", lookup(trial.train), table.pids[trial.train],
                          table.camids[trial.train])  # what `export --linear_map` computes
    candidates = {"l2": ("l2", lookup(q), lookup(g)), "xqda": (xqda, lookup(q), lookup(g)),
                  "linear_map_l2": ("l2", lookup(q) @ linear, lookup(g) @ linear),
                  "linear_map_normalised_l2": ("l2", l2_normalise(lookup(q) @ linear),
                                               l2_normalise(lookup(g) @ linear)),
                  "linear_map_sphere_l2": (deployed, lookup(q), lookup(g))}
    out = {"map_dims": list(linear.shape)}
    for name in READOUTS:
        metric, fq, fg = candidates[name]
        r = evaluate_features(fq, table.pids[q], table.camids[q], fg, table.pids[g],
                              table.camids[g], metric, data.same_camera_junk).results
        out[name] = {"rank1": float(r["rank1"]), "map": float(r["map"])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", required=True, help="a multi-trial run (RUN/trial_NN/)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()
    trial_dirs = sorted(pathlib.Path(args.run_dir).glob("trial_*"))
    if not trial_dirs:
        sys.exit(f"--run_dir={args.run_dir}: no trial_NN/ run directories in it")
    per_trial = {}
    for trial_dir in trial_dirs:
        per_trial[trial_dir.name] = trial_readouts(trial_dir)
        print(trial_dir.name, {k: round(100 * v["rank1"], 1)
                               for k, v in per_trial[trial_dir.name].items() if k in READOUTS},
              flush=True)
    summary = {}
    for name in READOUTS:
        for key in ("rank1", "map"):
            values = 100 * np.array([t[name][key] for t in per_trial.values()])
            summary[f"{name}/{key}"] = [round(float(values.mean()), 1),
                                        round(float(values.std()), 1)]
    print("\n| readout | R1 | mAP |\n|---|---|---|")
    for name in READOUTS:
        r1, m = summary[f"{name}/rank1"], summary[f"{name}/map"]
        print(f"| {name} | {r1[0]} ± {r1[1]} | {m[0]} ± {m[1]} |")
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(
        {"run_dir": args.run_dir, "summary": summary, "trials": per_trial}, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
