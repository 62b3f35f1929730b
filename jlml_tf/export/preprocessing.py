"""The one definition of preprocessing shared by every exported format.

Clients send RGB pixels (uint8, [N, H, W, 3]); the model normalises inside. Encoded images
(JPEG/PNG/BMP/GIF) are decoded to 3-channel RGB, resized bilinearly to the model's H x W
(aspect ratio not kept, as in training), rounded and clipped back to uint8. The SavedModel's
`serving_bytes` signature runs exactly these ops in its graph, and every host-side decoder
(TFLite, `jlml_tf.embed`, the parity report) calls the same function, so all formats see the
same pixels. The decoding itself is `jlml_tf.data.pipeline.decode_and_resize`, the one
training and evaluation use.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from jlml_tf.data import pipeline

RESIZE_METHOD = "bilinear"
COLOR_ORDER = "RGB"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def decode_and_resize(encoded: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """One encoded image (scalar string tensor) -> uint8 [height, width, 3] RGB.

    The training/evaluation pipeline's own decoder, so served pixels are the trained ones.
    """
    return tf.cast(pipeline.decode_and_resize(encoded, height, width), tf.uint8)


def decode_batch(encoded: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """A 1-D string tensor of encoded images -> uint8 [N, height, width, 3]."""
    return tf.map_fn(lambda e: decode_and_resize(e, height, width), encoded,
                     fn_output_signature=tf.TensorSpec([height, width, 3], tf.uint8))


class UnreadableImageError(ValueError):
    """An image file or byte string that cannot be decoded."""


def load_image(source: str | os.PathLike | bytes, height: int, width: int) -> np.ndarray:
    """A file path or encoded bytes -> uint8 [height, width, 3]; UnreadableImageError if not an image."""
    name = "<bytes>"
    if isinstance(source, (bytes, np.bytes_)):
        data = bytes(source)
    else:
        name = os.fspath(source)
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as e:
            raise UnreadableImageError(f"{name}: cannot read the file ({e.strerror})") from e
    if not data:
        raise UnreadableImageError(f"{name}: empty file, not an image")
    try:
        return decode_and_resize(tf.constant(data), height, width).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        raise UnreadableImageError(f"{name}: not a decodable JPEG/PNG/BMP/GIF image "
                                   f"({e.message.splitlines()[0]})") from e


def load_images(sources, height: int, width: int) -> np.ndarray:
    """Several file paths or encoded byte strings -> uint8 [N, height, width, 3]."""
    images = [load_image(s, height, width) for s in sources]
    if not images:
        return np.zeros((0, height, width, 3), np.uint8)
    return np.stack(images)


def list_images(paths) -> list[str]:
    """Files and folders (searched recursively for image extensions) -> sorted file list.

    A file named explicitly is kept whatever its extension; a missing path is an error.
    """
    files = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            found = []
            for root, dirs, names in os.walk(p):
                dirs.sort()
                found += [os.path.join(root, n) for n in names
                          if n.lower().endswith(IMAGE_EXTENSIONS)]
            files += sorted(found)
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image file or folder")
    return files
