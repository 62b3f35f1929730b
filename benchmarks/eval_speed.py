"""Times the evaluation library at Market-1501 and CUHK03 scale on random features.

    python benchmarks/eval_speed.py [--repeats 3] [--block-size N] [--dim 1024]

Market-1501 scale: 3,368 queries x 15,913 gallery items (the test gallery without its pid -1
junk), 1024-d L2-normalised float32 features; 750 identities, 6 cameras, 2,793 distractors
(pid 0), about 4.5 queries and 17.5 gallery images per identity as in the release. One run is
protocol.evaluate: blocked L2 distances + CMC + official and non-interpolated mAP + mINP.
CUHK03 scale: 20 trials of 100 queries x 100 gallery items, then aggregate_trials.

Prints the best and median wall time over the repeats, a breakdown (distances alone vs the
whole evaluation) and the peak memory traced by tracemalloc in a separate run (tracing slows
allocation, so it never overlaps a timed run), plus the process's maximum RSS.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import numpy as np  # noqa: E402

from jlml_tf.evaluation import distances, protocol  # noqa: E402

MARKET = dict(num_query=3368, num_gallery=15913, num_ids=750, num_cams=6, distractors=2793)


def _unit(rng, n, dim):
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def market_like(rng, dim):
    """Random features with Market-1501's label distribution."""
    m = MARKET
    ids = np.arange(1, m["num_ids"] + 1)
    gallery_pids = np.r_[np.zeros(m["distractors"], np.int64),
                         rng.choice(ids, m["num_gallery"] - m["distractors"])]
    gallery_pids[m["distractors"]:m["distractors"] + len(ids)] = ids  # every id present
    query_pids = rng.choice(ids, m["num_query"])
    return (_unit(rng, m["num_query"], dim), query_pids,
            rng.integers(1, m["num_cams"] + 1, m["num_query"]),
            _unit(rng, m["num_gallery"], dim), gallery_pids,
            rng.integers(1, m["num_cams"] + 1, m["num_gallery"]))


def cuhk03_trials(rng, dim, num_trials=20, num_ids=100):
    pids = np.arange(1, num_ids + 1)
    return [(_unit(rng, num_ids, dim), pids, np.zeros(num_ids, np.int64),
             _unit(rng, num_ids, dim), pids, np.ones(num_ids, np.int64))
            for _ in range(num_trials)]


def timed(fn, repeats):
    """(result, best wall s, median wall s, CPU s of the best run) over `repeats` runs.

    CPU time (all threads of this process) tells a slow machine from a busy one: when other
    processes share the cores, wall time grows but CPU time barely does.
    """
    runs = []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        runs.append((time.perf_counter() - start, time.process_time() - cpu))
    best = min(runs)
    return result, best[0], statistics.median(w for w, _ in runs), best[1]


def traced_peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=None,
                        help="query rows per block (default: distances.default_block_size)")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    mb = 2.0 ** -20

    market = market_like(rng, args.dim)
    q, g = market[0], market[3]
    block = args.block_size or distances.default_block_size(len(g))
    print(f"Market-1501 scale: {len(q)} queries x {len(g)} gallery, dim {args.dim}, "
          f"block {block} rows, {os.cpu_count()} CPUs")

    def run_market():
        return protocol.evaluate(*market, metric="l2", block_size=block)

    def distances_only():
        for _ in distances.distance_blocks(q, g, "l2", block):
            pass

    run_market()  # warm-up: BLAS threads, page cache
    result, best, median, cpu = timed(run_market, args.repeats)
    _, d_best, _, d_cpu = timed(distances_only, args.repeats)
    peak = traced_peak(run_market)
    print(f"  evaluate (CMC + mAP official + mAP + mINP): best {best:.3f} s wall "
          f"({cpu:.2f} CPU s), median {median:.3f} s over {args.repeats}")
    print(f"    of which distances alone: best {d_best:.3f} s wall ({d_cpu:.2f} CPU s); "
          f"ranking + metrics ~{best - d_best:.3f} s")
    print(f"  peak traced memory {peak * mb:.0f} MB (features {(q.nbytes + g.nbytes) * mb:.0f}"
          f" MB; a full float32 distance matrix would be {len(q) * len(g) * 4 * mb:.0f} MB)")
    print(f"  R1 {100 * result['rank1']:.2f}  mAP(official) {100 * result['map_official']:.2f}"
          f"  mAP {100 * result['map']:.2f}  mINP {100 * result['minp']:.2f}  (random features"
          f": chance level), {result['num_queries']} queries, "
          f"{result['num_skipped_queries']} skipped")

    trials = cuhk03_trials(rng, args.dim)

    def run_cuhk03():
        return protocol.aggregate_trials([protocol.evaluate(*t) for t in trials])

    run_cuhk03()
    agg, best, median, _ = timed(run_cuhk03, args.repeats)
    print(f"CUHK03 scale: 20 trials x (100 x 100), dim {args.dim}: best {best * 1e3:.1f} ms, "
          f"median {median * 1e3:.1f} ms for all 20 + aggregation "
          f"(R1 {100 * agg['mean']['rank1']:.1f} ± {100 * agg['std']['rank1']:.1f})")
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    print(f"process max RSS {max_rss:.0f} MB; load average {os.getloadavg()[0]:.2f} "
          f"(other processes competing for the {os.cpu_count()} CPUs inflate wall times)")


if __name__ == "__main__":
    main()
