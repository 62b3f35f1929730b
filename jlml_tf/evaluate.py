"""Evaluate a trained run again, with another metric, re-ranking or pooling, and calibrate a
"no match" threshold.

    python -m jlml_tf.evaluate --run_dir=runs/market
    python -m jlml_tf.evaluate --run_dir=runs/market --rerank --k1=20 --k2=6 --lambda_value=0.3
    python -m jlml_tf.evaluate --run_dir=runs/market --metric=xqda
    python -m jlml_tf.evaluate --run_dir=runs/market --metric=xqda_map --save_linear_map
    python -m jlml_tf.evaluate --checkpoint=runs/market/checkpoints/ckpt-4000
    python -m jlml_tf.evaluate --run_dir=runs/cuhk03-classic_labeled     # all trial_NN/
    python -m jlml_tf.evaluate --run_dir=runs/market --calibrate_threshold \
        --calibration_split=test --target_false_match_rate=0.01

The data set, protocol and trial come from RUN/config.json (override with --dataset,
--protocol, --data_dir, --manual_dir, --dataset_option, --trial). A run of several trials
(RUN/trial_NN/, one run directory each) is evaluated trial by trial, each model on its own trial,
and summarised as mean ± std, as training does.

Files (in --output_dir, default the run directory; per trial in its trial directory), named with
a suffix per option so training's own results.* are never overwritten:
    results_<suffix>.json / .md, cmc_<suffix>.png   metrics, the paper's figures beside them
    worst_best_<suffix>.png                         ranked lists of the worst and best queries
e.g. results_rerank.json, results_xqda.json, results_l2.json for plain L2.

--metric=xqda_map ranks as a model exported with XQDA built in: XQDA's linear map L
(`Metric.linear_map`), put on the unit sphere of one more dimension (metric_learning.onto_sphere),
then L2. --save_linear_map stores L and the sphere's radius as RUN/linear_map.npz (per trial in
its trial directory) for `python -m jlml_tf.export --linear_map`; for a data set none of whose
images trained the model (direct transfer, --dataset=...), beside the results (--output_dir).
With --camera_bn the map is fitted on each camera's calibrated embeddings and marked so:
export it once per camera, with that camera's images in --camera_bn_images.

--fuse_lomo=VARIANT (with --metric=xqda) fits XQDA on each image's embedding and LOMO features
(that Retinex variant, as `python -m jlml_tf.baseline --retinex` computes and caches them)
concatenated, [w * embedding, LOMO] with w = --fusion_weight, on the baseline's cross-view
training pairs (jlml_tf/evaluation/fusion.py): deep and hand-crafted features matched together.
With --metric=xqda_map it ranks with that XQDA's map on the sphere, LOMO computed at the model's
input size; --save_linear_map (with --fuse_lomo=none) stores the map, and `export
--linear_map` builds LOMO (features/lomo_graph.py) and the map into the exported model.

--calibrate_threshold computes L2 distances between images of people the model was not trained
on: same identity across cameras = true matches, different identities = false matches; it picks
the distance at which the false-match rate equals --target_false_match_rate, reports the
true-match rate there and the false-match rate it implies on unseen people, and stores it with
the model as RUN/threshold.json (recording which identities it used), where `jlml_tf.search`
and the export find it. --calibration_split chooses the identities: `validation` (default), the
training identities the run held out from training (RUN/config.json data.validation_pids);
`test`, the test trial's identities (unseen in training; the unseen-people rate is then
cross-validated over them); `train`, the training identities themselves, as before (the model
knows these people, so unseen people match more often than the target). With
--metric=xqda_map --save_linear_map it calibrates the mapped embedding instead and stores the
threshold in linear_map.npz, which `export --linear_map` ships as the model's threshold.json.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Sequence

import numpy as np

import jlml_tf_datasets

from jlml_tf import cli
from jlml_tf import paper as paper_lib
from jlml_tf.evaluation import fusion, metrics, report
from jlml_tf.evaluation.metric_learning import (LEARNED_METRICS, MAPPED, METRIC_NAMES,
                                                fit_metric, mapped)
from jlml_tf.evaluation.protocol import FeatureEvaluation, evaluate_features, worst_and_best
from jlml_tf.evaluation.rerank import RerankConfig
from jlml_tf.features import retinex as retinex_lib
from jlml_tf.inference import camera_bn, gallery_index
from jlml_tf.inference import threshold as threshold_lib

POOLINGS = ("mean", "max")
ALL_TRIALS = "all"
DATASETS = tuple(jlml_tf_datasets.MODULES)


# ----------------------------------------------------------------------------------------------
# Result files


def option_suffix(metric: str, rerank: bool, multi_query_pooling: str = "mean",
                  dataset_override: str | None = None, flip: bool = False,
                  camera_bn: str = "off", fuse_lomo: str | None = None,
                  fusion_weight: float = fusion.DEFAULT_WEIGHT) -> str:
    """'_l2', '_rerank', '_xqda_rerank', '_l2_mqmax', '_cuhk03-labeled_l2', '_l2_flip',
    '_l2_flip_cbn-train', '_xqda_lomo-none', '_xqda_lomo-msr-w0.5', ..."""
    parts = [dataset_override] if dataset_override else []
    if metric != "l2" or not rerank:
        parts.append(metric)
    if fuse_lomo:
        parts.append(f"lomo-{fuse_lomo}" + (f"-w{fusion_weight:g}"
                                            if fusion_weight != fusion.DEFAULT_WEIGHT else ""))
    if rerank:
        parts.append("rerank")
    if flip:
        parts.append("flip")
    if camera_bn != "off":
        parts.append(f"cbn-{camera_bn}")
    if multi_query_pooling != "mean":
        parts.append(f"mq{multi_query_pooling}")
    return "_" + "_".join(p.replace("/", "-") for p in parts)


def write_results(out_dir: str | os.PathLike, suffix: str, results: dict, **report_kwargs
                  ) -> dict[str, pathlib.Path]:
    """report.write_report, with the suffix in the file names (results<suffix>.json, ...)."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".eval_", dir=out))
    try:
        written = report.write_report(staging, results, **report_kwargs)
        paths = {}
        for kind, path in written.items():
            target = out / f"{path.stem}{suffix}{path.suffix}"
            os.replace(path, target)
            paths[kind] = target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def paper_key_for(data_name: str, protocol_name: str, metric: str, explicit: str | None) -> str:
    """The paper's figures to compare with; KISSME/XQDA have their own Market-1501 rows."""
    if explicit:
        return explicit
    key = f"{data_name}/{protocol_name}"
    if metric in LEARNED_METRICS and paper_lib.reference(f"{key}/{metric}"):
        return f"{key}/{metric}"
    return key


def method_name(metric: str, rerank: RerankConfig | None, pooling: str,
                fuse_lomo: str | None = None, fusion_weight: float = fusion.DEFAULT_WEIGHT
                ) -> str:
    name = f"JLML {metric}"
    if fuse_lomo:
        name = (f"JLML + LOMO ({retinex_lib.LABELS[fuse_lomo]}, weight {fusion_weight:g}) "
                f"{metric}")
    if rerank:
        name += f" + re-ranking (k1={rerank.k1}, k2={rerank.k2}, λ={rerank.lambda_value})"
    if pooling != "mean":
        name += f", {pooling}-pooled multi-query"
    return name


# ----------------------------------------------------------------------------------------------
# Pictures of rankings


def ranking_rows(evaluation: FeatureEvaluation, table, query_rows, gallery_rows, chosen,
                 same_camera_junk: bool, top_k: int = 10):
    """visualize.Row per chosen query: the query image, then its top-k gallery images after
    junk removal (as the metrics rank them), green for true matches, red otherwise."""
    from jlml_tf import visualize

    gallery_rows = np.asarray(gallery_rows)[evaluation.gallery_keep]
    gp, gc = table.pids[gallery_rows], table.camids[gallery_rows]
    rows = []
    if not len(chosen):
        return rows
    distances = evaluation.query_distances(np.asarray(chosen))
    for i, d in zip(chosen, distances):
        qrow = query_rows[i]
        qp, qc = table.pids[qrow], table.camids[qrow]
        order = metrics.argsort_rows(d[None, :])[0]
        junk = (gp[order] == qp) & (gc[order] == qc) & (qc != metrics.UNKNOWN_CAMERA) \
            if same_camera_junk else np.zeros(len(order), bool)
        order = order[~junk][:top_k]
        colours = [visualize.MATCH if qp > 0 and gp[j] == qp else visualize.NON_MATCH
                   for j in order]
        pq = evaluation.per_query
        header = (f"{table.filenames[qrow]}   AP {100 * pq.ap[i]:.1f}%, first true match at "
                  f"rank {pq.first_rank[i]}")
        rows.append(visualize.ranked_list_row(
            table.images[qrow], [table.images[gallery_rows[j]] for j in order], d[order],
            colours, header=header,
            identities=[(int(gp[j]), int(gc[j])) for j in order],
            query_identity=(int(qp), int(qc))))
    return rows


# ----------------------------------------------------------------------------------------------
# The command line


def define_flags():
    from absl import flags

    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_string("run_dir", None, "Run directory written by `python -m jlml_tf.train` "
                        "(its latest checkpoint), or a folder of trial_NN/ run directories.", **d)
    flags.DEFINE_string("checkpoint", None, "A checkpoint prefix RUN/checkpoints/ckpt-N instead "
                        "of --run_dir.", **d)
    flags.DEFINE_enum("dataset", None, DATASETS, "Evaluate on another data set than the run's.",
                      **d)
    flags.DEFINE_string("protocol", None, "Protocol (default: the run's, or the data set's first "
                        "with --dataset).", **d)
    flags.DEFINE_string("trial", None, "Trial name or index (default: the run's trial; with "
                        "--dataset, index 0); 'all': the one model on every trial, e.g. direct "
                        "transfer to another data set's protocol (results in trial_NN/).", **d)
    flags.DEFINE_string("data_dir", None, "Prepared data sets cache (default: the run's, or "
                        "$JLML_DATA_DIR / ~/jlml_data).", **d)
    flags.DEFINE_string("manual_dir", None, "Downloaded release (default: the run's).", **d)
    flags.DEFINE_list("dataset_option", None, "key=value loader options (default: the run's).", **d)
    flags.DEFINE_enum("metric", "l2", METRIC_NAMES, "Matching metric: L2 (the paper), cosine, or "
                      "KISSME/XQDA fitted on the training split's features.", **d)
    flags.DEFINE_bool("save_linear_map", False, "With --metric=xqda_map or kissme_map: store "
                      "the fitted linear map and its sphere radius (and, with "
                      "--calibrate_threshold, the mapped embedding's threshold) as "
                      "RUN/linear_map.npz (for a data set that did not train the model: in "
                      "--output_dir), for `python -m jlml_tf.export --linear_map`.", **d)
    flags.DEFINE_enum("fuse_lomo", None, retinex_lib.VARIANTS, "With --metric=xqda or "
                      "xqda_map: fit XQDA on the embedding and LOMO features with this Retinex "
                      "variant concatenated (deep and hand-crafted features matched together); "
                      "with xqda_map --save_linear_map (Retinex none), a map the export builds "
                      "in with LOMO computed in the graph.", **d)
    flags.DEFINE_float("fusion_weight", fusion.DEFAULT_WEIGHT, "With --fuse_lomo: the "
                       "embedding's weight in the concatenation [w * embedding, LOMO].", **d)
    flags.DEFINE_bool("rerank", False, "k-reciprocal re-ranking (Zhong et al. 2017).", **d)
    flags.DEFINE_bool("flip_test", False, "Test-time flip: embed each image and its mirror and "
                      "match their normalised sum (two forward passes).", **d)
    flags.DEFINE_enum("camera_bn", "off", camera_bn.SOURCES, "Per-camera batch "
                      "norm: embed each camera's images with every batch-norm layer's statistics "
                      "re-estimated on unlabelled images of that camera, from the trial's "
                      "training split (train) or from its query, gallery and multi-query images "
                      "(test, transductive; never the training split); off: the trained "
                      "statistics.", **d)
    flags.DEFINE_integer("k1", 20, "Re-ranking k1.", lower_bound=1, **d)
    flags.DEFINE_integer("k2", 6, "Re-ranking k2.", lower_bound=1, **d)
    flags.DEFINE_float("lambda_value", 0.3, "Re-ranking weight of the original distance.",
                       lower_bound=0.0, upper_bound=1.0, **d)
    flags.DEFINE_enum("multi_query_pooling", "mean", POOLINGS, "Pooling of multi-query "
                      "features (protocols with extra query images, e.g. Market multi query).", **d)
    flags.DEFINE_string("output_dir", None, "Where to write results (default: the run "
                        "directory, per trial its trial directory).", **d)
    flags.DEFINE_string("suffix", None, "File name suffix (default from the options, e.g. "
                        "_rerank).", **d)
    flags.DEFINE_string("paper_key", None, "Paper figures to compare with (jlml_tf/paper.py).", **d)
    flags.DEFINE_integer("batch_size", 64, "Feature extraction batch size.", lower_bound=1, **d)
    flags.DEFINE_integer("num_queries_shown", 4, "Worst and best queries drawn (each).",
                         lower_bound=0, **d)
    flags.DEFINE_integer("top_k_shown", 10, "Ranked gallery images drawn per query.",
                         lower_bound=1, **d)
    flags.DEFINE_bool("evaluation", True, "Evaluate (--noevaluation with "
                      "--calibrate_threshold calibrates only).", **d)
    flags.DEFINE_bool("calibrate_threshold", False, "Calibrate a no-match distance threshold "
                      "on identities held out from training (--calibration_split) and store it "
                      "as RUN/threshold.json (with --save_linear_map: in linear_map.npz).", **d)
    flags.DEFINE_float("target_false_match_rate", 0.01, "False-match rate at the threshold.",
                       lower_bound=0.0, upper_bound=1.0, **d)
    flags.DEFINE_enum("calibration_split", "validation", threshold_lib.SPLITS,
                      "Identities to calibrate the threshold on: validation (held out from "
                      "training by the run), test (the test trial's, unseen in training) or "
                      "train (seen in training: too lenient for unseen people).", **d)
    flags.DEFINE_integer("max_false_pairs", threshold_lib.DEFAULT_MAX_FALSE_PAIRS,
                         "Sample at most this many false-match pairs for the calibration.",
                         lower_bound=1, **d)
    flags.DEFINE_integer("verbose", 1, "0: quiet, 1: progress bars.", **d)
    return fv


UsageError = cli.UsageError


def parse_options(items: Sequence[str], flag: str = "--dataset_option") -> dict:
    return cli.key_values(items, flag)


def trial_dirs(run: pathlib.Path) -> list[pathlib.Path]:
    """[run] for a run directory, its trial_NN/ run directories for a multi-trial run."""
    from jlml_tf.inference import run_dir as run_dir_lib

    if (run / run_dir_lib.CONFIG_FILE).is_file():
        return [run]
    trials = sorted(t for t in run.glob("trial_*") if (t / run_dir_lib.CONFIG_FILE).is_file())
    if not trials:
        what = "no such folder" if not run.exists() else \
            f"no {run_dir_lib.CONFIG_FILE} and no trial_NN/ run directories in it"
        raise UsageError(f"--run_dir={run}: not a run directory ({what}); pass a folder "
                         "written by `python -m jlml_tf.train`")
    return trials


@dataclasses.dataclass
class Target:
    """One model to evaluate: its run directory, checkpoint (or None: latest), trial index."""

    run_dir: pathlib.Path
    checkpoint: str | None
    config: dict


def _load_data(fv, config: dict):
    from jlml_tf.inference import run_dir as run_dir_lib

    source = run_dir_lib.data_source(
        config, fv.dataset, fv.protocol, fv.data_dir, fv.manual_dir,
        parse_options(fv.dataset_option) if fv.dataset_option is not None else None)
    if not source.name:
        raise UsageError("config.json names no data set; pass --dataset")
    try:
        return jlml_tf_datasets.load(source.name, source.protocol, data_dir=source.data_dir,
                                     manual_dir=source.manual_dir, **source.options), \
            source.other_than_trained_on, source.data_dir
    except ValueError as e:
        raise UsageError(f"--dataset={source.name} --protocol={source.protocol}: {e}") from e


def _pick_trial(fv, data, config: dict, override: bool, position: int | None):
    """The trial a model is evaluated on: --trial, else the one it was trained for (by name),
    else (another data set) the trial at the model's position among the run's trials."""
    wanted = fv.trial
    names = [t.name for t in data.trials]
    if wanted is None and not override:
        wanted = config.get("data", {}).get("trial")
    if wanted is None:
        wanted = str(position or 0)
    if wanted in names:
        return data.trials[names.index(wanted)]
    if wanted.isdigit() and int(wanted) < len(data.trials):
        return data.trials[int(wanted)]
    raise UsageError(f"--trial={wanted}: {data.name}/{data.protocol} has trials {names}")


def _report_trial(fv, evaluation: FeatureEvaluation, data, trial, out_dir: pathlib.Path,
                  suffix: str, paper_key: str, checkpoint: str, log,
                  fused: "FusedLomo | None" = None) -> dict[str, pathlib.Path]:
    """results<suffix>.json/.md, cmc<suffix>.png and worst_best<suffix>.png of one trial."""
    from jlml_tf import visualize

    rerank = RerankConfig(fv.k1, fv.k2, fv.lambda_value) if fv.rerank else None
    name = method_name(fv.metric, rerank, fv.multi_query_pooling, fv.fuse_lomo,
                       fv.fusion_weight)
    title = f"{data.name} / {data.protocol} / {trial.name}"
    extra = {"checkpoint": checkpoint, "metric": fv.metric,
             "fusion": {"lomo_retinex": fv.fuse_lomo, "weight": fv.fusion_weight,
                        "lomo": fused.cfg.to_dict()} if fused else None,
             "rerank": dataclasses.asdict(rerank) if rerank else None,
             "multi_query_pooling": fv.multi_query_pooling, "dataset": data.name,
             "protocol": data.protocol, "trial": trial.name}
    paths = write_results(out_dir, suffix, {name: [evaluation.results]},
                          paper=paper_lib.reference(paper_key),
                          paper_label=f"Paper ({paper_key})", title=title, extra=extra)
    worst, best = worst_and_best(evaluation.per_query, fv.num_queries_shown)
    if len(worst) + len(best):
        rows = [ranking_rows(evaluation, data.table, trial.query, trial.gallery, chosen,
                             data.same_camera_junk, fv.top_k_shown) for chosen in (worst, best)]
        paths["worst_best"] = visualize.plot_worst_best(
            out_dir / f"worst_best{suffix}.png", *rows, title=f"{title}: {name}",
            worst_title="Worst queries (lowest AP)", best_title="Best queries (highest AP)")
    results = evaluation.results
    log(f"{title}: rank-1 {100 * results['rank1']:.1f}%, mAP {100 * results['map']:.1f}% "
        f"-> {', '.join(str(p) for p in paths.values())}")
    return paths


def _calibrate_trial(fv, features_of, data, trial, target: Target, checkpoint: str
                     ) -> "threshold_lib.Calibration":
    """The threshold from the identities --calibration_split names (see
    threshold.calibrate_split), with the rates it implies on unseen people."""
    table = data.table
    source = {"dataset": data.name, "protocol": data.protocol, "trial": trial.name,
              "checkpoint": checkpoint,
              "model_fingerprint": gallery_index.model_fingerprint(checkpoint)}
    if fv.metric.endswith(MAPPED):
        source["linear_map"] = fv.metric
    validation = target.config.get("data", {}).get(threshold_lib.VALIDATION_KEY)
    try:
        return threshold_lib.calibrate_split(
            fv.calibration_split, features_of, table.pids, table.camids, trial.train,
            trial.query, trial.gallery, fv.target_false_match_rate, validation,
            fv.max_false_pairs, source)
    except ValueError as e:
        raise UsageError(f"--calibrate_threshold on {data.name}/{trial.name}: {e}") from e


def _log_calibration(c: "threshold_lib.Calibration", path: pathlib.Path, log) -> None:
    log(f"Threshold {c.threshold:.4f} (L2), {threshold_lib.describe(c)}.\n"
        f"  On the calibration pairs: false-match rate {100 * c.false_match_rate:.2f}%, "
        f"true-match rate {100 * c.true_match_rate:.1f}% ({c.num_true_pairs} true / "
        f"{c.num_false_pairs} false pairs, {c.source['identities']} identities)."
        + (f"\n  On unseen people: false-match rate {100 * c.unseen['false_match_rate']:.2f}%, "
           f"true-match rate {100 * c.unseen['true_match_rate']:.1f}% ({c.unseen['how']})."
           if c.unseen else "")
        + (f"\n  warning: calibrated on people the model was trained on; on unseen people the "
           f"false-match rate is {100 * c.unseen['false_match_rate']:.2f}%, above the target "
           f"{100 * c.target_false_match_rate:.2f}%"
           if not c.source["held_out"] and c.unseen
           and c.unseen["false_match_rate"] > c.target_false_match_rate else "")
        + f"\n  -> {path}")


def _map_directory(data, trial, target: Target, out_dir: pathlib.Path, log=print
                   ) -> pathlib.Path:
    """Where --save_linear_map stores the map: the run's folder for the split the model was
    trained for; beside the results for a data set none of whose images trained the model
    (direct transfer, through every --init_from), so each target set keeps its own. Another
    split of the model's own data could hold its training people as test people: refused."""
    from jlml_tf.inference import run_dir as run_dir_lib

    own = target.config.get("data", {})
    if (data.name, data.protocol, trial.name) == (own.get("dataset"), own.get("protocol"),
                                                  own.get("trial")):
        return target.run_dir
    try:
        seen = run_dir_lib.training_datasets(target.run_dir)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"--save_linear_map on {data.name}: cannot tell which data sets "
                         f"trained {target.run_dir} ({e})") from None
    if data.name in seen:
        raise UsageError(f"--save_linear_map: the model was trained for {own.get('dataset')}/"
                         f"{own.get('protocol')} trial {own.get('trial')} on images of "
                         f"{sorted(seen)}, not for {data.name}/{data.protocol} trial "
                         f"{trial.name}; drop --trial/--dataset/--protocol, or fit the map on "
                         "a data set none of whose images trained the model")
    if pathlib.Path(out_dir).resolve() == pathlib.Path(target.run_dir).resolve():  # its own map
        raise UsageError(f"--save_linear_map on {data.name}, a data set that did not train "
                         f"{target.run_dir}: pass --output_dir for its map")
    from jlml_tf_datasets.folder import Folder

    if data.name == Folder.DATASET:  # any images: its name says nothing of the people in it
        log(f"warning: --dataset={Folder.DATASET} is checked by name only: make sure none of "
            f"its people trained {target.run_dir}")
    return out_dir


def _save_linear_map(fv, metric, results: dict, data, trial, target: Target, checkpoint: str,
                     log, calibration: "threshold_lib.Calibration | None" = None,
                     fused: "FusedLomo | None" = None,
                     directory: pathlib.Path | None = None) -> pathlib.Path:
    """RUN/linear_map.npz: the fitted metric's map, with what it was fitted on, the accuracy it
    gave (the export's model card shows it) and the threshold calibrated on its outputs."""
    from jlml_tf.inference import linear_map

    title = f"{data.name} / {data.protocol} / {trial.name}" + (
        f", each camera's batch norm from its {fv.camera_bn} images" if fv.camera_bn != "off"
        else "")
    accuracy = {"title": title, "results": {method_name(fv.metric, None, "mean"): {
        "num_trials": 1, "mean": {k: float(v) for k, v in results.items()
                                  if isinstance(v, (int, float, np.floating))}}}}
    source = {"metric": fv.metric, "flip_test": bool(fv.flip_test), "camera_bn": fv.camera_bn,
              "dataset": data.name, "protocol": data.protocol, "trial": trial.name,
              "checkpoint": checkpoint,
              "model_fingerprint": gallery_index.model_fingerprint(checkpoint),
              "training_images": int(len(trial.train)),
              "training_identities": int(len(np.unique(data.table.pids[trial.train]))),
              "accuracy": accuracy}
    if calibration is not None:
        source[linear_map.THRESHOLD_KEY] = calibration.to_dict()
    if fused:
        source[linear_map.FUSION_KEY] = {"weight": float(fv.fusion_weight),
                                         "lomo": fused.cfg.to_dict()}
    path = linear_map.save(linear_map.LinearMap(metric.projection, metric.sphere_radius, source),
                           (directory or target.run_dir) / linear_map.FILE_NAME)
    dim, rank = metric.projection.shape
    log(f"Linear map {dim} -> {rank} dimensions, on the unit sphere of {rank + 1} "
        f"({fv.metric} on {source['training_images']} training images) -> {path}")
    return path


@dataclasses.dataclass
class FusedLomo:
    """--fuse_lomo's LOMO: its parameters and the data set table's features."""

    cfg: "lomo_lib.LomoConfig"
    features: np.ndarray


def _fused_lomo(fv, data, data_dir, targets: list[Target]) -> FusedLomo:
    """The table's LOMO: at the paper's 128x48 for XQDA, reduced to the features' span (the
    same distances, fewer dimensions); for its map, at the models' input size, which the
    exported model computes LOMO from, and as they are (the map applies to LOMO vectors)."""
    from jlml_tf.baseline import table_lomo
    from jlml_tf.config import ModelConfig
    from jlml_tf.features import cache as cache_lib
    from jlml_tf.features import lomo as lomo_lib

    mapped = fv.metric.endswith(MAPPED)
    cfg = lomo_lib.LomoConfig(retinex=fv.fuse_lomo)
    if mapped:
        sizes = sorted({(m.input_height, m.input_width) for m in (
            ModelConfig.from_dict(t.config["model"]) for t in targets)})
        if len(sizes) > 1:
            raise UsageError(f"--fuse_lomo with --metric={fv.metric} computes LOMO at the "
                             f"model's input size; --run_dir={fv.run_dir} holds models of "
                             f"sizes {sizes}: evaluate them one at a time")
        cfg = dataclasses.replace(cfg, height=sizes[0][0], width=sizes[0][1])
    features, _, _ = table_lomo(data, cfg, cache_lib.default_dir(data_dir), fv.batch_size,
                                bool(fv.verbose), print if fv.verbose else (lambda *a: None),
                                span=not mapped)
    return FusedLomo(cfg, features)


def _fit_trial_metric(fv, lookup, table, trial):
    """The --metric fitted on the trial's training features; the fused XQDA on the baseline's
    cross-view pairs, as LOMO + XQDA alone is fitted."""
    train = trial.train
    if fv.fuse_lomo:
        from jlml_tf.baseline import fit_trial_xqda

        try:
            learned = fit_trial_xqda(lookup(train), table, train)[0]
            return mapped(learned, lookup(train)) if fv.metric.endswith(MAPPED) else learned
        except UsageError:
            raise ValueError("--fuse_lomo fits XQDA on cross-view pairs, as LOMO + XQDA is "
                             "fitted, and needs every training image's camera (or a folder per "
                             "view); this data set has unknown cameras") from None
    learned = fv.metric in LEARNED_METRICS
    return fit_metric(fv.metric, lookup(train) if learned else None, table.pids[train],
                      table.camids[train])


def evaluate_target(fv, target: Target, data, trial, out_dir: pathlib.Path, suffix: str,
                    paper_key: str, log=print, fused: FusedLomo | None = None
                    ) -> tuple[dict | None, dict[str, pathlib.Path]]:
    """Features -> metrics, report files and worst/best picture; the calibration if asked.
    fused: with --fuse_lomo, the table's LOMO, concatenated to the embeddings.

    Returns (the results dict, None with --noevaluation; the files written)."""
    from jlml_tf.inference import eval_trial
    from jlml_tf.inference import run_dir as run_dir_lib

    if fv.calibrate_threshold and fv.calibration_split == "validation" \
            and not target.config.get("data", {}).get(threshold_lib.VALIDATION_KEY):
        # before any feature is computed: nothing to calibrate on
        raise UsageError(f"--calibrate_threshold on {data.name}/{trial.name}: "
                         f"{threshold_lib.NO_VALIDATION}")
    map_dir = (_map_directory(data, trial, target, out_dir, log)  # refused before any feature
               if fv.evaluation and fv.save_linear_map else None)
    _, checkpoint = run_dir_lib.resolve_checkpoint(target.checkpoint or target.run_dir)
    loaded = run_dir_lib.load_run(checkpoint)
    cfg, embedding_model = loaded.model_cfg, loaded.embedding_model
    table = data.table
    needed = []
    if fv.evaluation:
        needed += [trial.query, trial.gallery, trial.multi_query]
        if fv.metric in LEARNED_METRICS:
            needed.append(trial.train)
    if fv.calibrate_threshold:  # the calibration identities and the test trial's
        needed += [trial.query, trial.gallery]
        if fv.calibration_split != "test":
            needed.append(trial.train)
    rows = np.unique(np.concatenate(needed))
    if fv.camera_bn == "off" and cfg.batch_norm_group_size:
        log(f"warning: {target.run_dir or checkpoint} was trained with per-camera batch norm "
            "(--cameras_per_batch); its trained statistics rank worse than each camera's own: "
            "pass --camera_bn=train")
    if fv.camera_bn == "off":
        features = eval_trial.extract_features(embedding_model, table, rows, cfg.input_height,
                                               cfg.input_width, fv.batch_size, fv.verbose,
                                               fv.flip_test)
    else:
        calibration = camera_bn.calibration_rows(fv.camera_bn, table, trial)
        features = eval_trial.extract_features_by_camera(
            embedding_model, table, rows, calibration, cfg.input_height, cfg.input_width,
            fv.batch_size, fv.verbose, fv.flip_test, log)
    if fused is not None:
        features = fusion.concatenate(features, fused.features[rows], fv.fusion_weight)
    lookup = lambda r: features[np.searchsorted(rows, r)]  # noqa: E731
    results, paths = None, {}
    if fv.evaluation:
        try:
            metric = _fit_trial_metric(fv, lookup, table, trial)
        except ValueError as e:
            raise UsageError(f"--metric={fv.metric} on {data.name}/{trial.name}: {e}") from e
        mq = trial.multi_query
        multi = (lookup(mq), table.pids[mq], table.camids[mq]) if len(mq) else None
        q, g = trial.query, trial.gallery
        rerank = RerankConfig(fv.k1, fv.k2, fv.lambda_value) if fv.rerank else None
        evaluation = evaluate_features(lookup(q), table.pids[q], table.camids[q], lookup(g),
                                       table.pids[g], table.camids[g], metric,
                                       data.same_camera_junk, rerank, multi,
                                       fv.multi_query_pooling)
        results = evaluation.results
        if fv.save_linear_map:  # a mapped threshold is on the map's outputs and stored with it
            calibration = _calibrate_trial(fv, lambda r: metric.embed(lookup(r)), data, trial,
                                           target, checkpoint) if fv.calibrate_threshold else None
            paths["linear_map"] = _save_linear_map(fv, metric, results, data, trial, target,
                                                   checkpoint, log, calibration, fused,
                                                   map_dir)
            if calibration is not None:
                _log_calibration(calibration, paths["linear_map"], log)
        paths.update(_report_trial(fv, evaluation, data, trial, out_dir, suffix, paper_key,
                                   str(target.checkpoint or checkpoint), log, fused))
    if fv.calibrate_threshold and not fv.save_linear_map:
        calibration = _calibrate_trial(fv, lookup, data, trial, target, checkpoint)
        paths["threshold"] = threshold_lib.save(calibration,
                                                target.run_dir / threshold_lib.FILE_NAME)
        _log_calibration(calibration, paths["threshold"], log)
    return results, paths


def run(fv) -> str:
    """Evaluates every target of the flags; returns the Markdown summary printed."""
    from jlml_tf.inference import run_dir as run_dir_lib

    if bool(fv.run_dir) == bool(fv.checkpoint):
        raise UsageError("pass exactly one of --run_dir=RUN or --checkpoint=RUN/checkpoints/ckpt-N")
    if fv.save_linear_map and not fv.metric.endswith(MAPPED):
        raise UsageError(f"--save_linear_map needs a mapped metric (--metric=xqda{MAPPED} or "
                         f"kissme{MAPPED}), not --metric={fv.metric}")
    if fv.calibrate_threshold and fv.metric.endswith(MAPPED) and not fv.save_linear_map:
        # RUN/threshold.json is for the run's own embedding; a mapped one travels with its map
        raise UsageError(f"--calibrate_threshold with --metric={fv.metric} calibrates the mapped "
                         "embedding, stored with its map: add --save_linear_map")
    if fv.calibrate_threshold and fv.save_linear_map and fv.calibration_split == "validation":
        # the map is fitted on every training identity, the held-out ones included
        raise UsageError("--calibrate_threshold --save_linear_map: the map is fitted on every "
                         "training identity, the held-out validation ones too; pass "
                         "--calibration_split=train or test")
    if fv.save_linear_map and fv.trial == ALL_TRIALS:
        raise UsageError(f"--save_linear_map stores one map per model: not with "
                         f"--trial={ALL_TRIALS}")
    if fv.save_linear_map and not fv.evaluation:
        raise UsageError("--save_linear_map fits the map while evaluating: drop --noevaluation")
    if fv.fuse_lomo and fv.metric not in fusion.METRICS:
        raise UsageError(f"--fuse_lomo={fv.fuse_lomo} fits XQDA on the fused features: pass "
                         f"--metric={' or '.join(fusion.METRICS)}, not --metric={fv.metric}")
    if fv.fuse_lomo and fv.save_linear_map and fv.fuse_lomo != retinex_lib.NONE:
        raise UsageError(f"--fuse_lomo={fv.fuse_lomo} --save_linear_map: the exported model "
                         f"computes LOMO in its graph, without Retinex; pass "
                         f"--fuse_lomo={retinex_lib.NONE}")
    if fv.fuse_lomo and fv.calibrate_threshold:
        raise UsageError(f"--fuse_lomo={fv.fuse_lomo}: not with --calibrate_threshold (the "
                         "threshold is for the model's own embedding)")
    if fv["fusion_weight"].present and not fv.fuse_lomo:
        raise UsageError(f"--fusion_weight={fv.fusion_weight} weighs the embedding against "
                         "LOMO: add --fuse_lomo")
    if not 0 < fv.fusion_weight < float("inf"):  # nan too
        raise UsageError(f"--fusion_weight={fv.fusion_weight}: must be a finite number > 0")
    if not fv.evaluation and not fv.calibrate_threshold:
        raise UsageError("--noevaluation leaves nothing to do without --calibrate_threshold")
    if fv.camera_bn != "off" and fv.calibrate_threshold:
        # RUN/threshold.json is exported with the model as trained
        raise UsageError(f"--camera_bn={fv.camera_bn}: not with --calibrate_threshold (the "
                         "threshold is stored for the model's trained batch-norm statistics); "
                         "export a camera's model with --camera_bn_images")
    if fv.checkpoint:
        try:
            run, ckpt = run_dir_lib.resolve_checkpoint(fv.checkpoint)
        except FileNotFoundError as e:
            raise UsageError(f"--checkpoint={fv.checkpoint}: {e}") from e
        targets, top = [Target(run, ckpt, run_dir_lib.read_config(run))], run
    else:
        top = pathlib.Path(fv.run_dir)
        targets = []
        for t in trial_dirs(top):
            if run_dir_lib.latest_checkpoint(t) is None:
                raise UsageError(f"--run_dir={t}: no checkpoint in "
                                 f"{t / run_dir_lib.CHECKPOINT_DIR}")
            targets.append(Target(t, None, run_dir_lib.read_config(t)))
    data, override, data_dir = _load_data(fv, targets[0].config)
    fused = _fused_lomo(fv, data, data_dir, targets) if fv.fuse_lomo else None
    every_trial = fv.trial == ALL_TRIALS
    if every_trial:
        if len(targets) != 1:
            raise UsageError(f"--trial={ALL_TRIALS} evaluates one model on every trial; "
                             f"--run_dir={fv.run_dir} holds {len(targets)} (pick one trial_NN/)")
        targets = targets * len(data.trials)
    suffix = fv.suffix if fv.suffix is not None else option_suffix(
        fv.metric, fv.rerank, fv.multi_query_pooling,
        f"{data.name}-{data.protocol}" if override else None, fv.flip_test, fv.camera_bn,
        fv.fuse_lomo, fv.fusion_weight)
    if suffix and not suffix.startswith("_"):
        suffix = "_" + suffix
    explicit_key = fv.paper_key or targets[0].config.get("train", {}).get("paper_key")
    paper_key = paper_key_for(data.name, data.protocol, fv.metric,
                              None if override else explicit_key)
    out_top = pathlib.Path(fv.output_dir) if fv.output_dir else top
    multi = len(targets) > 1 or targets[0].run_dir != top or every_trial
    rerank = RerankConfig(fv.k1, fv.k2, fv.lambda_value) if fv.rerank else None
    per_trial, paths = {}, {}
    for position, target in enumerate(targets):
        trial = data.trials[position] if every_trial else \
            _pick_trial(fv, data, target.config, override, position)
        if every_trial:
            out_dir = run_dir_lib.trial_dir(out_top, position)
        else:
            out_dir = out_top / target.run_dir.name if multi and fv.output_dir else \
                (target.run_dir if multi else out_top)
        results, paths = evaluate_target(fv, target, data, trial, out_dir, suffix, paper_key,
                                         fused=fused)
        if results is not None:  # keyed by trial (by trial folder if two share a trial)
            per_trial[trial.name if trial.name not in per_trial
                      else f"{target.run_dir.name}/{trial.name}"] = results
    if not per_trial:
        return ""
    if multi:
        paths = write_results(
            out_top, suffix,
            {method_name(fv.metric, rerank, fv.multi_query_pooling, fv.fuse_lomo,
                         fv.fusion_weight): list(per_trial.values())},
            paper=paper_lib.reference(paper_key), paper_label=f"Paper ({paper_key})",
            title=f"{data.name} / {data.protocol}",
            extra={"trials": list(per_trial), "dataset": data.name, "protocol": data.protocol})
    return paths["markdown"].read_text() + f"\nWritten to {out_top.resolve()} (suffix {suffix})\n"


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns the exit status (0 ok, 2 bad input)."""
    return cli.run_main(define_flags, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
