"""tf.data input pipelines: decoding, seeded shuffling and samplers, augmentation, evaluation.

Reproducibility: everything random about one training epoch is a function of (seed, epoch)
alone. The order of images (a permutation, or the P x K identity-balanced batches) is computed
in NumPy from `np.random.default_rng([seed, epoch])`; each augmentation draws from stateless
TF random ops keyed by (seed, epoch, position of the element in the epoch). A run resumed in
the middle of an epoch (`dataset.skip(n)`) therefore sees exactly the batches it would have.

Pixels: images are decoded to RGB, resized bilinearly to the model's input size and rounded to
whole values, float32 in [0, 255] (the model normalises internally). The rounding matches the
exported models' preprocessing (`jlml_tf.data.preprocessing`), so training, evaluation and
serving see the same pixels, and lets decoded images be cached as uint8 without changing them.

Datasets yield `(images float32 [B, H, W, 3], labels int32 [B])` for training and
`images float32 [B, H, W, 3]` for evaluation, with static batch shapes when the remainder is
dropped, ready for `strategy.experimental_distribute_dataset` (global batches).
"""
from __future__ import annotations

import dataclasses
import math
import weakref

import numpy as np
import tensorflow as tf

from jlml_tf.config import MIN_CAMERA_IMAGES, PIXEL_MEAN
from jlml_tf.data.types import ImageTable

SAMPLERS = ("random", "pk", "camera", "camera_pairs")
# batches of one-camera groups, for batch norm per group (ModelConfig.batch_norm_group_size)
CAMERA_SAMPLERS = ("camera", "camera_pairs")
IDENTITY_SAMPLERS = ("pk", "camera_pairs")  # draw identities, whatever their image count
ERASING_FILLS = ("random", "mean", "zero")
_ERASING_TRIES = 10


# ----------------------------------------------------------------------------------------------
# Decoding


def decode_and_resize(encoded: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Encoded JPEG/PNG bytes (scalar string) -> float32 [height, width, 3] in [0, 255].

    Bilinear resize (aspect ratio not kept), rounded to whole pixel values.
    """
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    resized = tf.image.resize(tf.cast(image, tf.float32), (height, width), method="bilinear")
    return tf.clip_by_value(tf.round(resized), 0.0, 255.0)


def _encoded_tensor(images: np.ndarray) -> tf.Tensor:
    with tf.device("/cpu:0"):
        return tf.constant(list(images), dtype=tf.string) if len(images) else tf.zeros([0], tf.string)


def decode_all(table: ImageTable, height: int, width: int, batch_size: int = 256) -> np.ndarray:
    """Every image of `table` decoded and resized: uint8 [N, height, width, 3] (exact, since the
    pipeline's pixels are whole numbers)."""
    out = np.zeros((len(table), height, width, 3), np.uint8)
    if not len(table):
        return out
    ds = tf.data.Dataset.from_tensor_slices(_encoded_tensor(table.images))
    ds = ds.map(lambda e: tf.cast(decode_and_resize(e, height, width), tf.uint8),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    start = 0
    for batch in ds.batch(batch_size).as_numpy_iterator():
        out[start:start + len(batch)] = batch
        start += len(batch)
    return out


class DecodedCache:
    """Decoded, resized images of tables kept in memory (uint8), one entry per (table, size).

    An entry lives as long as the table's `images` array does, so calling the training
    pipeline every epoch with the same table decodes only once.
    """

    def __init__(self):
        self._entries: dict[tuple[int, int, int], tf.Tensor] = {}

    def get(self, table: ImageTable, height: int, width: int) -> tf.Tensor:
        key = (id(table.images), int(height), int(width))
        if key not in self._entries:
            decoded = decode_all(table, height, width)
            with tf.device("/cpu:0"):
                self._entries[key] = tf.constant(decoded)
            weakref.finalize(table.images, self._entries.pop, key, None)
        return self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


DECODED_CACHE = DecodedCache()


# ----------------------------------------------------------------------------------------------
# Augmentation


@dataclasses.dataclass
class AugmentConfig:
    """Training augmentation; every random choice is keyed by (seed, epoch, element)."""

    flip: bool = True
    flip_probability: float = 0.5
    pad: int = 10  # pad-and-random-crop padding in pixels; 0 turns it off
    pad_mode: str = "constant"  # "constant" (zeros), "reflect" or "symmetric"
    erasing_probability: float = 0.5  # random erasing (Zhong et al. 2020); 0 turns it off
    erasing_area: tuple[float, float] = (0.02, 0.4)  # fraction of the image area
    erasing_aspect: tuple[float, float] = (0.3, 1 / 0.3)  # height / width, log-uniform
    erasing_fill: str = "random"  # "random" (uniform 0..255 per pixel), "mean" or "zero"
    # Colour jitter strength j: brightness +-j (of full scale), contrast and saturation x[1-j, 1+j],
    # hue +-j/4 of the colour circle, on every image; 0 turns it off. Cameras of one data set
    # differ mostly in illumination and colour response (VIPeR, GRID).
    color_jitter: float = 0.0

    def __post_init__(self):
        self.erasing_area = tuple(float(v) for v in self.erasing_area)
        self.erasing_aspect = tuple(float(v) for v in self.erasing_aspect)
        if not 0.0 <= self.flip_probability <= 1.0:
            raise ValueError(f"AugmentConfig.flip_probability={self.flip_probability} not in [0, 1]")
        if self.pad < 0:
            raise ValueError(f"AugmentConfig.pad={self.pad} must be >= 0")
        if self.pad_mode not in ("constant", "reflect", "symmetric"):
            raise ValueError(f"AugmentConfig.pad_mode={self.pad_mode!r}")
        if not 0.0 <= self.erasing_probability <= 1.0:
            raise ValueError(f"AugmentConfig.erasing_probability={self.erasing_probability} "
                             "not in [0, 1]")
        lo, hi = self.erasing_area
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"AugmentConfig.erasing_area={self.erasing_area}: need 0 < lo <= hi < 1")
        lo, hi = self.erasing_aspect
        if not 0.0 < lo <= hi:
            raise ValueError(f"AugmentConfig.erasing_aspect={self.erasing_aspect}: need 0 < lo <= hi")
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"AugmentConfig.color_jitter={self.color_jitter} not in [0, 1)")
        if self.erasing_fill not in ERASING_FILLS:
            raise ValueError(f"AugmentConfig.erasing_fill={self.erasing_fill!r}; "
                             f"expected one of {ERASING_FILLS}")

    @property
    def active(self) -> bool:
        return (self.flip and self.flip_probability > 0) or self.pad > 0 \
            or self.erasing_probability > 0 or self.color_jitter > 0


NO_AUGMENT = AugmentConfig(flip=False, pad=0, erasing_probability=0.0)


def element_seed(seed: int, epoch: int, index) -> tf.Tensor:
    """The stateless seed (shape [2], int64) of element `index` of an epoch."""
    base = tf.constant([seed, epoch], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


def random_flip(image: tf.Tensor, seed: tf.Tensor, probability: float = 0.5) -> tf.Tensor:
    """Mirrors left-right with `probability`."""
    do = tf.random.stateless_uniform([], seed) < probability
    return tf.where(do, tf.reverse(image, axis=[1]), image)


def random_pad_crop(image: tf.Tensor, seed: tf.Tensor, pad: int, mode: str = "constant") -> tf.Tensor:
    """Pads `pad` pixels on every side and crops a random window of the original size."""
    if pad <= 0:
        return image
    height, width, channels = image.shape
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode=mode.upper())
    offset = tf.random.stateless_uniform([2], seed, 0, 2 * pad + 1, dtype=tf.int32)
    crop = tf.slice(padded, [offset[0], offset[1], 0], [height, width, channels])
    return tf.ensure_shape(crop, image.shape)


def random_erasing(image: tf.Tensor, seed: tf.Tensor, probability: float = 0.5,
                   area: tuple[float, float] = (0.02, 0.4),
                   aspect: tuple[float, float] = (0.3, 1 / 0.3), fill: str = "random") -> tf.Tensor:
    """Random erasing (Zhong et al., AAAI 2020): with `probability`, one rectangle whose area is
    a uniform fraction in `area` of the image and whose height/width ratio is log-uniform in
    `aspect` is filled with random values, the ImageNet mean or zeros. Up to 10 (area, aspect)
    draws are tried until the rectangle fits; if none fits the image is unchanged."""
    height, width, channels = image.shape
    seeds = tf.random.experimental.stateless_split(seed, 5)
    erase = tf.random.stateless_uniform([], seeds[0]) < probability
    target = tf.random.stateless_uniform([_ERASING_TRIES], seeds[1], area[0], area[1]) * (height * width)
    log_ratio = tf.random.stateless_uniform([_ERASING_TRIES], seeds[2], math.log(aspect[0]),
                                            math.log(aspect[1]) + 1e-12)
    ratio = tf.exp(log_ratio)
    h = tf.cast(tf.round(tf.sqrt(target * ratio)), tf.int32)
    w = tf.cast(tf.round(tf.sqrt(target / ratio)), tf.int32)
    fits = (h >= 1) & (w >= 1) & (h < height) & (w < width)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    eh, ew = h[first], w[first]
    u = tf.random.stateless_uniform([2], seeds[3])
    y0 = tf.minimum(tf.cast(u[0] * tf.cast(height - eh + 1, tf.float32), tf.int32), height - eh)
    x0 = tf.minimum(tf.cast(u[1] * tf.cast(width - ew + 1, tf.float32), tf.int32), width - ew)
    rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
    inside = (rows >= y0) & (rows < y0 + eh) & (cols >= x0) & (cols < x0 + ew)
    inside = inside & erase & tf.reduce_any(fits)
    if fill == "random":
        values = tf.round(tf.random.stateless_uniform([height, width, channels], seeds[4], 0.0, 255.0))
    elif fill == "mean":
        values = tf.broadcast_to(tf.constant(PIXEL_MEAN[:channels], image.dtype), image.shape)
    else:
        values = tf.zeros_like(image)
    return tf.where(inside[..., None], tf.cast(values, image.dtype), image)


def color_jitter(image: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
    """Random brightness (+-strength), contrast and saturation (x[1 - strength, 1 + strength])
    and hue (+-strength / 4), in that order, with tf.image's stateless ops; pixels in [0, 255]."""
    if strength <= 0:
        return image
    seeds = tf.random.experimental.stateless_split(seed, 4)
    low, high = 1.0 - strength, 1.0 + strength
    x = image / 255.0
    x = tf.clip_by_value(tf.image.stateless_random_brightness(x, strength, seeds[0]), 0.0, 1.0)
    x = tf.image.stateless_random_contrast(x, low, high, seeds[1])
    x = tf.image.stateless_random_saturation(tf.clip_by_value(x, 0.0, 1.0), low, high, seeds[2])
    x = tf.image.stateless_random_hue(tf.clip_by_value(x, 0.0, 1.0), strength / 4, seeds[3])
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def augment_image(image: tf.Tensor, seed: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """Colour jitter, flip, pad-and-crop, then random erasing, each with its own sub-seed of
    `seed` (the first three sub-seeds are those of the runs before colour jitter existed)."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    if cfg.color_jitter > 0:
        image = color_jitter(image, seeds[3], cfg.color_jitter)
    if cfg.flip and cfg.flip_probability > 0:
        image = random_flip(image, seeds[0], cfg.flip_probability)
    if cfg.pad > 0:
        image = random_pad_crop(image, seeds[1], cfg.pad, cfg.pad_mode)
    if cfg.erasing_probability > 0:
        image = random_erasing(image, seeds[2], cfg.erasing_probability, cfg.erasing_area,
                               cfg.erasing_aspect, cfg.erasing_fill)
    return image


# ----------------------------------------------------------------------------------------------
# Epoch order


def steps_per_epoch(num_examples: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Batches in one epoch of `num_examples` images (the same for both samplers)."""
    if drop_remainder:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def epoch_order(labels: np.ndarray, batch_size: int, seed: int, epoch: int,
                sampler: str = "random", images_per_identity: int = 4,
                drop_remainder: bool = True, cameras: np.ndarray | None = None,
                cameras_per_batch: int = 1) -> np.ndarray:
    """Row indices (into `labels`) of one epoch, in the order they are batched.

    "random": a permutation from default_rng([seed, epoch]).
    "pk": `steps_per_epoch` batches, each of P = batch_size / K distinct identities with
    K = images_per_identity images each. Identities are visited in shuffled rounds so each
    appears about equally often; an identity's images are drawn without replacement from a
    shuffled pool, reshuffled when fewer than K are left (an identity with fewer than K images
    fills its K by drawing some twice).
    "camera": `steps_per_epoch` batches, each of one camera's images (`cameras[i]`, the camera
    of row i), so every batch-norm layer trains on one camera's statistics, as it is
    calibrated at test time (camera_bn; Zhuang et al., ECCV 2020). With `cameras_per_batch`
    G > 1, each batch is G consecutive groups of batch_size / G images, each of one camera
    (drawn independently, so two groups may share a camera), for batch norm that normalises
    each group on its own (ModelConfig.batch_norm_group_size); with drop_remainder=False the
    last batch may hold fewer than G groups.
    "camera_pairs": the camera sampler's G >= 2 groups, of G distinct cameras that have seen
    the same P = batch_size / G identities, each group one image of each identity in that
    camera (see `_camera_pair_batches`): every image's match from another camera is in its
    batch, as a query's is in the gallery at test time. Every batch is whole (with
    drop_remainder=False the last one too).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, epoch])
    if sampler in CAMERA_SAMPLERS:
        if cameras is None or len(cameras) != len(labels):
            raise ValueError(f"the {sampler} sampler needs the camera of every training image")
        if cameras_per_batch < 1 or batch_size % cameras_per_batch:
            raise ValueError(f"--cameras_per_batch={cameras_per_batch} must divide "
                             f"--batch_size={batch_size}")
        problem = sampler_problem(sampler, cameras_per_batch)
        if problem:
            raise ValueError(problem)
        group = batch_size // cameras_per_batch
        if sampler == "camera_pairs":
            steps = steps_per_epoch(len(labels), batch_size, drop_remainder)
            return _camera_pair_batches(labels, np.asarray(cameras), cameras_per_batch, group,
                                        steps, rng)
        groups = _camera_batches(np.asarray(cameras), group, rng, drop_remainder)
        return groups[:steps_per_epoch(len(labels), batch_size, drop_remainder) * batch_size]
    if sampler == "random":
        order = rng.permutation(len(labels))
        if drop_remainder:
            order = order[:steps_per_epoch(len(labels), batch_size) * batch_size]
        return order.astype(np.int64)
    if sampler != "pk":
        raise ValueError(f"sampler={sampler!r}; expected one of {SAMPLERS}")
    k = int(images_per_identity)
    if k < 1 or batch_size % k:
        raise ValueError(f"the P x K sampler needs batch_size ({batch_size}) to be a multiple of "
                         f"images_per_identity ({k})")
    p = batch_size // k
    identities = np.unique(labels)
    if p > len(identities):
        raise ValueError(f"the P x K sampler needs P = {p} identities per batch but the "
                         f"training set has {len(identities)}")
    members = {int(c): np.flatnonzero(labels == c) for c in identities}
    pools: dict[int, list[int]] = {c: [] for c in members}
    queue: list[int] = []
    order = []
    for _ in range(steps_per_epoch(len(labels), batch_size)):
        chosen: list[int] = []
        while len(chosen) < p:
            pick = next((j for j, c in enumerate(queue) if c not in chosen), None)
            if pick is None:
                queue.extend(int(c) for c in rng.permutation(identities))
                continue
            chosen.append(queue.pop(pick))
        for c in chosen:
            if len(pools[c]) < k:  # leftovers are dropped, so a batch never repeats an image
                pool = rng.permutation(members[c])  # unless the identity has fewer than K
                if len(pool) < k:
                    pool = np.concatenate([pool, rng.choice(members[c], k - len(pool))])
                pools[c] = [int(i) for i in pool]
            order.extend(pools[c].pop() for _ in range(k))
    return np.asarray(order, dtype=np.int64)


def _camera_batches(cameras: np.ndarray, batch_size: int, rng: np.random.Generator,
                    drop_remainder: bool = True) -> np.ndarray:
    """steps_per_epoch(len(cameras), batch_size, drop_remainder) batches of one camera each, in
    random order.

    Each camera gives floor(n / batch_size) batches of a permutation of its images. The batches
    still missing go to cameras with at least min(batch_size, MIN_CAMERA_IMAGES) images: first
    to those with images left over, drawn anew each epoch without replacement and in
    proportion to the leftover (the batch is the leftover topped up with the camera's images
    drawn again); if still short (only when smaller cameras are left out), to batches drawn at
    random from those cameras. A smaller camera never gets a batch: its batch-norm statistics
    would be those of a few images repeated."""
    steps = steps_per_epoch(len(cameras), batch_size, drop_remainder)
    groups = [np.flatnonzero(cameras == c) for c in np.unique(cameras)]
    sizes = np.array([len(g) for g in groups])
    eligible = sizes >= min(batch_size, MIN_CAMERA_IMAGES)
    whole = sizes // batch_size
    leftover = np.where(eligible, sizes - whole * batch_size, 0)
    missing = max(steps - int(whole.sum()), 0)
    if missing and not eligible.any():
        raise ValueError(f"the camera sampler needs a camera with at least "
                         f"{min(batch_size, MIN_CAMERA_IMAGES)} images; the largest has "
                         f"{sizes.max()}")
    from_leftovers = min(missing, int(np.count_nonzero(leftover)))
    extra = np.zeros(len(groups), bool)
    if from_leftovers:
        extra[rng.choice(len(groups), from_leftovers, replace=False,
                         p=leftover / leftover.sum())] = True
    batches = []
    for g, w, e in zip(groups, whole, extra):
        order = rng.permutation(g)
        batches += [order[b * batch_size:(b + 1) * batch_size] for b in range(w)]
        if e:
            rest = order[w * batch_size:]
            batches.append(np.concatenate([rest, rng.choice(g, batch_size - len(rest))]))
    weights = np.where(eligible, sizes, 0) / sizes[eligible].sum() if missing else None
    for c in rng.choice(len(groups), missing - from_leftovers, p=weights):
        batches.append(rng.choice(groups[c], batch_size, replace=sizes[c] < batch_size))
    picked = [batches[i] for i in rng.permutation(len(batches))[:steps]]
    return np.concatenate(picked).astype(np.int64) if picked else np.zeros(0, np.int64)


def sampler_problem(sampler: str, cameras_per_batch: int) -> str | None:
    """Why `sampler` cannot build batches of `cameras_per_batch` camera groups, or None."""
    if sampler == "camera_pairs" and cameras_per_batch < 2:
        return (f"the camera_pairs sampler needs --cameras_per_batch of at least 2 (one group "
                f"per camera), not {cameras_per_batch}")
    return None


def _camera_pair_batches(labels: np.ndarray, cameras: np.ndarray, num_cameras: int,
                         identities: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """`steps` batches of `num_cameras` groups of `identities` images: each batch draws a set
    of distinct cameras, with probability in proportion to the identities all of them have
    seen, then that many of those identities, visited in shuffled rounds per camera set as the
    P x K sampler does (so an identity seen by more cameras is in more sets, and drawn more
    often); each group holds one image (drawn at random) of each identity from one camera of
    the set, the groups in random order and the identities in the same order in every group."""
    seen: dict[tuple[int, int], list[int]] = {}  # (camera, label) -> rows
    for row, key in enumerate(zip(cameras.tolist(), labels.tolist())):
        seen.setdefault(key, []).append(row)
    by_camera: dict[int, set[int]] = {}
    for camera, label in seen:
        by_camera.setdefault(camera, set()).add(label)
    sets = _cameras_sharing(by_camera, num_cameras, identities)
    if not sets:
        raise ValueError(
            f"the camera_pairs sampler needs {num_cameras} cameras (--cameras_per_batch) that "
            f"have all seen {identities} identities (--batch_size / --cameras_per_batch); no "
            f"{num_cameras} of the {len(by_camera)} cameras here have")
    sizes = np.array([len(shared) for _, shared in sets], float)
    queues: dict[int, list[int]] = {}
    order = []
    for k in rng.choice(len(sets), steps, p=sizes / sizes.sum()):
        combo, shared = sets[k]
        left = queues.get(k, [])
        if len(left) < identities:  # a new round; the ones left over open the batch
            fresh, opened = rng.permutation(shared).tolist(), set(left)
            taken = [c for c in fresh if c not in opened][:identities - len(left)]
            chosen, drawn = left + taken, set(taken)
            queues[k] = [c for c in fresh if c not in drawn]
        else:
            chosen, queues[k] = left[:identities], left[identities:]
        for g in rng.permutation(num_cameras):
            order.extend(int(rng.choice(seen[(combo[g], label)])) for label in chosen)
    return np.asarray(order, dtype=np.int64)


def _cameras_sharing(by_camera: dict[int, set[int]], num_cameras: int,
                     identities: int) -> list[tuple[tuple[int, ...], list[int]]]:
    """Every set of `num_cameras` cameras (ascending) that has all seen at least `identities`
    identities, with those identities (sorted). Depth first, a branch dropped once its
    cameras share too few, so many cameras or large sets stay cheap."""
    cameras = sorted(by_camera)
    found = []

    def grow(start, combo, shared):
        if len(combo) == num_cameras:
            found.append((combo, sorted(shared)))
            return
        for i in range(start, len(cameras)):
            both = by_camera[cameras[i]] if not combo else shared & by_camera[cameras[i]]
            if len(both) >= identities:
                grow(i + 1, combo + (cameras[i],), both)

    grow(0, (), set())
    return found


# ----------------------------------------------------------------------------------------------
# Datasets


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    # Data sharding: the sources are in-memory tensors, not files.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def _check_size(height: int, width: int, batch_size: int) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"image size {height}x{width} must be positive")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be positive")


def train_dataset(table: ImageTable, labels: np.ndarray, height: int, width: int,
                  batch_size: int, seed: int, epoch: int,
                  augment: AugmentConfig | None = None, drop_remainder: bool = True,
                  sampler: str = "random", images_per_identity: int = 4,
                  cache_decoded: bool | DecodedCache = False,
                  cameras_per_batch: int = 1) -> tf.data.Dataset:
    """One epoch of training batches `(images float32 [B, H, W, 3], labels int32 [B])`.

    `labels[i]` is the class of `table` row i. The order depends only on (seed, epoch) and the
    sampler (a SAMPLERS name, the camera ones by `table.camids`, see `epoch_order`);
    augmentation is keyed by (seed, epoch, position in the epoch). `cache_decoded=True` decodes
    the table once into the module's `DECODED_CACHE` (uint8 in memory, kept across epochs; for
    small data sets); a `DecodedCache` instance uses that cache instead.
    """
    _check_size(height, width, batch_size)
    labels = np.asarray(labels)
    if len(labels) != len(table):
        raise ValueError(f"{len(labels)} labels for a table of {len(table)} images")
    if len(table) == 0:
        raise ValueError("train_dataset got an empty table")
    augment = NO_AUGMENT if augment is None else augment
    order = epoch_order(labels, batch_size, seed, epoch, sampler, images_per_identity,
                        drop_remainder, cameras=table.camids,
                        cameras_per_batch=cameras_per_batch)
    positions = np.arange(len(order), dtype=np.int64)
    batch_labels = labels[order].astype(np.int32)

    # (An empty DecodedCache is falsy: test its type before its truth.)
    cache = cache_decoded if isinstance(cache_decoded, DecodedCache) else \
        DECODED_CACHE if cache_decoded else None
    if cache is not None:
        decoded = cache.get(table, height, width)
        ds = tf.data.Dataset.from_tensor_slices((positions, order, batch_labels))

        def load(position, row, label):
            return position, tf.cast(tf.gather(decoded, row), tf.float32), label
    else:
        ds = tf.data.Dataset.from_tensor_slices((positions, _encoded_tensor(table.images[order]),
                                                 batch_labels))

        def load(position, encoded, label):
            return position, decode_and_resize(encoded, height, width), label

    def prepare(position, item, label):
        position, image, label = load(position, item, label)
        if augment.active:
            image = augment_image(image, element_seed(seed, epoch, position), augment)
        return image, label

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def eval_dataset(table: ImageTable, rows: np.ndarray | None, height: int, width: int,
                 batch_size: int, cache: bool = False) -> tf.data.Dataset:
    """Images of `table` rows (all rows if None), in order: float32 [B, H, W, 3] batches, the
    last one possibly smaller. No augmentation. `cache=True` keeps the decoded images in memory
    after the first full pass, for evaluating the same dataset object repeatedly."""
    _check_size(height, width, batch_size)
    rows = np.arange(len(table)) if rows is None else np.asarray(rows, dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices(_encoded_tensor(table.images[rows]))
    ds = ds.map(lambda e: tf.cast(decode_and_resize(e, height, width), tf.uint8),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()  # uint8: a quarter of the memory of float32, and exact
    ds = ds.map(lambda image: tf.cast(image, tf.float32))
    ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
