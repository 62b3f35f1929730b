"""The paper's published figures (JLML, IJCAI 2017 slides), keyed "dataset/protocol[/ablation]".

Values are percentages; reports print them next to measured results.
"""

from jlml_tf.evaluation.metrics import RANK_KEYS


def _cmc(r1, r5, r10, r20):
    return dict(zip(RANK_KEYS, (r1, r5, r10, r20)))


PAPER = {
    "market1501/single_query": {"rank1": 85.1, "map_official": 65.5},
    "market1501/multi_query": {"rank1": 89.7, "map_official": 74.5},
    "cuhk03/classic_labeled": _cmc(83.2, 98.0, 99.4, 99.8),
    "cuhk03/classic_detected": _cmc(80.6, 96.9, 98.7, 99.2),
    "cuhk01/871_100_single_shot": _cmc(87.0, 97.2, 98.6, 99.4),
    "cuhk01/485_486_single_shot": _cmc(69.8, 88.4, 93.3, 96.3),
    "cuhk01/871_100_multi_shot": _cmc(91.2, 98.4, 99.2, 99.8),
    "cuhk01/485_486_multi_shot": _cmc(76.7, 92.6, 95.6, 98.1),
    "grid/125_125": _cmc(37.5, 61.4, 69.4, 77.4),
    "viper/316_316": {"rank1": 50.2},
}

# Market-1501 ablations (single query R1 / mAP), from the paper's ablation tables.
ABLATIONS = {
    "global_only": (77.4, 56.0), "local_only": (78.9, 57.8), "uniloss": (76.1, 52.2),
    "no_shared_stem": (83.2, 63.1), "no_sfl": (83.4, 63.8),
    "m2": (83.9, 64.4), "m4": (85.1, 65.5), "m6": (83.4, 62.6), "m8": (82.3, 61.3),
    "m10": (81.7, 60.4), "kissme": (82.1, 61.4), "xqda": (82.6, 63.2),
}
PAPER.update({f"market1501/single_query/{k}": {"rank1": r1, "map_official": m}
              for k, (r1, m) in ABLATIONS.items()})


def reference(key: str | None) -> dict | None:
    """The paper's figures for a key, or None when the paper has none (e.g. synthetic)."""
    return PAPER.get(key) if key else None
