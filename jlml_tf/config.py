"""Configuration of the JLML network, kept as plain dataclasses that round-trip through JSON."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

# The input contract: RGB pixels in [0, 255], normalised inside the model by ImageNet
# statistics (also the "mean" fill of random erasing).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
# Image files the deployment tools read from folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

# A camera needs at least this many distinct images for batch-norm statistics of its own: the
# variance of the pooled-feature batch norm (BNNeck) over one or two images is about zero, which
# would blow its outputs up. The camera sampler gives smaller cameras no batch (or group) of
# their own; test-time calibration (inference/camera_bn.py) leaves them with the trained
# statistics (GRID's camera 3 has one training image in most splits).
MIN_CAMERA_IMAGES = 8

BRANCHES = ("both", "global", "local")
LOSS_MODES = ("multi", "uni")


@dataclasses.dataclass
class ModelConfig:
    """Architecture of JLML. Defaults are JLML-ResNet39 at the paper's 224x96 input."""

    input_height: int = 224
    input_width: int = 96
    num_stripes: int = 4  # m, the local body stripes
    shared_stem: bool = True  # False: the paper's "without shared feature" ablation
    stem_filters: int = 32
    global_widths: tuple[int, ...] = (32, 64, 128, 256)
    local_widths: tuple[int, ...] = (8, 16, 32, 64)
    units_per_stage: tuple[int, ...] = (3, 3, 3, 3)
    stage_strides: tuple[int, ...] = (1, 2, 2, 2)
    expansion: int = 4
    feature_dim: int = 512  # per branch; the embedding is 2 x feature_dim with both branches
    branches: str = "both"  # "global" / "local" only: the paper's single-branch ablations
    loss_mode: str = "multi"  # "uni": one classifier on the concatenated feature (UniLoss)
    num_classes: int = 751
    dropout: float = 0.0
    # BNNeck (Luo et al. 2019): batch norm on each branch feature, feeding both the classifier
    # and the embedding; keeps the softmax from shaping the metric space's scale.
    feature_bn: bool = False
    batch_norm_momentum: float = 0.9
    sync_batch_norm: bool = False
    # IBN-a (Pan et al. 2018) in the first ibn_stages stages of every branch: instance norm on
    # half the channels, against camera-to-camera appearance change. 0: the paper's JLML.
    ibn_stages: int = 0
    # Training through tf.nn.fused_batch_norm: same outputs and weights, faster (BENCHMARKS.md).
    fused_batch_norm: bool = True
    # > 0: in training, every batch norm normalises each group of this many consecutive images
    # on its own (one camera per group with --sampler=camera or camera_pairs and
    # --cameras_per_batch; camera-based BN, Zhuang et al. 2020). Training only: the deployed
    # model is built with 0. Grouped layers train through the fused kernel once per group
    # whatever fused_batch_norm says.
    batch_norm_group_size: int = 0

    def __post_init__(self):
        for name in ("global_widths", "local_widths", "units_per_stage", "stage_strides"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        def fail(field, value, allowed):
            raise ValueError(f"ModelConfig.{field}={value!r} is not allowed; expected {allowed}")

        if not 1 <= self.num_stripes <= 10:
            fail("num_stripes", self.num_stripes, "an integer from 1 to 10")
        if self.branches not in BRANCHES:
            fail("branches", self.branches, f"one of {BRANCHES}")
        if self.loss_mode not in LOSS_MODES:
            fail("loss_mode", self.loss_mode, f"one of {LOSS_MODES}")
        if self.loss_mode == "uni" and self.branches != "both":
            fail("loss_mode", self.loss_mode, "'multi' when only one branch is built")
        stages = len(self.units_per_stage)
        for name in ("global_widths", "local_widths", "stage_strides"):
            if len(getattr(self, name)) != stages:
                fail(name, getattr(self, name), f"{stages} values, one per stage")
        if not 0 <= self.ibn_stages <= stages:
            fail("ibn_stages", self.ibn_stages, f"an integer from 0 to {stages} (the stages)")
        if self.batch_norm_group_size < 0 or self.batch_norm_group_size == 1:
            fail("batch_norm_group_size", self.batch_norm_group_size,
                 "0 (off) or at least 2 images per group (--batch_size / --cameras_per_batch)")
        if self.batch_norm_group_size and self.sync_batch_norm:
            fail("batch_norm_group_size", self.batch_norm_group_size,
                 "0 with sync_batch_norm (groups are normalised within each replica)")
        if self.input_height < 8 * self.num_stripes or self.input_width < 16:
            fail("input_height/input_width", (self.input_height, self.input_width),
                 f"at least {8 * self.num_stripes}x16 for {self.num_stripes} stripes")
        if self.num_classes < 2:
            fail("num_classes", self.num_classes, "at least 2 identities")
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", self.dropout, "a value in [0, 1)")

    @property
    def embedding_dim(self) -> int:
        return self.feature_dim * (2 if self.branches == "both" else 1)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))


@dataclasses.dataclass
class SparsityConfig:
    """Selective feature learning (SFL): structured-sparsity penalties on classifier weights.

    Axis 0 of a classifier kernel is the feature dimension, axis 1 the identity. A group is a
    slice along `*_group_axis`: 0 groups each feature's weights over all identities (a row).
    """

    global_group_lasso: float = 5e-4  # l2,1 norm of the global classifier; 0 turns it off
    global_group_axis: int = 0
    # Squared l1 norms grow with (features x identities): 1e-6 gives per-weight gradients of the
    # same size as 5e-4 weight decay at initialisation, for 512 x 751 (Market) and smaller heads.
    local_exclusive_lasso: float = 1e-6  # sum over groups of the squared l1 norm; 0 turns it off
    local_group_axis: int = 1

    def __post_init__(self):
        for name in ("global_group_axis", "local_group_axis"):
            if getattr(self, name) not in (0, 1):
                raise ValueError(f"SparsityConfig.{name}={getattr(self, name)!r}; expected 0 or 1")
        for name in ("global_group_lasso", "local_exclusive_lasso"):
            if getattr(self, name) < 0:
                raise ValueError(f"SparsityConfig.{name}={getattr(self, name)!r}; expected >= 0")
