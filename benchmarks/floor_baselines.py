"""Floors that need no training: raw pixels, HSV colour histograms and an untrained JLML.

A trained model that does not beat these has learned little beyond colour. Same trials and
evaluation as `python -m jlml_tf.train` (L2 on L2-normalised features):

    python benchmarks/floor_baselines.py --dataset=cuhk01 --protocol=485_486_single_shot \
        --manual_dir=../shared/data/cuhk01 --out=results/floor/cuhk01_485_486_single.json
    python benchmarks/floor_baselines.py --dataset=viper --protocol=316_316 \
        --manual_dir=../shared/data/viper --out=results/floor/viper_316_316.json
    python benchmarks/floor_baselines.py --dataset=grid --protocol=125_125 \
        --manual_dir=../shared/data/grid --dataset_option=splits=../shared/data/grid/splits_tfusion.json \
        --out=results/floor/grid_125_125.json
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import numpy as np  # noqa: E402

import jlml_tf  # noqa: E402,F401 - before TensorFlow loads: its CPU kernel choice (jlml_tf/__init__.py)

HEIGHT, WIDTH = 128, 48  # the CPU model's input (experiments/cpu/base.cfg)
STRIPES, HSV_BINS = 8, (8, 4, 4)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def raw_pixels(images: np.ndarray, size=(32, 12)) -> np.ndarray:
    """Images downsampled to `size` by block averaging, centred per image, unit norm."""
    n, h, w, c = images.shape
    fh, fw = h // size[0], w // size[1]
    small = images[:, :size[0] * fh, :size[1] * fw].reshape(n, size[0], fh, size[1], fw, c)
    x = small.mean(axis=(2, 4)).reshape(n, -1)
    return unit_rows(x - x.mean(axis=1, keepdims=True))


def hsv_histograms(images: np.ndarray, stripes: int = STRIPES, bins=HSV_BINS) -> np.ndarray:
    """Square-rooted joint HSV histograms of horizontal stripes, concatenated, unit norm."""
    import tensorflow as tf

    hsv = tf.image.rgb_to_hsv(np.asarray(images, np.float32) / 255.0).numpy()
    n, h = hsv.shape[:2]
    idx = np.zeros(hsv.shape[:3], np.int64)
    for channel, b in enumerate(bins):
        idx = idx * b + np.minimum((hsv[..., channel] * b).astype(np.int64), b - 1)
    cells = int(np.prod(bins))
    stripe_of_row = np.minimum(np.arange(h) * stripes // h, stripes - 1)
    idx = idx + (stripe_of_row * cells)[None, :, None]
    flat = idx.reshape(n, -1) + (np.arange(n) * stripes * cells)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n * stripes * cells).reshape(n, stripes * cells)
    return unit_rows(np.sqrt(counts / counts.sum(axis=1, keepdims=True) * stripes))


def untrained_jlml(images: np.ndarray, flagfile: str = "experiments/cpu/base.cfg", seed: int = 0):
    """Embeddings of a randomly initialised JLML with the CPU model's architecture."""
    import keras
    from jlml_tf import flags as jflags
    from jlml_tf.modeling import jlml

    fv = jflags.define_flags()
    fv([sys.argv[0], f"--flagfile={flagfile}"])
    keras.utils.set_random_seed(seed)
    model = jlml.build_embedding_model(jflags.model_config(fv, num_classes=2))
    return np.concatenate([model(images[i:i + 128].astype(np.float32), training=False).numpy()
                           for i in range(0, len(images), 128)])


FEATURES = {"raw pixels 32x12": raw_pixels, "HSV histograms, 8 stripes": hsv_histograms,
            "untrained JLML (CPU model)": untrained_jlml}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--protocol", required=True)
    parser.add_argument("--manual_dir", required=True)
    parser.add_argument("--dataset_option", action="append", default=[],
                        help="key=value option of the data set loader (repeatable)")
    parser.add_argument("--out", required=True, help="results JSON to write")
    args = parser.parse_args(argv)

    import jlml_tf_datasets
    from jlml_tf.data import pipeline
    from jlml_tf.evaluation import protocol

    from jlml_tf import cli

    options = cli.key_values(args.dataset_option, "--dataset_option")
    data = jlml_tf_datasets.load(args.dataset, args.protocol, manual_dir=args.manual_dir,
                                 **options)
    table = data.table
    images = pipeline.decode_all(table, HEIGHT, WIDTH)
    out = {"dataset": data.name, "protocol": data.protocol, "input_size": [HEIGHT, WIDTH],
           "command": "python benchmarks/floor_baselines.py " + " ".join(
               argv if argv is not None else sys.argv[1:]), "results": {}}
    for name, fn in FEATURES.items():
        features = fn(images)
        per_trial = [protocol.evaluate(
            features[t.query], table.pids[t.query], table.camids[t.query],
            features[t.gallery], table.pids[t.gallery], table.camids[t.gallery],
            same_camera_junk=data.same_camera_junk) for t in data.trials]
        summary = {k: [float(r[k]) for r in per_trial] for k in ("rank1", "rank5", "map")}
        out["results"][name] = {k: {"mean": float(np.mean(v)), "std": float(np.std(v)),
                                    "trials": v} for k, v in summary.items()}
        r1 = out["results"][name]["rank1"]
        print(f"{name}: R1 {100 * r1['mean']:.1f} ± {100 * r1['std']:.1f} "
              f"over {len(data.trials)} trials")
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
