"""How well the LOMO + XQDA distillation teacher ranks the training images it scores.

Fitted on all of a split's training images (`train --distill_lomo_folds=1`), XQDA ranks its
own pairs almost perfectly, so what it teaches there is mostly the labels again; cross-fitted
(`--distill_lomo_folds=K`), each image's row comes from a map that never saw its identity.
This prints, per split and fold count, the teacher's R1 and mAP on the split's training
images, the first camera's as queries against the other cameras' (VIPeR's protocol), the rows
as the training step takes them (`LomoTeacher.distances`):

    python benchmarks/teacher_ranks.py --dataset=viper --protocol=316_316 \
        --manual_dir=../shared/data/viper --trials=1,2 --folds=1,2
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

VIPER_DIR = "../shared/data/viper"  # the script's defaults are VIPeR's


def teacher_ranks(data, index: int, folds: int, height: int, width: int, seed: int) -> dict:
    import numpy as np
    import tensorflow as tf

    from jlml_tf.data import pipeline
    from jlml_tf.data.types import union_for_training
    from jlml_tf.evaluation import metrics
    from jlml_tf.training import distill

    table, labels, _ = union_for_training([(data, data.trials[index])])
    images = pipeline.decode_all(table, height, width)
    teacher = distill.fit(images, labels, folds=folds, seed=seed)
    rows = teacher.distances(tf.constant(images, tf.float32), tf.constant(labels)).numpy()
    # the data set's own ids: the metrics skip id 0 (Market-1501's junk), a training label
    pids, cams = np.asarray(table.pids), np.asarray(table.camids)
    query, gallery = cams == cams.min(), cams != cams.min()
    return metrics.evaluate_distance_matrix(rows[np.ix_(query, gallery)], pids[query],
                                            cams[query], pids[gallery], cams[gallery])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="viper")
    parser.add_argument("--protocol", default="316_316")
    parser.add_argument("--manual_dir", default=None,
                        help=f"the release's folder (default {VIPER_DIR} for viper)")
    parser.add_argument("--trials", default="1,2", help="comma list of split indices")
    parser.add_argument("--folds", default="1,2", help="comma list of fold counts")
    parser.add_argument("--input_size", default="128x48", help="HxW, the model's input size")
    parser.add_argument("--seed", type=int, default=0, help="as train --seed: deals the folds")
    args = parser.parse_args(argv)
    try:
        trials = [int(v) for v in args.trials.split(",")]
        folds = [int(v) for v in args.folds.split(",")]
        height, width = (int(v) for v in args.input_size.split("x"))
    except ValueError as e:
        parser.error(f"--trials, --folds, --input_size: {e}")
    if args.manual_dir is None:
        if args.dataset != "viper":
            parser.error(f"--manual_dir: give the folder of the --dataset={args.dataset} release")
        args.manual_dir = VIPER_DIR
    import jlml_tf_datasets

    data = jlml_tf_datasets.load(args.dataset, protocol=args.protocol, data_dir=None,
                                 manual_dir=args.manual_dir)
    print(f"LOMO + XQDA teacher on {data.name} {args.protocol} training images, {height}x{width}\n")
    print("| split | folds | R1 | mAP |\n|---|---|---|---|")
    for index in trials:
        for k in folds:
            r = teacher_ranks(data, index, k, height, width, args.seed)
            print(f"| {index} | {k} | {100 * r['rank1']:.1f} | {100 * r['map']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
