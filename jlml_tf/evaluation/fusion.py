"""XQDA on a learned embedding and hand-crafted features together (feature-level fusion).

The two are concatenated, [w * embedding, hand-crafted], and one XQDA is fitted on the
training images' concatenations, so XQDA weighs the directions of both. The weight w is fixed
before any test image is seen: 1 by default, both inputs as they are (the embedding has unit
norm, LOMO three unit-norm blocks). XQDA is not invariant to w: with more dimensions than
training images it works in the training features' span, where Sigma_I's fixed
regularisation decides how much each block counts. w is not chosen by cross-validation on
the training identities: a model fine-tuned on them has learned those people, so held-out
identities among them overrate the embedding.
"""
from __future__ import annotations

import numpy as np

DEFAULT_WEIGHT = 1.0
METRICS = ("xqda", "xqda_map")  # XQDA, or its map for export (metric_learning)


def concatenate(embedding, handcrafted, weight: float = DEFAULT_WEIGHT) -> np.ndarray:
    """[weight * embedding, handcrafted], row by row (float64)."""
    embedding, handcrafted = np.asarray(embedding), np.asarray(handcrafted)
    if embedding.ndim != 2 or handcrafted.ndim != 2 or len(embedding) != len(handcrafted):
        raise ValueError(f"embeddings {embedding.shape} and hand-crafted features "
                         f"{handcrafted.shape} must be two matrices with a row per image")
    if not weight > 0:
        raise ValueError(f"fusion weight {weight}: must be > 0")
    return np.concatenate([weight * embedding.astype(np.float64),
                           handcrafted.astype(np.float64)], axis=1)

