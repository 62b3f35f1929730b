"""Images per second of JLML's training step per width, input size and precision policy.

    python benchmarks/step_speed.py --widths=half,full --input_sizes=128x48,160x64 \
        --precisions=float32,mixed_bfloat16 [--ibn_stages=0,3] [--bn_group_sizes=0,16] \
        [--distill=off,on]

One fixed in-memory batch (no input pipeline), the real multi-loss cross-entropy + SFL + weight
decay, SGD with momentum; `--warmup` untimed steps, then the median of `--windows` windows of `--steps`
steps. "half" is the CPU model of experiments/cpu/base.cfg, "full" the paper's JLML-ResNet39.
`--bn_group_sizes`: batch norm over groups of that many images (per-camera batch norm,
`--cameras_per_batch`; 0: the whole batch). `--distill=on`: the step adds `train
--distill_lomo_weight`'s term (LOMO of the batch in the graph, a 315-d map like VIPeR's teacher,
the neighbours loss).
Other processes on the machine lower every figure: the load average is printed with them.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import jlml_tf  # noqa: E402,F401 - before TensorFlow loads: its CPU kernel choice (jlml_tf/__init__.py)

WIDTHS = {
    "half": dict(stem_filters=16, global_widths=(16, 32, 64, 128), local_widths=(4, 8, 16, 32),
                 feature_dim=256, feature_bn=True),
    "full": dict(),
}


def images_per_second(width: str, height: int, width_px: int, policy: str, batch: int,
                      num_classes: int, warmup: int, steps: int, windows: int,
                      ibn_stages: int = 0, bn_group_size: int = 0, distill: bool = False) -> float:
    import keras
    import numpy as np
    import tensorflow as tf

    from jlml_tf.features import lomo
    from jlml_tf.training import distill as distill_lib, losses
    from jlml_tf.config import ModelConfig, SparsityConfig
    from jlml_tf.modeling import jlml

    keras.mixed_precision.set_global_policy(policy)
    cfg = ModelConfig(input_height=height, input_width=width_px, num_classes=num_classes,
                      ibn_stages=ibn_stages, batch_norm_group_size=bn_group_size,
                      **WIDTHS[width])
    model, _ = jlml.build_jlml(cfg)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    images = tf.random.uniform([batch, height, width_px, 3], 0, 255)
    labels = tf.random.uniform([batch], 0, num_classes, tf.int32)
    if distill:  # off: the plain model, as the figures before this option were timed
        forward = jlml.with_features(model, embedding=True)
        lomo_cfg = distill_lib.lomo_config(height, width_px)
        teacher = distill_lib.LomoTeacher([np.random.default_rng(0).normal(
            size=(lomo.feature_dim(lomo_cfg), 315)).astype("float32")], lomo_cfg)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            outputs = forward(images, training=True) if distill else \
                {"logits": model(images, training=True)}
            ce = losses.per_example_cross_entropy(labels, outputs["logits"])
            loss = tf.add_n([tf.reduce_mean(v) for v in ce.values()])
            if distill:
                embedding = tf.math.l2_normalize(tf.cast(outputs["embedding"], tf.float32), axis=1)
                loss += distill_lib.neighbour_loss(embedding, teacher.distances(images, labels))
            penalties = losses.sparsity_penalties(model, SparsityConfig(), cfg.feature_dim)
            loss += tf.add_n(list(penalties.values())) + losses.weight_decay(model, 1e-4)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _ in range(warmup):
        step().numpy()
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            step().numpy()
        rates.append(batch * steps / (time.perf_counter() - start))
    keras.mixed_precision.set_global_policy("float32")
    return float(np.median(rates))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="half,full", help=f"comma list of {list(WIDTHS)}")
    parser.add_argument("--input_sizes", default="128x48", help="comma list of HxW")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--ibn_stages", default="0", help="comma list of IBN-a stage counts")
    parser.add_argument("--bn_group_sizes", default="0",
                        help="comma list of batch-norm group sizes (0: the whole batch)")
    parser.add_argument("--distill", default="off", help="comma list of off/on")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_classes", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args(argv)
    widths = args.widths.split(",")
    bad = [w for w in widths if w not in WIDTHS]
    if bad:
        parser.error(f"--widths: {bad} not in {list(WIDTHS)}")
    try:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.input_sizes.split(",")]
    except ValueError:
        parser.error(f"--input_sizes={args.input_sizes}: expected HxW,HxW")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    distills = args.distill.split(",")
    if set(distills) - {"off", "on"}:
        parser.error(f"--distill={args.distill}: expected off, on or off,on")
    print("| width | input | IBN-a stages | BN group | precision | distill | training img/s |\n"
          "|---|---|---|---|---|---|---|")
    groups = [int(v) for v in args.bn_group_sizes.split(",")]
    for width, (height, width_px), ibn, group, policy, distill in itertools.product(
            widths, sizes, (int(v) for v in args.ibn_stages.split(",")), groups,
            args.precisions.split(","), distills):
        rate = images_per_second(width, height, width_px, policy, args.batch_size,
                                 args.num_classes, args.warmup, args.steps, args.windows, ibn,
                                 group, distill == "on")
        print(f"| {width} | {height}x{width_px} | {ibn} | {group or 'batch'} | {policy} | "
              f"{distill} | {rate:.1f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
