"""The hand-crafted baseline: LOMO features + XQDA (Liao et al., CVPR 2015) on the same trials,
protocol code and report files as JLML.

    python -m jlml_tf.baseline --dataset=cuhk01 --protocol=485_486_single_shot \\
        --manual_dir=../shared/data/cuhk01
    python -m jlml_tf.baseline --dataset=grid --manual_dir=../shared/data/grid \\
        --dataset_option=splits=../shared/data/grid/splits_tfusion.json
    python -m jlml_tf.baseline --dataset=viper --manual_dir=../shared/data/viper --retinex=none

The data set is loaded with `jlml_tf_datasets.load` (the trials JLML trains on); every image
of its table is decoded by the training pipeline's decoder at 128x48 and described by LOMO
(`jlml_tf/features/lomo.py`), once: the features are cached on disk per data set and option set
(`--cache_dir`, default DATA_DIR/lomo; `--nocache` recomputes without storing). For each trial,
XQDA (`jlml_tf/evaluation/metric_learning.py`) is fitted on the trial's training images -- on
cross-view pairs as in the paper: pairs of training images from different views, a view being
the top-level folder when the training images come from several (GRID's probe/ and gallery/,
VIPeR's cam_a/ and cam_b/), else the camera -- and the trial is evaluated by
`jlml_tf.evaluation.protocol.evaluate` exactly as `jlml_tf.train` evaluates JLML. Before the
trials, the features are expressed in an orthonormal basis of their span (N images: at most
N - 1 dimensions instead of 26,960), which changes no distance and makes each fit cheap.

Files, as a training run writes them (OUT = --out_dir, default
results/lomo_xqda/<dataset>_<protocol>_<retinex>):
    OUT/trial_NN/results.json, results.md, cmc.png   one per trial (in OUT itself if the
                                                    protocol has a single trial)
    OUT/results.json, results.md, cmc.png            mean ± std over the trials, the published
                                                    LOMO+XQDA rank-1 beside them
    OUT/config.json                                  the command, its flags, the LOMO options
Time per image (LOMO alone, and decoding) and the XQDA fit time go into results.json "extra".

--swap_query_gallery ranks the trial's queries for each gallery image instead (VIPeR: camera-B
probes against a camera-A gallery, the direction of the authors' demo); its default OUT ends
in _swapped.
"""
from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Sequence

import numpy as np

from jlml_tf import cli
from jlml_tf import paper as paper_lib
from jlml_tf.evaluation import protocol, report
from jlml_tf.evaluation.metric_learning import fit_xqda, span_coordinates
from jlml_tf.features import cache as cache_lib
from jlml_tf.features import lomo as lomo_lib
from jlml_tf.features import retinex as retinex_lib

DATASETS = ("synthetic", "market1501", "cuhk03", "cuhk01", "grid", "viper", "folder")
PAIRS = ("cross_view", "all")
CONFIG_FILE = "config.json"
DEFAULT_OUT_ROOT = pathlib.Path("results") / "lomo_xqda"
# Published LOMO + XQDA rank-1 (percent), the figures of issue 11: VIPeR 316/316 and GRID
# 125/125 with the 775 distractors from Liao et al. (CVPR 2015); CUHK01 486 test ids single
# shot "about 49" (49.2 is the figure later papers cite; its source was not re-checked here --
# the LOMO paper itself reports CUHK01 with two images per view).
PUBLISHED = {
    "viper/316_316": {"rank1": 40.0},
    "grid/125_125": {"rank1": 16.6},
    "cuhk01/485_486_single_shot": {"rank1": 49.2},
}
PUBLISHED_LABEL = "Published LOMO + XQDA"

UsageError = cli.UsageError


def define_flags():
    from absl import flags

    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_enum("dataset", "synthetic", DATASETS, "Data set.", **d)
    flags.DEFINE_string("protocol", None, "Protocol (default: the data set's first).", **d)
    flags.DEFINE_string("manual_dir", None, "Where the downloaded release of --dataset lies.",
                        **d)
    flags.DEFINE_string("data_dir", None, "Prepared data sets cache (default $JLML_DATA_DIR or "
                        "~/jlml_data).", **d)
    flags.DEFINE_list("dataset_option", [], "key=value options for the data set loader.", **d)
    flags.DEFINE_list("trials", ["all"], "Trials to run: 'all' or indices like 0,1,2.", **d)
    flags.DEFINE_enum("retinex", "msr", retinex_lib.VARIANTS, "Retinex before the colour "
                      "histograms: none, msr (intensity only, chromaticity kept; the closest "
                      "to the published figures) or msrcr (with colour restoration); see "
                      "jlml_tf/features/retinex.py and BENCHMARKS.md.", **d)
    flags.DEFINE_string("out_dir", None, "Where to write the results (default "
                        "results/lomo_xqda/<dataset>_<protocol>_<retinex>).", **d)
    flags.DEFINE_string("cache_dir", None, "Feature cache (default DATA_DIR/lomo).", **d)
    flags.DEFINE_bool("cache", True, "Read and write the feature cache (--nocache: compute "
                      "the features and store nothing).", **d)
    flags.DEFINE_integer("batch_size", 64, "Images per LOMO batch.", lower_bound=1, **d)
    flags.DEFINE_enum("xqda_pairs", "cross_view", PAIRS, "XQDA's training pairs: across views "
                      "(the paper) or all pairs.", **d)
    flags.DEFINE_float("xqda_regularisation", 1e-3, "Added to the diagonal of XQDA's "
                       "intra-class covariance (the paper's 0.001).", lower_bound=0.0, **d)
    flags.DEFINE_integer("xqda_dim", 0, "XQDA subspace dimension; 0 keeps every direction with "
                         "eigenvalue > 1 (the paper).", lower_bound=0, **d)
    flags.DEFINE_bool("swap_query_gallery", False, "Match the trial's gallery images against "
                      "its queries instead (the direction of the authors' VIPeR demo: camera B "
                      "probes, camera A gallery); single-shot trials without distractors only.",
                      **d)
    flags.DEFINE_integer("verbose", 1, "0: quiet, 1: progress bars and messages.", **d)
    return fv


# ----------------------------------------------------------------------------------------------
# The pieces


def default_out_dir(dataset: str, protocol_name: str, retinex: str,
                    swapped: bool = False) -> pathlib.Path:
    return DEFAULT_OUT_ROOT / (f"{dataset}_{protocol_name}_{retinex}"
                               + ("_swapped" if swapped else ""))


def training_views(table, rows: np.ndarray) -> tuple[np.ndarray, str]:
    """View ids of training images for XQDA's cross-view pairs, and what they are: the
    top-level folder when the images come from several, else the camera id."""
    rows = np.asarray(rows, np.int64)
    folders = np.array([name.split("/", 1)[0] if "/" in name else ""
                        for name in table.filenames[rows]])
    if len(np.unique(folders)) > 1:
        return np.unique(folders, return_inverse=True)[1].reshape(-1), "folder"
    cameras = table.camids[rows]
    if (cameras < 0).any():
        raise UsageError("--xqda_pairs=cross_view needs every training image's camera (or a "
                         "folder per view); this data set has unknown cameras: pass "
                         "--xqda_pairs=all")
    return cameras, "camera"


def select_trials(items: Sequence[str], num_trials: int) -> list[int]:
    if list(items) == ["all"]:
        return list(range(num_trials))
    try:
        chosen = [int(t) for t in items]
    except ValueError:
        raise UsageError(f"--trials={','.join(items)}: expected 'all' or indices") from None
    bad = [t for t in chosen if not 0 <= t < num_trials]
    if bad or not chosen:
        raise UsageError(f"--trials: {bad or 'none'} out of range; the protocol has "
                         f"{num_trials} trials (0..{num_trials - 1})")
    return chosen


def span_features(features: np.ndarray) -> np.ndarray:
    """Features in coordinates of an orthonormal basis of their span (N x rank <= N - 1) when
    they have more dimensions than images: every difference between two images, hence every
    XQDA fit and distance, is the same, and each trial's XQDA starts from N instead of 26,960
    dimensions (one N x N Gram matrix for the data set instead of one per trial)."""
    if features.shape[1] <= len(features):
        return features
    return span_coordinates(features)[0]


def table_lomo(data, cfg: lomo_lib.LomoConfig, cache_dir: pathlib.Path | None,
               batch_size: int = 64, verbose: bool = True, log=print, span: bool = True
               ) -> tuple[np.ndarray, dict, dict | None]:
    """LOMO features of the data set's whole table (cache_lib.table_features), reduced to
    their span (span_features) unless span=False; returns (features, the extraction's info,
    the span's timing or None)."""
    extracted = cache_lib.table_features(data.table, cfg, data.name, cache_dir, batch_size,
                                         verbose, log)
    if not span:
        return extracted.features, extracted.info, None
    start, cpu_start = time.perf_counter(), time.process_time()
    features = span_features(extracted.features)
    span_timing = {"dim": int(features.shape[1]), "seconds": time.perf_counter() - start,
                   "cpu_seconds": time.process_time() - cpu_start}
    return features, extracted.info, span_timing


def check_swappable(data, trial) -> None:
    """Queries and gallery can trade places only when both are one image per identity."""
    pids = data.table.pids
    for role, rows in (("query", trial.query), ("gallery", trial.gallery)):
        if (pids[rows] <= 0).any() or len(np.unique(pids[rows])) != len(rows):
            raise UsageError(f"--swap_query_gallery: the {role} of {data.name}/{data.protocol} "
                             f"{trial.name} is not one image per identity (distractors or "
                             "several shots)")
    if len(trial.multi_query):
        raise UsageError("--swap_query_gallery: multi-query trials cannot be swapped")


def fit_trial_xqda(train_features: np.ndarray, table, train: np.ndarray,
                   pairs: str = "cross_view", regularisation: float = 1e-3,
                   dim: int | None = None):
    """XQDA on a trial's training features (rows `train` of `table`), on the paper's
    cross-view pairs (views from training_views) or all pairs; returns (metric, view kind)."""
    views, view_kind = (training_views(table, train) if pairs == "cross_view"
                        else (None, "none"))
    metric = fit_xqda(train_features, table.pids[train], views, dim=dim,
                      regularisation=regularisation, cross_camera=pairs == "cross_view")
    return metric, view_kind


def evaluate_trial(features: np.ndarray, data, trial, pairs: str = "cross_view",
                   regularisation: float = 1e-3, dim: int | None = None,
                   swap: bool = False) -> tuple[dict, dict]:
    """XQDA fitted on the trial's training rows, then protocol.evaluate on its query and
    gallery rows (as eval_trial.evaluate_trial does for JLML); swap=True ranks the queries
    for each gallery image instead. Returns (results, details)."""
    if swap:
        check_swappable(data, trial)
    table = data.table
    train = trial.train
    start, cpu_start = time.perf_counter(), time.process_time()
    metric, view_kind = fit_trial_xqda(features[train], table, train, pairs, regularisation,
                                       dim)
    fit_seconds, fit_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    mq = trial.multi_query
    multi = (features[mq], table.pids[mq], table.camids[mq]) if len(mq) else None
    q, g = (trial.gallery, trial.query) if swap else (trial.query, trial.gallery)
    results = protocol.evaluate(features[q], table.pids[q], table.camids[q], features[g],
                                table.pids[g], table.camids[g], metric=metric,
                                same_camera_junk=data.same_camera_junk, multi_query=multi)
    details = {"xqda_dim": int(metric.matrix.shape[0]), "xqda_fit_seconds": fit_seconds,
               "xqda_fit_cpu_seconds": fit_cpu,
               "train_images": int(len(train)), "views": view_kind, "swapped": swap}
    return results, details


def method_name(retinex: str) -> str:
    return f"LOMO ({retinex_lib.LABELS[retinex]}) + XQDA"


# ----------------------------------------------------------------------------------------------
# The command


def _load_data(fv):
    import jlml_tf_datasets

    options = cli.key_values(fv.dataset_option, "--dataset_option")
    if fv.manual_dir is not None and not pathlib.Path(fv.manual_dir).expanduser().exists():
        raise UsageError(f"--manual_dir={fv.manual_dir}: no such folder")
    try:
        return jlml_tf_datasets.load(fv.dataset, fv.protocol, data_dir=fv.data_dir,
                                     manual_dir=fv.manual_dir, **options)
    except (ValueError, TypeError) as e:
        raise UsageError(f"--dataset={fv.dataset} --protocol={fv.protocol} "
                         f"--dataset_option={','.join(fv.dataset_option)}: {e}") from e


def _cache_dir(fv) -> pathlib.Path | None:
    if not fv.cache:
        return None
    if fv.cache_dir:
        return pathlib.Path(fv.cache_dir).expanduser()
    return cache_lib.default_dir(fv.data_dir)


def _flag_dict(fv) -> dict:
    return {name: fv[name].value for name in sorted(fv) if name in _OWN_FLAGS}


_OWN_FLAGS = set(define_flags())


def run(fv, log=None) -> str:
    """Features, XQDA and evaluation for every chosen trial; returns the Markdown summary."""
    log = log or ((lambda *a: print(*a, file=sys.stderr)) if fv.verbose else (lambda *a: None))
    data = _load_data(fv)
    chosen = select_trials(fv.trials, len(data.trials))
    out = pathlib.Path(fv.out_dir) if fv.out_dir else default_out_dir(
        data.name, data.protocol, fv.retinex, fv.swap_query_gallery)
    if fv.swap_query_gallery:
        for index in chosen:
            check_swappable(data, data.trials[index])
    cfg = lomo_lib.LomoConfig(retinex=fv.retinex)
    log(f"{data.name}/{data.protocol}: {len(data.table)} images, trials {chosen} -> {out}")
    features, timing, span_timing = table_lomo(data, cfg, _cache_dir(fv), fv.batch_size,
                                               bool(fv.verbose), log)
    name = method_name(fv.retinex) + (", query and gallery swapped"
                                      if fv.swap_query_gallery else "")
    per_trial, details = {}, {}
    for index in chosen:
        trial = data.trials[index]
        results, detail = evaluate_trial(features, data, trial, fv.xqda_pairs,
                                         fv.xqda_regularisation, fv.xqda_dim or None,
                                         fv.swap_query_gallery)
        trial_dir = out if len(data.trials) == 1 else out / f"trial_{index:02d}"
        report.write_report(trial_dir, {name: [results]},
                            title=f"{data.name} / {data.protocol} / {trial.name}",
                            extra={"dataset": data.name, "protocol": data.protocol,
                                   "trial": trial.name, **detail})
        per_trial[trial.name], details[trial.name] = results, detail
        log(f"{trial.name}: rank-1 {100 * results['rank1']:.1f}%, mAP {100 * results['map']:.1f}%"
            f" (XQDA dim {detail['xqda_dim']}, fit {detail['xqda_fit_seconds']:.1f} s)")
    key = f"{data.name}/{data.protocol}"
    lomo_timing = {k: timing[k] for k in ("num_images", "feature_dim", "wall_ms_per_image",
                                          "cpu_ms_per_image", "decode_ms_per_image",
                                          "batch_size", "extracted_at", "cached") if k in timing}
    extra = {"trials": list(per_trial), "dataset": data.name, "protocol": data.protocol,
             "method": name, "lomo": cfg.to_dict(), "lomo_timing": lomo_timing,
             "swap_query_gallery": fv.swap_query_gallery,
             "xqda": {"pairs": fv.xqda_pairs, "regularisation": fv.xqda_regularisation,
                      "table_span": span_timing,
                      "dim": fv.xqda_dim or "eigenvalue > 1", "per_trial": details},
             "jlml_paper": paper_lib.reference(key)}
    paths = report.write_report(out, {name: list(per_trial.values())},
                                paper=PUBLISHED.get(key), paper_label=PUBLISHED_LABEL,
                                title=f"{data.name} / {data.protocol}", extra=extra)
    config = {"command": "python -m jlml_tf.baseline " + " ".join(
                  f"--{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                  for k, v in _flag_dict(fv).items() if fv[k].present),
              "flags": _flag_dict(fv), "lomo": cfg.to_dict(), "dataset": data.name,
              "protocol": data.protocol, "protocol_description": data.info.get(
                  "protocol_description"), "num_images": len(data.table),
              "trials": [data.trials[i].name for i in chosen]}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return _summary(paths["markdown"].read_text(), lomo_timing, details, span_timing, key, out)


def _summary(table: str, timing: dict, details: dict, span: dict, key: str,
             out: pathlib.Path) -> str:
    lines = [table]
    cached = " (read from the cache; timed when extracted)" if timing.get("cached") else ""
    lines.append(f"LOMO: {timing['feature_dim']:,} dimensions, {timing['num_images']} images, "
                 f"{timing['cpu_ms_per_image']:.1f} ms CPU / {timing['wall_ms_per_image']:.1f} "
                 f"ms wall per image, decoding {timing['decode_ms_per_image']:.1f} ms per "
                 f"image{cached}")
    dims = [d["xqda_dim"] for d in details.values()]
    fits = [d["xqda_fit_seconds"] for d in details.values()]
    cpu = [d["xqda_fit_cpu_seconds"] for d in details.values()]
    lines.append(f"XQDA: subspace of {min(dims)}-{max(dims)} dimensions, fit "
                 f"{np.mean(cpu):.1f} s CPU / {np.mean(fits):.1f} s wall per trial (after "
                 f"reducing the table to its {span['dim']}-dimensional span once: "
                 f"{span['cpu_seconds']:.1f} s CPU / {span['seconds']:.1f} s wall)")
    jlml = paper_lib.reference(key)
    if jlml and "rank1" in jlml:
        lines.append(f"JLML paper ({key}): rank-1 {jlml['rank1']:.1f}")
    lines.append(f"Written to {out.resolve()}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns the exit status (0 ok, 2 bad input)."""
    return cli.run_main(define_flags, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
