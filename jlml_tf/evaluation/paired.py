"""Paired differences between two methods evaluated on the same trials (splits), with a t
interval: the one rule behind every "paired difference" figure the project reports."""
from __future__ import annotations

import math

import scipy.stats


def paired_difference(better: dict[str, dict], worse: dict[str, dict], key: str = "rank1",
                      confidence: float = 0.95) -> dict | None:
    """Mean paired difference (better - worse) of `key` over the trials both have, with a t
    interval at `confidence`, and each trial's difference, in percentage points (the metrics are
    fractions); None without at least two shared trials."""
    shared = sorted(set(better) & set(worse))
    if len(shared) < 2:
        return None
    diffs = [100 * (better[s][key] - worse[s][key]) for s in shared]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(scipy.stats.t.ppf(1 - (1 - confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return {"splits": shared, "differences": diffs, "mean": mean, "low": mean - half,
            "high": mean + half}



def format_difference(d: dict) -> str:
    """"+1.8 [+0.3, +3.3]": a paired difference as every report prints it (points)."""
    return f"{d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]"
