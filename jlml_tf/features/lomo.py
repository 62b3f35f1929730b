"""LOMO, the Local Maximal Occurrence representation (Liao, Hu, Zhu, Li, CVPR 2015).

For a 128x48 RGB person image (the paper's setting):

1. Colour. Retinex (`retinex.py`, an option), then HSV, each channel quantised to 8 levels
   (floor(8 v), capped at 7): one joint code h + 8 s + 64 v in 0..511 per pixel.
   Texture. The grey image (the original pixels, not the Retinex output, as in the authors'
   code: rgb2gray rounded to whole levels, / 255) coded by SILTP (Liao et al., CVPR 2010) with
   tau 0.3 and 4 neighbours at distance R: neighbour k contributes 1 x 3^k when it is darker
   than (1 - tau) I_c, 2 x 3^k when brighter than (1 + tau) I_c, 0 otherwise (81 codes), once
   with R = 3 and once with R = 5 (borders replicated).
2. Histograms of the codes in 10x10 windows placed every 5 pixels (24 rows x 8 columns of
   windows at 128x48), then the maximum over each horizontal row of windows, bin by bin: the
   "local maximal occurrence", stable under viewpoint changes.
3. A three-level pyramid: the code images are recomputed after 2x2 average pooling (an odd
   last row or column dropped) -- the quantised HSV levels pooled and floored, the grey image
   pooled (SILTP is recomputed at every level; a radius wider than the image skips the level).
   At 128x48, 64x24, 32x12: 24 + 11 + 5 = 40 window rows.
4. log(1 + count), then each of the three parts (HSV, SILTP R=3, SILTP R=5) over all its scales
   L2-normalised on its own (`normc` in the authors' code), and concatenated.

Length: 40 x (512 + 81 + 81) = 26,960. Within a part, features are ordered scale by scale,
row by row (top first), bin by bin, as in the authors' code.

Everything is batched NumPy: `lomo(images)` for one batch of images of the configured size,
`extract(images)` in batches with a progress bar.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from jlml_tf.features import retinex as retinex_lib

# MATLAB rgb2gray's weights (the authors' code converts with it).
GRAY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)


@dataclasses.dataclass(frozen=True)
class LomoConfig:
    """LOMO's parameters; the defaults are the paper's."""

    height: int = 128
    width: int = 48
    num_scales: int = 3
    block_size: int = 10
    block_step: int = 5
    hsv_bins: tuple[int, int, int] = (8, 8, 8)
    tau: float = 0.3
    radii: tuple[int, ...] = (3, 5)
    num_points: int = 4
    retinex: str = "msr"  # closest to the published LOMO+XQDA figures (BENCHMARKS.md)
    retinex_sigmas: tuple[float, ...] = retinex_lib.DEFAULT_SIGMAS

    def __post_init__(self):
        object.__setattr__(self, "hsv_bins", tuple(int(b) for b in self.hsv_bins))
        object.__setattr__(self, "radii", tuple(int(r) for r in self.radii))
        object.__setattr__(self, "retinex_sigmas", tuple(float(s) for s in self.retinex_sigmas))
        if self.retinex not in retinex_lib.VARIANTS:
            raise ValueError(f"retinex must be one of {retinex_lib.VARIANTS}, got "
                             f"{self.retinex!r}")
        if self.num_points not in (4, 8):
            raise ValueError(f"num_points must be 4 or 8, got {self.num_points}")
        if len(self.hsv_bins) != 3 or min(self.hsv_bins) < 1:
            raise ValueError(f"hsv_bins must be 3 positive counts, got {self.hsv_bins}")
        for name in ("height", "width", "num_scales", "block_size", "block_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if min(self.radii, default=1) < 1 or not 0 <= self.tau < 1:
            raise ValueError("SILTP needs radii >= 1 and 0 <= tau < 1")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, stored: dict) -> "LomoConfig":
        """The inverse of to_dict (TypeError for a key LomoConfig does not have)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})

    def check_images(self, shape) -> None:
        """ValueError unless `shape` is a batch of RGB images of the configured size."""
        if len(shape) != 4 or tuple(shape[1:]) != (self.height, self.width, 3):
            raise ValueError(f"LOMO takes RGB images [N, {self.height}, {self.width}, 3], got "
                             f"shape {tuple(shape)}; resize first (e.g. "
                             "jlml_tf.data.pipeline.decode_all)")


# ----------------------------------------------------------------------------------------------
# Pixel codes


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] RGB in [0, 1] -> HSV in [0, 1] (MATLAB rgb2hsv: hue in [0, 1), grey hue 0)."""
    rgb = np.asarray(rgb, np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    delta = v - rgb.min(axis=-1)
    coloured = delta > 0
    safe = np.where(coloured, delta, 1.0)
    h = np.where(v == r, (g - b) / safe, 0.0)
    h = np.where(v == g, 2.0 + (b - r) / safe, h)  # later cases win ties, as in MATLAB
    h = np.where(v == b, 4.0 + (r - g) / safe, h)
    h = np.where(coloured, np.mod(h / 6.0, 1.0), 0.0)
    s = np.where(v > 0, delta / np.where(v > 0, v, 1.0), 0.0)
    return np.stack([h, s, v], axis=-1)


def quantise(values: np.ndarray, levels: int) -> np.ndarray:
    """Values in [0, 1] -> integer levels floor(levels x), the top value kept in the last."""
    return np.minimum(np.floor(values * levels), levels - 1).astype(np.int64)


def hsv_levels(rgb01: np.ndarray, bins=(8, 8, 8)) -> np.ndarray:
    """[N, H, W, 3] RGB in [0, 1] -> int64 [N, H, W, 3] quantised (h, s, v) levels."""
    hsv = rgb_to_hsv(rgb01)
    return np.stack([quantise(hsv[..., c], bins[c]) for c in range(3)], axis=-1)


def joint_codes(levels: np.ndarray, bins=(8, 8, 8)) -> np.ndarray:
    """Quantised (h, s, v) levels -> one joint code h + bh s + bh bs v per pixel."""
    return levels[..., 0] + bins[0] * levels[..., 1] + bins[0] * bins[1] * levels[..., 2]


def rgb_to_gray(images) -> np.ndarray:
    """[N, H, W, 3] uint8 (or [0, 255] values) -> grey in [0, 1], rounded to whole levels first
    (what MATLAB's rgb2gray returns for uint8 images)."""
    x = np.asarray(images, np.float64)
    return np.round(x @ np.asarray(GRAY_WEIGHTS)) / 255.0


def neighbour_offsets(radius: int, num_points: int) -> list[tuple[int, int]]:
    """(dy, dx) of the SILTP neighbours, counter-clockwise from the right; 4 points are the
    right, up, left and down ones."""
    r = radius
    ring = [(0, r), (-r, r), (-r, 0), (-r, -r), (0, -r), (r, -r), (r, 0), (r, r)]
    return ring[::2] if num_points == 4 else ring


def siltp(gray: np.ndarray, tau: float = 0.3, radius: int = 3, num_points: int = 4) -> np.ndarray:
    """Scale invariant local ternary patterns of grey images [N, H, W]: int64 codes in
    0 .. 3^num_points - 1 (0 = every neighbour within the tolerance of the centre)."""
    gray = np.asarray(gray, np.float64)
    _, h, w = gray.shape
    r = radius
    padded = np.pad(gray, ((0, 0), (r, r), (r, r)), mode="edge")
    lower, upper = (1.0 - tau) * gray, (1.0 + tau) * gray
    codes = np.zeros(gray.shape, np.int64)
    for k, (dy, dx) in enumerate(neighbour_offsets(radius, num_points)):
        neighbour = padded[:, r + dy:r + dy + h, r + dx:r + dx + w]
        codes += (3 ** k) * ((neighbour < lower).astype(np.int64)
                             + 2 * (neighbour > upper).astype(np.int64))
    return codes


# ----------------------------------------------------------------------------------------------
# Windows, maxima, pyramid


def window_starts(length: int, block: int, step: int) -> np.ndarray:
    """First pixel of every window along one axis (windows entirely inside)."""
    return np.arange(0, length - block + 1, step)


def window_histograms(codes: np.ndarray, num_bins: int, block: int = 10,
                      step: int = 5) -> np.ndarray:
    """Counts of each code in every block x block window: int64 [N, rows, cols, num_bins]."""
    codes = np.asarray(codes, np.int64)
    n, h, w = codes.shape
    rows, cols = window_starts(h, block, step), window_starts(w, block, step)
    if not len(rows) or not len(cols):
        return np.zeros((n, len(rows), len(cols), num_bins), np.int64)
    if codes.min(initial=0) < 0 or codes.max(initial=0) >= num_bins:
        raise ValueError(f"codes must lie in 0..{num_bins - 1}")
    ys = rows[:, None] + np.arange(block)  # [rows, block]
    xs = cols[:, None] + np.arange(block)  # [cols, block]
    patches = codes[:, ys[:, None, :, None], xs[None, :, None, :]]  # [N, rows, cols, b, b]
    windows = n * len(rows) * len(cols)
    offsets = (np.arange(windows, dtype=np.int64) * num_bins).reshape(
        n, len(rows), len(cols), 1, 1)
    counts = np.bincount((patches + offsets).ravel(), minlength=windows * num_bins)
    return counts.reshape(n, len(rows), len(cols), num_bins)


def horizontal_max(histograms: np.ndarray) -> np.ndarray:
    """[N, rows, cols, bins] -> [N, rows, bins]: each bin's maximum over a row of windows."""
    return histograms.max(axis=2)


def average_pool(images: np.ndarray, floor: bool = False) -> np.ndarray:
    """2x2 average pooling over axes 1 and 2 of [N, H, W(, C)] (odd last row/column dropped);
    floor=True rounds down (pooled quantisation levels stay levels, as in the authors' code)."""
    n, h, w = images.shape[:3]
    h2, w2 = h // 2, w // 2
    if not h2 or not w2:
        raise ValueError(f"cannot pool a {h}x{w} image")
    x = np.asarray(images[:, :2 * h2, :2 * w2], np.float64)
    pooled = x.reshape((n, h2, 2, w2, 2) + x.shape[3:]).mean(axis=(2, 4))
    return np.floor(pooled).astype(np.int64) if floor else pooled


def log_normalise(counts: np.ndarray) -> np.ndarray:
    """log(1 + x), then each row scaled to unit L2 norm (zero rows stay zero)."""
    x = np.log1p(np.asarray(counts, np.float64))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def hsv_part(rgb01: np.ndarray, cfg: LomoConfig) -> np.ndarray:
    """Joint HSV histograms, maximised along rows, over the pyramid: [N, D_hsv] normalised."""
    levels = hsv_levels(rgb01, cfg.hsv_bins)
    num_bins = int(np.prod(cfg.hsv_bins))
    parts = []
    for scale in range(cfg.num_scales):
        hist = window_histograms(joint_codes(levels, cfg.hsv_bins), num_bins, cfg.block_size,
                                 cfg.block_step)
        if not hist.size:
            break
        parts.append(horizontal_max(hist).reshape(len(hist), -1))
        if scale + 1 == cfg.num_scales or min(levels.shape[1:3]) < 2:
            break
        levels = average_pool(levels, floor=True)
    return log_normalise(np.concatenate(parts, axis=1))


def siltp_part(gray: np.ndarray, radius: int, cfg: LomoConfig) -> np.ndarray:
    """SILTP histograms at one radius, maximised along rows, over the pyramid: normalised."""
    num_bins = 3 ** cfg.num_points
    parts = []
    for scale in range(cfg.num_scales):
        if gray.shape[2] < 2 * radius + 1:
            break  # the authors skip (and stop pooling): every later level is narrower still
        hist = window_histograms(siltp(gray, cfg.tau, radius, cfg.num_points), num_bins,
                                 cfg.block_size, cfg.block_step)
        if not hist.size:
            break
        parts.append(horizontal_max(hist).reshape(len(hist), -1))
        if scale + 1 == cfg.num_scales or min(gray.shape[1:3]) < 2:
            break
        gray = average_pool(gray)
    return log_normalise(np.concatenate(parts, axis=1)) if parts else np.zeros((len(gray), 0))


def pyramid_sizes(cfg: LomoConfig) -> list[tuple[int, int]]:
    """Image size at each pyramid level."""
    sizes, h, w = [], cfg.height, cfg.width
    for _ in range(cfg.num_scales):
        sizes.append((h, w))
        if min(h, w) < 2:
            break
        h, w = h // 2, w // 2
    return sizes


def window_rows(cfg: LomoConfig, min_width: int = 1) -> int:
    """Rows of windows summed over the pyramid levels whose width is at least min_width (and
    that hold at least one window), stopping at the first that does not."""
    total = 0
    for h, w in pyramid_sizes(cfg):
        rows = len(window_starts(h, cfg.block_size, cfg.block_step))
        cols = len(window_starts(w, cfg.block_size, cfg.block_step))
        if w < min_width or not rows or not cols:
            break
        total += rows
    return total


def feature_dim(cfg: LomoConfig = LomoConfig()) -> int:
    """Length of a LOMO vector (26,960 with the paper's parameters)."""
    dim = window_rows(cfg) * int(np.prod(cfg.hsv_bins))
    for r in cfg.radii:
        dim += window_rows(cfg, 2 * r + 1) * 3 ** cfg.num_points
    return dim


def lomo(images, cfg: LomoConfig = LomoConfig()) -> np.ndarray:
    """LOMO of a batch of RGB images [N, height, width, 3] (uint8, or floats in [0, 255]) of
    the configured size: float32 [N, feature_dim(cfg)]."""
    images = np.asarray(images)
    cfg.check_images(images.shape)
    colour = retinex_lib.apply(images, cfg.retinex, cfg.retinex_sigmas)
    gray = rgb_to_gray(images)
    parts = [hsv_part(colour, cfg)] + [siltp_part(gray, r, cfg) for r in cfg.radii]
    return np.concatenate(parts, axis=1).astype(np.float32)


@dataclasses.dataclass
class Timing:
    num_images: int
    wall_seconds: float
    cpu_seconds: float

    @property
    def per_image(self) -> dict:
        n = max(self.num_images, 1)
        return {"wall_ms_per_image": 1000 * self.wall_seconds / n,
                "cpu_ms_per_image": 1000 * self.cpu_seconds / n}


def extract(images, cfg: LomoConfig = LomoConfig(), batch_size: int = 64,
            progress: bool = True, description: str = "LOMO") -> tuple[np.ndarray, Timing]:
    """LOMO of many images, `batch_size` at a time with a tqdm progress bar.

    Returns (float32 [N, feature_dim(cfg)], the wall-clock and process CPU time it took).
    """
    from tqdm.auto import tqdm

    images = np.asarray(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    out = np.empty((len(images), feature_dim(cfg)), np.float32)
    wall, cpu = time.perf_counter(), time.process_time()
    with tqdm(total=len(images), unit="image", desc=description, disable=not progress) as bar:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            out[start:start + len(batch)] = lomo(batch, cfg)
            bar.update(len(batch))
    return out, Timing(len(images), time.perf_counter() - wall, time.process_time() - cpu)
