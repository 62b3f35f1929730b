"""The model card written beside every export (Markdown for people, JSON for tools).

Multiply-adds come from `jlml_tf.model_summary.count_macs`, the one place this package counts
compute (analytically, from the weighted layers).
"""
from __future__ import annotations

import datetime
import json
import os
import pathlib

import keras

from jlml_tf import config, model_summary
from jlml_tf.config import ModelConfig
from jlml_tf.evaluation import metrics
from jlml_tf.data import preprocessing

CARD_MD = "model_card.md"
CARD_JSON = "model_card.json"
RESULTS_FILE = "results.json"
# Rates reported on the card, in this order, with their names (fractions in results.json).
ACCURACY_NAMES = metrics.RATE_TITLES


def read_run(run_dir: str | os.PathLike) -> dict:
    """config.json and (if present) results.json of a run directory."""
    run_dir = pathlib.Path(run_dir)
    out = {"config": json.loads((run_dir / "config.json").read_text())}
    results = run_dir / RESULTS_FILE
    if results.is_file():
        try:
            out["results_document"] = json.loads(results.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{results} is not valid JSON: {e}") from e
    return out


def _scalars(d) -> dict:
    if not isinstance(d, dict):
        return {}
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool))}


def accuracy_from_results(document) -> dict | None:
    """The test-split accuracy in a run's results.json, or None when it holds none.

    Training and `jlml_tf.evaluate` write {"title", "extra", "results": {method: {"num_trials",
    "mean": {...}, "std": {...}, "trials": [...]}}} (jlml_tf.evaluation.report), rates as
    fractions; older files had the rates directly under "results". Returns {"title", "methods":
    {method: {"num_trials", "mean": {metric: fraction}, "std": {...} (several trials only)}}}.
    """
    if not isinstance(document, dict):
        return None
    results = document.get("results", document)
    if not isinstance(results, dict):
        return None
    if _scalars(results).keys() & set(ACCURACY_NAMES):  # the rates directly (older files)
        methods = {"results": {"num_trials": 1, "mean": _pick(results)}}
    else:
        methods = {}
        for name, summary in results.items():
            if not isinstance(summary, dict):
                continue
            mean = _pick(summary.get("mean", summary))
            if not mean:
                continue
            entry = {"num_trials": int(summary.get("num_trials", 1)), "mean": mean}
            if entry["num_trials"] > 1 and isinstance(summary.get("std"), dict):
                entry["std"] = _pick(summary["std"])
            methods[str(name)] = entry
    if not methods:
        return None
    return {"title": document.get("title"), "methods": methods}


def _pick(d) -> dict:
    return {k: float(d[k]) for k in ACCURACY_NAMES
            if isinstance(d, dict) and isinstance(d.get(k), (int, float))
            and not isinstance(d.get(k), bool)}


def build_card(cfg: ModelConfig, embedding_model: keras.Model, run_dir: str | os.PathLike,
               checkpoint: str, model_name: str, version: int, saved_model_dir: str,
               tflite_files: dict[str, dict] | None = None, parity: dict | None = None,
               flip_test: bool = False, linear_map: dict | None = None) -> dict:
    run = read_run(run_dir)
    data = run["config"].get("data", {})
    train = run["config"].get("train", {})
    h, w = cfg.input_height, cfg.input_width
    params = embedding_model.count_params()
    out_dim = int(embedding_model.output.shape[-1])
    card = {
        "model_name": model_name,
        "version": int(version),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "description": "JLML person re-identification embedding (Li, Zhu, Gong, IJCAI 2017): a "
                       "global branch and %d local stripe streams over a shared stem; the two "
                       "%d-d branch features concatenated and L2-normalised."
                       % (cfg.num_stripes, cfg.feature_dim),
        "source": {"run_dir": os.fspath(run_dir), "checkpoint": checkpoint},
        "architecture": cfg.to_dict(),
        "input": {
            "layout": f"NHWC [N, {h}, {w}, 3], any N",
            "colour_order": preprocessing.COLOR_ORDER,
            "saved_model": {
                "serving_default": {"name": "images", "dtype": "uint8",
                                    "shape": [-1, h, w, 3],
                                    "meaning": "RGB pixels 0..255, already resized"},
                "serving_bytes": {"name": "image_bytes", "dtype": "string", "shape": [-1],
                                  "meaning": "encoded JPEG/PNG/BMP/GIF files, decoded and "
                                             "resized inside the graph (a BMP with bytes "
                                             "after its pixel data is rejected)"},
            },
            "tflite": {"dtype": "uint8", "shape": [-1, h, w, 3],
                       "meaning": "RGB pixels 0..255, decoded and resized by the caller "
                                  "(resize the input tensor to the batch size)"},
        },
        "preprocessing": {
            "outside_model": f"decode to 3-channel RGB, {preprocessing.RESIZE_METHOD} resize to "
                             f"{h}x{w} (aspect ratio not kept), round to whole pixel values "
                             "(jlml_tf.data.preprocessing.load_image; the bytes signature "
                             "does this in its graph)",
            "inside_model": "cast to float32, subtract the ImageNet mean "
                            f"{list(config.PIXEL_MEAN)} and divide by the std "
                            f"{list(config.PIXEL_STD)} (in 0..255 units)",
        },
        "output": {"name": "embeddings", "dtype": "float32", "shape": [-1, out_dim],
                   "meaning": f"L2-normalised {out_dim}-d embedding ("
                              + _map_phrase(linear_map)
                              + "global and local branch features concatenated"
                              + ("; test-time flip: the normalised sum of the image's and its "
                                 "mirror's embeddings, two forward passes" if flip_test else "")
                              + "); match by L2 distance, equivalently cosine similarity",
                   "test_time_flip": bool(flip_test)},
        "linear_map": {k: v for k, v in linear_map.items() if k != "accuracy"}
        if linear_map else None,
        "parameters": int(params),
        "multiply_adds": model_summary.count_macs(embedding_model),
        "training": {"data": _scalars(data),
                     "flags": {k: train[k] for k in ("epochs", "batch_size", "optimizer",
                                                     "learning_rate", "seed") if k in train}},
        # a mapped model's own accuracy, as `evaluate --save_linear_map` measured it
        "accuracy": accuracy_from_results(linear_map["accuracy"] if linear_map
                                          and "accuracy" in linear_map
                                          else run.get("results_document")),
        "formats": {"saved_model": {"path": saved_model_dir,
                                    "signatures": ["serving_default", "serving_bytes"]},
                    "tflite": tflite_files or {}},
    }
    if parity:
        card["parity_summary"] = {name: {k: row.get(k) for k in (
            "max_abs_diff", "mean_cosine", "rank1_change", "map_change")}
            for name, row in parity.get("formats", {}).items()}
    return card


def _map_phrase(linear_map: dict | None) -> str:
    """"the xqda_map linear map, fitted on D/P trial T, of the " (or "" without a map)."""
    if not linear_map:
        return ""
    per_camera = (", on each camera's calibrated embeddings"
                  if linear_map.get("camera_bn", "off") != "off" else "")
    fusion = linear_map.get("fusion")
    of_what = (f"the embedding (weighted {fusion.get('weight')}) and LOMO features (no "
               "Retinex, computed in the graph from the same pixels) concatenated; the "
               "embedding: " if fusion else "")
    return (f"the {linear_map.get('metric')} linear map, fitted on {linear_map.get('dataset')}/"
            f"{linear_map.get('protocol')} trial {linear_map.get('trial')}{per_camera}, of "
            f"{of_what or 'the '}")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def card_markdown(card: dict) -> str:
    inp, pre, out = card["input"], card["preprocessing"], card["output"]
    lines = [f"# Model card: {card['model_name']} version {card['version']}", "",
             card["description"], "",
             f"Created {card['created']} from `{card['source']['checkpoint']}`.", "",
             "## Input", "",
             f"- Layout: {inp['layout']}; colour order **{inp['colour_order']}**.",
             "- SavedModel `serving_default`: `images`, uint8 [N, H, W, 3], "
             f"{inp['saved_model']['serving_default']['meaning']}.",
             "- SavedModel `serving_bytes`: `image_bytes`, string [N], "
             f"{inp['saved_model']['serving_bytes']['meaning']}.",
             f"- TFLite (every variant): uint8 [N, H, W, 3], {inp['tflite']['meaning']}.", "",
             "## Preprocessing", "",
             f"- Outside the model: {pre['outside_model']}.",
             f"- Inside the model: {pre['inside_model']}.", "",
             "## Output", "",
             f"`{out['name']}`, {out['dtype']} [N, {out['shape'][1]}]: {out['meaning']}.", ""]
    if card.get("camera_bn"):
        lines += ["## Camera", "", f"Batch norm calibrated on "
                  f"{card['camera_bn']['calibration_images']} images of one camera: serve this "
                  "model for that camera only.", ""]
    lines += ["## Size and compute", "",
              f"- Parameters: {card['parameters']:,} ({card['parameters'] / 1e6:.2f}M, identity "
              "classifiers excluded).",
              f"- Multiply-adds per image: {card['multiply_adds']:,} "
              f"({card['multiply_adds'] / 1e9:.3f}e9).", "",
              "## Training", ""]
    data = card["training"]["data"]
    lines += [f"- {k}: {_fmt(v)}" for k, v in data.items()] or ["- (not recorded)"]
    lines += [f"- {k}: {_fmt(v)}" for k, v in card["training"]["flags"].items()]
    lines += ["", "## Accuracy", ""]
    lines += accuracy_markdown(card["accuracy"], card["source"]["run_dir"])
    lines += ["", "## Files", "", f"- SavedModel: `{card['formats']['saved_model']['path']}` "
              "(TF Serving layout)"]
    for name, info in card["formats"]["tflite"].items():
        lines.append(f"- TFLite {name}: `{info['path']}`, {info['size_bytes']:,} bytes; "
                     f"{info['description']}")
    if card.get("parity_summary"):
        lines += ["", "## Parity with the Keras model (details in parity.md)", "",
                  "| format | max abs diff | mean cosine | rank-1 change | mAP change |",
                  "|---|---|---|---|---|"]
        for name, row in card["parity_summary"].items():
            lines.append(f"| {name} | {_fmt(row['max_abs_diff'])} | {row['mean_cosine']:.6f} "
                         f"| {_fmt(row['rank1_change'])} | {_fmt(row['map_change'])} |")
    return "\n".join(lines) + "\n"


def accuracy_markdown(accuracy: dict | None, run_dir: str) -> list[str]:
    """Lines of the card's accuracy section: per method, its rates in percent (± std)."""
    if not accuracy:
        results = pathlib.Path(run_dir) / RESULTS_FILE
        return [f"- no accuracy recorded: {results} "
                + ("holds no rank-1/mAP figures" if results.is_file() else "does not exist")
                + " (training writes it when it finishes)"]
    title = f" on {accuracy['title']}" if accuracy.get("title") else ""
    lines = []
    for name, entry in accuracy["methods"].items():
        mean, std = entry["mean"], entry.get("std", {})
        trials = entry["num_trials"]
        rates = ", ".join(
            f"{ACCURACY_NAMES[k]} {100 * v:.1f}%" + (f" ± {100 * std[k]:.1f}" if k in std else "")
            for k, v in mean.items())
        over = f" (mean ± std over {trials} trials)" if trials > 1 else ""
        lines.append(f"- {name}{title}: {rates}{over}")
    return lines


def write_card(card: dict, directory: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path]:
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    md, js = directory / CARD_MD, directory / CARD_JSON
    js.write_text(json.dumps(card, indent=2, sort_keys=False, default=str) + "\n")
    md.write_text(card_markdown(card))
    return md, js
