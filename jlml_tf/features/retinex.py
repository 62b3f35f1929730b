"""Multi-scale Retinex (Jobson, Rahman, Woodell 1997), the illumination normalisation of LOMO.

LOMO (Liao et al., CVPR 2015, Sec. 3.1) applies a two-scale centre/surround Retinex
(Gaussian surrounds of sigma 5 and 20 pixels) to each image before its colour histograms. The
authors released that step only as a compiled binary, so which variant they ran is unknown; the
variants here are:

  none   the decoded RGB pixels as they are.
  msr    intensity-only MSR with chromaticity preserved (as in Petro, Sbert, Morel, IPOL 2014):
         the MSR of the intensity (mean of R, G, B) is stretched to [0, 1] and every pixel's
         R, G, B are multiplied by the same gain (new / old intensity), capped so that no
         channel exceeds 1. Hue and saturation are unchanged; only brightness moves.
  msrcr  MSR with colour restoration (Jobson et al. 1997): per-channel MSR R_c multiplied by
         C_c = beta (log(alpha I_c) - log(sum_c I_c)), alpha 125, beta 46, then stretched to
         [0, 1] jointly over the three channels. Colours are changed (a grey-world correction).

Single-scale Retinex at scale s: log(I) - log(G_s * I), I the channel in (0, 1] (pixels + 1 over
256, so log is finite), G_s a normalised Gaussian (scipy.ndimage, reflecting borders, truncated
at 4 sigma). MSR: the mean over scales. "Stretched to [0, 1]": the automatic gain/offset of
simplest colour balance -- values below the image's `clip` quantile go to 0, above its
1 - `clip` quantile to 1, linear in between (a flat image maps to 0.5).

Measured with XQDA on CUHK01, GRID and VIPeR (BENCHMARKS.md, "Hand-crafted baseline"), "msr"
comes closest to the published LOMO+XQDA figures, "none" is within a few points of it, and this
"msrcr" is 3-7 rank-1 points lower: LOMO's default is "msr".

All functions take a batch: uint8 or float [N, H, W, 3] with values in [0, 255], and return
float32 [N, H, W, 3] in [0, 1].
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage

VARIANTS = ("none", "msr", "msrcr")
NONE = VARIANTS[0]  # the only variant LOMO in the graph (lomo_graph.py) computes
LABELS = {"none": "no Retinex", "msr": "intensity MSR", "msrcr": "MSRCR"}  # for reports
DEFAULT_SIGMAS = (5.0, 20.0)  # LOMO, Sec. 3.1
ALPHA, BETA = 125.0, 46.0  # colour restoration constants of Jobson et al. (1997)
DEFAULT_CLIP = 0.01


def _positive(images) -> np.ndarray:
    """[0, 255] pixels -> (0, 1] floats (float64), so that log is defined everywhere."""
    x = np.asarray(images, np.float64)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected a batch of RGB images [N, H, W, 3], got shape {x.shape}")
    return (x + 1.0) / 256.0


def surround(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the two image axes (1 and 2) of a batch [N, H, W(, C)]."""
    sigmas = (0.0, sigma, sigma) + (0.0,) * (x.ndim - 3)
    return scipy.ndimage.gaussian_filter(x, sigmas, mode="reflect", truncate=4.0)


def multiscale_retinex(x: np.ndarray, sigmas=DEFAULT_SIGMAS) -> np.ndarray:
    """Mean over scales of log(x) - log(G_s * x); x positive, [N, H, W(, C)]."""
    if not len(sigmas):
        raise ValueError("multi-scale Retinex needs at least one scale")
    log_x = np.log(x)
    return sum(log_x - np.log(surround(x, s)) for s in sigmas) / len(sigmas)


def stretch(values: np.ndarray, clip: float = DEFAULT_CLIP) -> np.ndarray:
    """Per image (axis 0), a linear map of the [clip, 1 - clip] quantiles onto [0, 1], clipped."""
    if not 0.0 <= clip < 0.5:
        raise ValueError(f"clip must be in [0, 0.5), got {clip}")
    flat = values.reshape(len(values), -1)
    low, high = np.quantile(flat, [clip, 1.0 - clip], axis=1)
    span = high - low
    flat_image = span <= 1e-12 * np.maximum(np.abs(high), 1.0)
    shape = (-1,) + (1,) * (values.ndim - 1)
    out = (values - low.reshape(shape)) / np.where(flat_image, 1.0, span).reshape(shape)
    out = np.where(flat_image.reshape(shape), 0.5, out)
    return np.clip(out, 0.0, 1.0)


def msr_intensity(images, sigmas=DEFAULT_SIGMAS, clip: float = DEFAULT_CLIP) -> np.ndarray:
    """Intensity-only MSR, chromaticity preserved (variant "msr")."""
    x = _positive(images)
    intensity = x.mean(axis=-1)
    new = stretch(multiscale_retinex(intensity, sigmas), clip)
    gain = np.minimum(new / intensity, 1.0 / x.max(axis=-1))
    return np.clip(x * gain[..., None], 0.0, 1.0).astype(np.float32)


def msrcr(images, sigmas=DEFAULT_SIGMAS, clip: float = DEFAULT_CLIP, alpha: float = ALPHA,
          beta: float = BETA) -> np.ndarray:
    """MSR with colour restoration (variant "msrcr")."""
    x = _positive(images)
    restoration = beta * (np.log(alpha * x) - np.log(x.sum(axis=-1, keepdims=True)))
    return stretch(multiscale_retinex(x, sigmas) * restoration, clip).astype(np.float32)


def apply(images, variant: str, sigmas=DEFAULT_SIGMAS, clip: float = DEFAULT_CLIP) -> np.ndarray:
    """The named variant on a batch: float32 [N, H, W, 3] in [0, 1]."""
    if variant == "none":
        x = np.asarray(images)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected a batch of RGB images [N, H, W, 3], got shape {x.shape}")
        return (x.astype(np.float32) / 255.0)
    if variant == "msr":
        return msr_intensity(images, sigmas, clip)
    if variant == "msrcr":
        return msrcr(images, sigmas, clip)
    raise ValueError(f"unknown Retinex variant {variant!r}; choose one of {VARIANTS}")
