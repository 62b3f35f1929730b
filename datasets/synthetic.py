"""A procedural synthetic pedestrian data set, the built-in default (no download).

Every image is drawn with NumPy from a seed, so the data set is identical on every machine that
runs the same code. It is exposed like the real benchmarks: a TFDS builder (`Synthetic`, TFDS
name `synthetic_reid`) whose examples use `base.reid_features()` and whose splits are `train`,
`query` and `gallery` in the Market-1501 sense, and `load()` returning a `ReidData`.

What an identity is
    head (skin tone, hair colour, hair length), upper body (colour, sleeve length and a pattern:
    plain, horizontal stripes, vertical stripes, checks, or a chest logo), lower body (trousers,
    shorts or a skirt, colour, length), shoes (colour) and an optional bag (side bag with a
    strap, or a backpack). Identities come in *families*: after a random base identity, its
    siblings copy it and change one body part only (hair, shirt pattern, trousers, shoes or
    bag). Siblings share the global colour scheme, so only the one horizontal body stripe that
    differs tells them apart: this is where JLML's local branch should help.

What a camera is
    a gain and gamma (illumination), a per-channel colour cast, a person scale (distance), a
    blur, sensor noise, a background palette and clutter, and an occlusion probability. The cast
    and gain move every colour of a person together, so the mean colour of an image is a poor
    identity cue across cameras. Each image also gets its own pose jitter (body width, leg
    separation, translation), a front or back view (a backpack is a pair of straps from the
    front and a bag from the back; a logo is only on the front), a random left-right facing,
    and a random background.

Splits (Market-1501 style)
    train and test identities are disjoint. Each identity is seen by 2..4 cameras (camera ids
    start at 1). Test identities have `queries_per_id` query images from one camera; the gallery
    holds all their images from the other cameras and, with probability
    `same_camera_gallery_prob`, one more image from the query camera (junk under the
    same-camera rule), plus `num_distractors` single images of other people with pid 0.

Default size (config "default"): 160 training and 100 test identities, 5 cameras, each
identity in 2-4 of them, 4 images per identity per camera, 100 distractors, 128x64 pixels, JPEG
(about 4 KB each): 1,908 training, 100 query and 931 gallery images (2,939 in all). Why: enough
training identities (and sibling pairs) for the classifiers to learn fine distinctions, a test set
big enough that rank-1 is not noisy in steps of 10% (chance rank-1 is about 1%), and few enough
images that a small JLML runs an epoch in well under a minute on 2 CPU cores; 128x64 (the
Market-1501 size) keeps enough pixels for stripes and shoes, and the model resizes. Generation
takes about 9 s on 2 idle cores (`generate`), the TFDS build about 10 s; it is cached under
`data_dir`. The "tiny" config (12 identities, 3 cameras, 64x32, 59 images) renders in 0.1 s and
builds in about a second, for unit tests.

Difficulty, measured: nearest neighbour on hand-made features is near chance (rank-1 0% on the
image mean colour, 1-8% on stripe mean colours, colour histograms or 16x8 thumbnails), while a
small JLML (stem 16, widths 16-128 / 8-32, one unit per stage, 128x64, Adam 1e-3, pad-crop,
flip, erasing) reached rank-1 18% after 6 epochs and 23% after 12 epochs (~700 steps). In an
earlier, slightly harder version of this generator the same run gave global-only 13%,
local-only 16%, both 18%.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from scipy import ndimage

from jlml_tf.data.types import DISTRACTOR_PID, ImageTable, ReidData, Trial
from jlml_tf_datasets import base

PROTOCOLS = {
    "default": "Market-style single split: disjoint train/test identities, query from one "
               "camera, gallery from the others plus same-camera junk and pid-0 distractors",
}

SPLITS = ("train", "query", "gallery")

# ----------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
    """Size and seed of a synthetic data set; every field changes the generated images."""

    num_train_ids: int = 160
    num_test_ids: int = 100
    num_cameras: int = 5
    min_cameras_per_id: int = 2
    max_cameras_per_id: int = 4
    images_per_camera: int = 4  # per identity per camera (training ids and gallery cameras)
    queries_per_id: int = 1
    same_camera_gallery_prob: float = 0.5
    num_distractors: int = 100
    height: int = 128
    width: int = 64
    seed: int = 0
    image_format: str = "jpeg"  # "jpeg" or "png"
    jpeg_quality: int = 92

    def validate(self) -> None:
        if self.num_train_ids < 1 or self.num_test_ids < 1:
            raise ValueError("SyntheticConfig needs at least one training and one test identity")
        if self.num_cameras < 2:
            raise ValueError("SyntheticConfig.num_cameras must be at least 2")
        if not 2 <= self.min_cameras_per_id <= self.max_cameras_per_id:
            raise ValueError("SyntheticConfig needs 2 <= min_cameras_per_id <= max_cameras_per_id")
        if self.images_per_camera < 1:
            raise ValueError("SyntheticConfig.images_per_camera must be at least 1")
        if self.queries_per_id < 1:
            raise ValueError("SyntheticConfig.queries_per_id must be at least 1")
        if self.height < 32 or self.width < 16:
            raise ValueError("SyntheticConfig images must be at least 32x16 pixels")
        if self.image_format not in ("jpeg", "png"):
            raise ValueError("SyntheticConfig.image_format must be 'jpeg' or 'png'")

    def sizes(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(SyntheticConfig)
                if f.name not in {g.name for g in dataclasses.fields(tfds.core.BuilderConfig)}}


SIZE_FIELDS = tuple(SyntheticConfig(name="_").sizes())

DEFAULT = SyntheticConfig(name="default", description="160 train / 100 test ids, 5 cameras, 128x64")
TINY = SyntheticConfig(
    name="tiny", description="12 ids (6 train / 6 test), 3 cameras, 64x32: for unit tests",
    num_train_ids=6, num_test_ids=6, num_cameras=3, min_cameras_per_id=2, max_cameras_per_id=3,
    images_per_camera=2, num_distractors=4, height=64, width=32)


def make_config(base_config: str | SyntheticConfig = "default", **sizes) -> SyntheticConfig:
    """A config from a named one with some fields replaced; the name encodes the changes, so
    each size gets its own TFDS cache directory."""
    start = {"default": DEFAULT, "tiny": TINY}.get(base_config, base_config) \
        if isinstance(base_config, str) else base_config
    if not isinstance(start, SyntheticConfig):
        raise ValueError(f"unknown synthetic config {base_config!r}; known: default, tiny")
    unknown = set(sizes) - set(SIZE_FIELDS)
    if unknown:
        raise ValueError(f"unknown synthetic options {sorted(unknown)}; known: {list(SIZE_FIELDS)}")
    if not sizes:
        return start
    values = {**start.sizes(), **sizes}
    digest = hashlib.sha1(repr(sorted(values.items())).encode()).hexdigest()[:10]
    return SyntheticConfig(name=f"{start.name}_custom_{digest}",
                           description=f"{start.name} with {sizes}", **values)


# ----------------------------------------------------------------------------------------------
# Appearance vocabulary

CLOTH_COLOURS = np.array([
    (30, 30, 32), (225, 225, 220), (128, 128, 128), (30, 40, 90), (40, 90, 190),
    (130, 170, 220), (190, 35, 35), (110, 30, 40), (40, 130, 60), (110, 110, 50),
    (220, 200, 60), (230, 120, 40), (225, 140, 170), (110, 60, 140), (110, 75, 45),
    (200, 180, 140), (170, 150, 100), (30, 130, 130)], dtype=np.float32)
SKIN_TONES = np.array([(250, 215, 185), (225, 180, 145), (190, 140, 100), (140, 95, 65),
                       (95, 65, 45)], dtype=np.float32)
HAIR_COLOURS = np.array([(25, 20, 20), (60, 40, 25), (110, 75, 40), (210, 180, 110),
                         (160, 160, 160), (140, 60, 30)], dtype=np.float32)
PATTERNS = ("plain", "hstripes", "vstripes", "checks", "logo")
LOWER_TYPES = ("trousers", "shorts", "skirt")
BAGS = ("none", "side", "back")


@dataclasses.dataclass
class Identity:
    skin: np.ndarray
    hair_colour: np.ndarray
    hair_length: int  # 0 short, 1 medium, 2 long
    upper_colour: np.ndarray
    pattern: str
    pattern_colour: np.ndarray
    pattern_period: float  # in units of person height
    long_sleeves: bool
    lower_type: str
    lower_colour: np.ndarray
    lower_end: float  # where trousers/shorts/skirt end, in units of person height
    shoe_colour: np.ndarray
    bag: str
    bag_colour: np.ndarray
    build: float  # body width factor
    stature: float  # height factor


def _colour(rng, palette, jitter=12.0):
    base_colour = palette[rng.integers(len(palette))]
    return np.clip(base_colour + rng.uniform(-jitter, jitter, 3), 0, 255).astype(np.float32)


def _other_colour(rng, palette, current, jitter=12.0):
    """A palette colour clearly different from `current`."""
    for _ in range(50):
        c = _colour(rng, palette, jitter)
        if np.abs(c - current).sum() > 90:
            return c
    return np.clip(255 - current, 0, 255).astype(np.float32)


def _lower_end(rng, lower_type):
    return {"trousers": rng.choice([0.95, 0.95, 0.86]), "shorts": rng.uniform(0.68, 0.76),
            "skirt": rng.uniform(0.70, 0.86)}[lower_type]


def random_identity(rng: np.random.Generator) -> Identity:
    upper = _colour(rng, CLOTH_COLOURS)
    lower_type = LOWER_TYPES[rng.choice(3, p=[0.6, 0.2, 0.2])]
    return Identity(
        skin=_colour(rng, SKIN_TONES, 8), hair_colour=_colour(rng, HAIR_COLOURS, 8),
        hair_length=int(rng.choice(3, p=[0.5, 0.25, 0.25])), upper_colour=upper,
        pattern=PATTERNS[rng.choice(5, p=[0.4, 0.15, 0.15, 0.15, 0.15])],
        pattern_colour=_other_colour(rng, CLOTH_COLOURS, upper),
        pattern_period=float(rng.uniform(0.035, 0.06)), long_sleeves=bool(rng.random() < 0.6),
        lower_type=lower_type, lower_colour=_colour(rng, CLOTH_COLOURS),
        lower_end=float(_lower_end(rng, lower_type)), shoe_colour=_colour(rng, CLOTH_COLOURS),
        bag=BAGS[rng.choice(3, p=[0.5, 0.25, 0.25])], bag_colour=_colour(rng, CLOTH_COLOURS),
        build=float(rng.uniform(0.88, 1.12)), stature=float(rng.uniform(0.92, 1.0)))


def sibling(rng: np.random.Generator, ident: Identity) -> Identity:
    """A copy of `ident` that differs in one body part only (one horizontal stripe)."""
    s = dataclasses.replace(ident)
    part = rng.choice(["hair", "pattern", "lower", "shoes", "bag"])
    if part == "hair":
        if rng.random() < 0.5:
            s.hair_length = int((ident.hair_length + rng.integers(1, 3)) % 3)
        else:
            s.hair_colour = _other_colour(rng, HAIR_COLOURS, ident.hair_colour, 8)
    elif part == "pattern":
        s.pattern = PATTERNS[(PATTERNS.index(ident.pattern) + rng.integers(1, 5)) % 5]
    elif part == "lower":
        if rng.random() < 0.6:
            s.lower_colour = _other_colour(rng, CLOTH_COLOURS, ident.lower_colour)
        else:
            s.lower_type = LOWER_TYPES[(LOWER_TYPES.index(ident.lower_type) + rng.integers(1, 3)) % 3]
            s.lower_end = float(_lower_end(rng, s.lower_type))
    elif part == "shoes":
        s.shoe_colour = _other_colour(rng, CLOTH_COLOURS, ident.shoe_colour)
    else:
        s.bag = BAGS[(BAGS.index(ident.bag) + rng.integers(1, 3)) % 3]
        s.bag_colour = _other_colour(rng, CLOTH_COLOURS, ident.bag_colour)
    return s


def make_identities(rng: np.random.Generator, count: int) -> list[Identity]:
    """`count` identities in families of 1-3 that share all but one body part."""
    people: list[Identity] = []
    while len(people) < count:
        base_identity = random_identity(rng)
        family = [base_identity]
        for _ in range(int(rng.choice(3, p=[0.45, 0.35, 0.2]))):
            family.append(sibling(rng, base_identity))
        people.extend(family)
    return people[:count]


# ----------------------------------------------------------------------------------------------
# Cameras

# Hand-made camera looks, jittered per seed; cameras beyond these are random.
_CAMERA_STYLES = [
    dict(gain=1.15, gamma=0.90, cast=(1.10, 1.00, 0.85), scale=0.90, blur=0.3, noise=3.0, occlusion=0.10),
    dict(gain=0.75, gamma=1.15, cast=(0.85, 0.97, 1.15), scale=0.80, blur=0.9, noise=6.0, occlusion=0.20),
    dict(gain=1.00, gamma=1.00, cast=(0.92, 1.10, 0.92), scale=0.95, blur=0.0, noise=2.0, occlusion=0.05),
    dict(gain=0.90, gamma=0.85, cast=(1.12, 0.90, 1.08), scale=0.76, blur=1.2, noise=5.0, occlusion=0.25),
    dict(gain=1.30, gamma=1.10, cast=(1.00, 1.00, 1.00), scale=0.85, blur=0.6, noise=4.0, occlusion=0.15),
    dict(gain=0.65, gamma=0.95, cast=(1.15, 1.05, 0.82), scale=0.88, blur=0.4, noise=7.0, occlusion=0.15),
]


@dataclasses.dataclass
class Camera:
    gain: float
    gamma: float
    cast: np.ndarray
    scale: float  # person height / image height
    blur: float  # Gaussian sigma at 128 pixels image height
    noise: float  # sensor noise std in 0..255
    occlusion: float  # probability of an occluder in front of the person
    palette: np.ndarray  # background colours [4, 3]
    texture: float  # background texture strength


def make_cameras(rng: np.random.Generator, count: int) -> list[Camera]:
    cameras = []
    for i in range(count):
        if i < len(_CAMERA_STYLES):
            s = _CAMERA_STYLES[i]
            gain, gamma = s["gain"] * rng.uniform(0.95, 1.05), s["gamma"] * rng.uniform(0.95, 1.05)
            cast = np.array(s["cast"]) * rng.uniform(0.97, 1.03, 3)
            scale, blur, noise, occ = s["scale"], s["blur"], s["noise"], s["occlusion"]
        else:
            gain, gamma = rng.uniform(0.65, 1.3), rng.uniform(0.85, 1.15)
            cast = rng.uniform(0.85, 1.15, 3)
            scale, blur = rng.uniform(0.75, 0.95), rng.uniform(0.0, 1.2)
            noise, occ = rng.uniform(2, 7), rng.uniform(0.05, 0.25)
        # Backgrounds: desaturated scene colours, so clothes stand out but still vary.
        palette = np.stack([_colour(rng, CLOTH_COLOURS, 30) * rng.uniform(0.6, 1.0)
                            for _ in range(4)])
        palette = palette.mean(1, keepdims=True) + 0.55 * (palette - palette.mean(1, keepdims=True))
        cast = 1.0 + 0.8 * (cast - 1.0)  # casts shift colours but keep them recognisable
        cameras.append(Camera(float(gain), float(gamma), cast.astype(np.float32), float(scale),
                              float(blur), float(noise), float(occ), palette,
                              float(rng.uniform(8, 22))))
    return cameras


# ----------------------------------------------------------------------------------------------
# Drawing


class _Canvas:
    """An RGB float canvas with mask helpers in pixel coordinates (pixel centres at +0.5)."""

    def __init__(self, height, width):
        self.img = np.zeros((height, width, 3), np.float32)
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
        self.person = np.zeros((height, width), bool)

    def ellipse(self, cy, cx, ry, rx):
        return ((self.yy - cy) / ry) ** 2 + ((self.xx - cx) / rx) ** 2 <= 1.0

    def rect(self, y0, y1, x0, x1):
        return (self.yy >= y0) & (self.yy < y1) & (self.xx >= x0) & (self.xx < x1)

    def trapezoid(self, y0, y1, cx, half0, half1):
        t = np.clip((self.yy - y0) / max(y1 - y0, 1e-6), 0, 1)
        return (self.yy >= y0) & (self.yy < y1) & (np.abs(self.xx - cx) <= half0 + t * (half1 - half0))

    def band(self, p0, p1, half_width):
        """Pixels within half_width of the segment p0-p1 ((y, x) points)."""
        (y0, x0), (y1, x1) = p0, p1
        dy, dx = y1 - y0, x1 - x0
        t = np.clip(((self.yy - y0) * dy + (self.xx - x0) * dx) / (dy * dy + dx * dx + 1e-6), 0, 1)
        return (self.yy - (y0 + t * dy)) ** 2 + (self.xx - (x0 + t * dx)) ** 2 <= half_width ** 2

    def paint(self, mask, colour, person=True):
        self.img[mask] = colour
        if person:
            self.person |= mask


def _background(canvas: _Canvas, cam: Camera, rng: np.random.Generator):
    h, w = canvas.img.shape[:2]
    wall, floor = cam.palette[0], cam.palette[1]
    horizon = h * rng.uniform(0.55, 0.8)
    grad = (canvas.yy[..., None] / h) * 0.3 + 0.85
    canvas.img[:] = np.where((canvas.yy >= horizon)[..., None], floor, wall) * grad
    for _ in range(int(rng.integers(1, 5))):  # clutter: doors, poles, signs, parked things
        y0, x0 = rng.uniform(-0.2, 0.9) * h, rng.uniform(-0.3, 1.0) * w
        hh, ww = rng.uniform(0.1, 0.6) * h, rng.uniform(0.08, 0.5) * w
        colour = cam.palette[rng.integers(len(cam.palette))] * rng.uniform(0.7, 1.3)
        canvas.paint(canvas.rect(y0, y0 + hh, x0, x0 + ww), np.clip(colour, 0, 255), person=False)
    noise = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32),
                                    sigma=max(1.0, h / 64))
    canvas.img += (noise / (noise.std() + 1e-6) * cam.texture)[..., None]


def _pattern_mask(canvas, ident, top, cx, u, front):
    ty, tx = canvas.yy - top, canvas.xx - cx
    p = ident.pattern_period * u
    if ident.pattern == "hstripes":
        return np.floor(ty / p) % 2 == 1
    if ident.pattern == "vstripes":
        return np.floor(tx / p + 100) % 2 == 1
    if ident.pattern == "checks":
        return (np.floor(ty / p) + np.floor(tx / p + 100)) % 2 == 1
    if ident.pattern == "logo" and front:
        return (np.abs(ty - 0.12 * u) < 0.05 * u) & (np.abs(tx) < 0.06 * u)
    return np.zeros_like(canvas.person)


def draw_person(canvas: _Canvas, ident: Identity, cam: Camera, rng: np.random.Generator) -> None:
    """The person at a canonical standing pose with per-image jitter; front or back view."""
    h, w = canvas.img.shape[:2]
    u = cam.scale * h * ident.stature * rng.uniform(0.96, 1.03)  # person height in pixels
    y0 = (h - u) / 2 + rng.uniform(-0.03, 0.03) * h
    cx = w / 2 + rng.uniform(-0.06, 0.06) * w
    bw = 0.12 * u * ident.build * rng.uniform(0.93, 1.07)  # shoulder half-width
    aw = 0.05 * u  # arm width
    lw = 0.4 * bw  # leg half-width
    sep = lw * rng.uniform(1.0, 1.4)  # leg centre offset from the body axis
    front = rng.random() < 0.7
    Y = lambda f: y0 + f * u  # noqa: E731  fraction of person height -> pixel row

    skin = ident.skin
    torso_top, torso_bottom = Y(0.15), Y(0.52)

    # Backpack seen from the front: its body peeks out beside the torso (drawn first).
    if ident.bag == "back" and front:
        canvas.paint(canvas.rect(Y(0.17), Y(0.42), cx - bw - 0.03 * u, cx + bw + 0.03 * u),
                     ident.bag_colour * 0.8)
    # Long hair falls behind the shoulders.
    if ident.hair_length == 2:
        canvas.paint(canvas.rect(Y(0.06), Y(0.25), cx - 0.065 * u, cx + 0.065 * u), ident.hair_colour)

    # Legs (skin), then the lower garment over them, then shoes.
    leg_top, leg_bottom = Y(0.55), Y(0.95)
    legs = [canvas.rect(leg_top, leg_bottom, c - lw, c + lw) for c in (cx - sep, cx + sep)]
    for leg in legs:
        canvas.paint(leg, skin)
    end = Y(ident.lower_end)
    canvas.paint(canvas.rect(Y(0.49), Y(0.58), cx - 0.92 * bw, cx + 0.92 * bw), ident.lower_colour)
    if ident.lower_type == "skirt":
        canvas.paint(canvas.trapezoid(Y(0.49), end, cx, 0.92 * bw, 1.3 * bw), ident.lower_colour)
    else:
        for leg in legs:
            canvas.paint(leg & (canvas.yy < end), ident.lower_colour)
    for c in (cx - sep, cx + sep):
        canvas.paint(canvas.ellipse(Y(0.965), c + 0.15 * lw, 0.035 * u, 1.25 * lw), ident.shoe_colour)

    # Arms (sleeves and hands), then the torso with its pattern.
    for side in (-1, 1):
        x0 = cx + side * bw
        arm = canvas.rect(Y(0.16), Y(0.50), min(x0, x0 + side * aw), max(x0, x0 + side * aw))
        sleeve_end = Y(0.48) if ident.long_sleeves else Y(0.27)
        canvas.paint(arm, skin)
        canvas.paint(arm & (canvas.yy < sleeve_end), ident.upper_colour)
        canvas.paint(canvas.ellipse(Y(0.515), x0 + side * aw / 2, 0.025 * u, aw * 0.6), skin)
    torso = canvas.trapezoid(torso_top, torso_bottom, cx, bw, 0.9 * bw)
    torso |= canvas.ellipse(torso_top + 0.03 * u, cx, 0.04 * u, bw)  # rounded shoulders
    canvas.paint(torso, ident.upper_colour)
    canvas.paint(torso & _pattern_mask(canvas, ident, torso_top, cx, u, front), ident.pattern_colour)

    # Bags over the torso.
    if ident.bag == "back":
        if front:  # straps
            for side in (-1, 1):
                canvas.paint(canvas.rect(Y(0.15), Y(0.36), cx + side * 0.6 * bw - 0.02 * u,
                                         cx + side * 0.6 * bw + 0.02 * u), ident.bag_colour)
        else:
            canvas.paint(canvas.rect(Y(0.18), Y(0.44), cx - 0.8 * bw, cx + 0.8 * bw), ident.bag_colour)
    elif ident.bag == "side":
        canvas.paint(canvas.band((Y(0.17), cx - 0.6 * bw), (Y(0.42), cx + bw), 0.015 * u + 0.5),
                     ident.bag_colour * 0.85)
        canvas.paint(canvas.rect(Y(0.40), Y(0.56), cx + bw - 0.02 * u, cx + bw + 0.1 * u),
                     ident.bag_colour)

    # Neck, head, hair. From the back the head shows hair only.
    canvas.paint(canvas.rect(Y(0.12), Y(0.17), cx - 0.025 * u, cx + 0.025 * u), skin)
    head = canvas.ellipse(Y(0.075), cx, 0.068 * u, 0.052 * u)
    canvas.paint(head, skin if front else ident.hair_colour)
    if front:
        hair_bottom = Y([0.07, 0.10, 0.11][ident.hair_length])
        canvas.paint(canvas.ellipse(Y(0.06), cx, 0.052 * u, 0.058 * u) & (canvas.yy < hair_bottom),
                     ident.hair_colour)
        if ident.hair_length > 0:  # hair at the sides of the face
            sides = head & (np.abs(canvas.xx - cx) > 0.032 * u) & (canvas.yy < Y(0.11 + 0.04 * ident.hair_length))
            canvas.paint(sides, ident.hair_colour)

    # Soft body shading so the figure is not flat.
    shade = 1.0 - 0.22 * np.clip(((canvas.xx - cx) / (1.6 * bw)) ** 2, 0, 1)
    canvas.img[canvas.person] *= shade[canvas.person][:, None]


def _occlude(canvas: _Canvas, cam: Camera, rng: np.random.Generator):
    """An object in front of the person: a low obstacle or something at one side."""
    h, w = canvas.img.shape[:2]
    colour = np.clip(cam.palette[rng.integers(len(cam.palette))] * rng.uniform(0.5, 1.4), 0, 255)
    if rng.random() < 0.5:
        top = h * rng.uniform(0.65, 0.85)
        mask = canvas.rect(top, h + 1, -1, w + 1)
    else:
        width = w * rng.uniform(0.2, 0.35)
        x0 = -1 if rng.random() < 0.5 else w - width
        mask = canvas.rect(h * rng.uniform(-0.1, 0.5), h + 1, x0, x0 + width + 1)
    texture = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 1.5) * 40
    canvas.img[mask] = colour + texture[mask][:, None]


def render(ident: Identity, cam: Camera, height: int, width: int,
           rng: np.random.Generator) -> np.ndarray:
    """One uint8 [height, width, 3] image of `ident` seen by `cam`."""
    canvas = _Canvas(height, width)
    _background(canvas, cam, rng)
    draw_person(canvas, ident, cam, rng)
    img = canvas.img
    if rng.random() < 0.5:  # facing the other way
        img = img[:, ::-1]
        canvas.img = np.ascontiguousarray(img)
    if rng.random() < cam.occlusion:
        _occlude(canvas, cam, rng)
    img = np.clip(canvas.img / 255.0, 0, 1)
    gain = cam.gain * rng.uniform(0.9, 1.1)
    img = np.clip(img * cam.cast * gain, 0, 1) ** cam.gamma
    sigma = cam.blur * height / 128.0
    if sigma > 0.05:
        img = ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0))
    img = img * 255.0 + rng.standard_normal(img.shape).astype(np.float32) * cam.noise
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def encode(img: np.ndarray, image_format: str = "jpeg", quality: int = 92) -> bytes:
    buf = io.BytesIO()
    if image_format == "png":
        Image.fromarray(img).save(buf, format="PNG")
    else:
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# The data set


@dataclasses.dataclass
class Record:
    split: str
    pid: int
    camid: int
    index: int  # image number of this (pid, camera), or the distractor number
    filename: str


def plan(cfg: SyntheticConfig) -> list[Record]:
    """Which images exist, in which split. Pids 1..N (train first); distractors have pid 0."""
    cfg.validate()
    rng = np.random.default_rng([cfg.seed, 1])
    records = []
    n_total = cfg.num_train_ids + cfg.num_test_ids
    ext = "jpg" if cfg.image_format == "jpeg" else "png"
    max_cams = min(cfg.max_cameras_per_id, cfg.num_cameras)
    min_cams = min(cfg.min_cameras_per_id, max_cams)
    for pid in range(1, n_total + 1):
        n_cams = int(rng.integers(min_cams, max_cams + 1))
        cams = [int(c) + 1 for c in rng.choice(cfg.num_cameras, n_cams, replace=False)]
        if pid <= cfg.num_train_ids:
            for cam in sorted(cams):
                for k in range(cfg.images_per_camera):
                    records.append(Record("train", pid, cam, k, f"train/{pid:04d}_c{cam}_{k:03d}.{ext}"))
            continue
        query_cam = cams[0]  # a random one of the identity's cameras
        for k in range(cfg.queries_per_id):
            records.append(Record("query", pid, query_cam, k, f"query/{pid:04d}_c{query_cam}_{k:03d}.{ext}"))
        if rng.random() < cfg.same_camera_gallery_prob:
            k = cfg.queries_per_id
            records.append(Record("gallery", pid, query_cam, k,
                                  f"gallery/{pid:04d}_c{query_cam}_{k:03d}.{ext}"))
        for cam in sorted(cams[1:]):
            for k in range(cfg.images_per_camera):
                records.append(Record("gallery", pid, cam, k, f"gallery/{pid:04d}_c{cam}_{k:03d}.{ext}"))
    for j in range(cfg.num_distractors):
        cam = int(rng.integers(cfg.num_cameras)) + 1
        records.append(Record("gallery", DISTRACTOR_PID, cam, j,
                              f"gallery/0000_c{cam}_{j:03d}.{ext}"))
    return records


class World:
    """The identities and cameras of a config (deterministic in the seed)."""

    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg
        self.identities = make_identities(np.random.default_rng([cfg.seed, 2]),
                                          cfg.num_train_ids + cfg.num_test_ids)
        self.cameras = make_cameras(np.random.default_rng([cfg.seed, 3]), cfg.num_cameras)

    def image(self, rec: Record) -> np.ndarray:
        cfg = self.cfg
        if rec.pid == DISTRACTOR_PID:
            ident = random_identity(np.random.default_rng([cfg.seed, 4, rec.index]))
            rng = np.random.default_rng([cfg.seed, 5, rec.index])
        else:
            ident = self.identities[rec.pid - 1]
            # Query and gallery images of one (pid, camera) never share a seed.
            rng = np.random.default_rng([cfg.seed, 6, rec.pid, rec.camid, rec.index,
                                         SPLITS.index(rec.split)])
        return render(ident, self.cameras[rec.camid - 1], cfg.height, cfg.width, rng)

    def encoded(self, rec: Record) -> bytes:
        return encode(self.image(rec), self.cfg.image_format, self.cfg.jpeg_quality)


def generate(cfg: SyntheticConfig) -> tuple[ImageTable, dict[str, np.ndarray]]:
    """The whole data set in memory, without TFDS: (table, {split: row indices})."""
    world = World(cfg)
    records = plan(cfg)
    table = ImageTable([world.encoded(r) for r in records], [r.pid for r in records],
                       [r.camid for r in records], [r.filename for r in records])
    splits = np.array([r.split for r in records])
    return table, {s: np.flatnonzero(splits == s).astype(np.int64) for s in SPLITS}


class Synthetic(tfds.core.GeneratorBasedBuilder):
    """Procedural synthetic pedestrians; see the module docstring."""

    name = "synthetic_reid"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [DEFAULT, TINY]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__.split("\n\n")[0],
            features=base.reid_features(),
            supervised_keys=None,
            metadata=tfds.core.MetadataDict(sizes=self.builder_config.sizes()),
        )

    def _split_generators(self, dl_manager):
        world = World(self.builder_config)
        records = plan(self.builder_config)
        return {s: self._generate_examples(world, [r for r in records if r.split == s])
                for s in SPLITS}

    def _generate_examples(self, world, records):
        for rec in records:
            yield rec.filename, base.example(world.encoded(rec), rec.pid, rec.camid, rec.filename)


def load(protocol: str | None = None, data_dir: str | None = None,
         manual_dir: str | None = None, config: str | SyntheticConfig = "default",
         **options) -> ReidData:
    """Builds (once, cached under data_dir) and reads the synthetic data set.

    `config` is "default", "tiny" or a SyntheticConfig; other keyword options replace config
    fields (num_train_ids, num_test_ids, num_cameras, images_per_camera, height, width, seed, ...).
    """
    protocol = protocol or "default"
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} for synthetic; known: {sorted(PROTOCOLS)}")
    cfg = make_config(config, **options)
    builder = base.prepare(Synthetic, data_dir=data_dir, manual_dir=manual_dir, config=cfg)
    table, rows = base.read_table(builder, list(SPLITS))
    trial = Trial(name="default", train=rows["train"], query=rows["query"], gallery=rows["gallery"])
    return ReidData(name="synthetic", protocol=protocol, table=table, trials=[trial],
                    same_camera_junk=True,
                    info={"config": cfg.name, **cfg.sizes()})


# ----------------------------------------------------------------------------------------------
# Pictures


def contact_sheet(table: ImageTable, rows, path: str | pathlib.Path | None = None,
                  max_per_row: int = 8, cell_height: int = 128, cell_width: int = 64,
                  gap: int = 2) -> np.ndarray:
    """A PNG grid of images: one sheet row per identity, its images sorted by camera.

    `rows` is a number of identities (the first ones by pid, distractors excluded) or the table
    row indices to show. Each cell is resized to cell_height x cell_width. Returns the uint8
    sheet and writes it to `path` if given.
    """
    if np.isscalar(rows):
        pids = np.unique(table.pids[table.pids > 0])[: int(rows)]
        chosen = np.flatnonzero(np.isin(table.pids, pids))
    else:
        chosen = np.asarray(rows, dtype=np.int64)
    groups: dict[int, list[int]] = {}
    for r in chosen:
        groups.setdefault(int(table.pids[r]), []).append(int(r))
    lines = []
    for pid in sorted(groups):
        members = sorted(groups[pid], key=lambda r: (table.camids[r], table.filenames[r]))
        lines.append(members[:max_per_row])
    if not lines:
        raise ValueError("contact_sheet got no images")
    n_cols = max(len(line) for line in lines)
    sheet = np.full((len(lines) * (cell_height + gap) + gap, n_cols * (cell_width + gap) + gap, 3),
                    255, np.uint8)
    for i, line in enumerate(lines):
        for j, r in enumerate(line):
            img = Image.open(io.BytesIO(table.images[r])).convert("RGB")
            img = img.resize((cell_width, cell_height), Image.BILINEAR)
            y, x = gap + i * (cell_height + gap), gap + j * (cell_width + gap)
            sheet[y:y + cell_height, x:x + cell_width] = np.asarray(img)
    if path is not None:
        Image.fromarray(sheet).save(path, format="PNG")
    return sheet
