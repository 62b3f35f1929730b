"""The one definition of preprocessing shared by every exported format.

Clients send RGB pixels (uint8, [N, H, W, 3]); the model normalises inside. Encoded images
(JPEG/PNG/BMP/GIF) are decoded to 3-channel RGB, resized bilinearly to the model's H x W
(aspect ratio not kept, as in training), rounded and clipped back to uint8. The SavedModel's
`serving_bytes` signature runs exactly these ops in its graph, and every host-side decoder
(TFLite, `jlml_tf.embed`, the parity report) calls the same function, so all formats see the
same pixels. The decoding itself is `jlml_tf.data.pipeline.decode_and_resize`, the one
training and evaluation use. One exception: a BMP with bytes after its pixel data (VIPeR's
release files) is read here with those bytes dropped, while TensorFlow's decoder, and so the
`serving_bytes` signature, rejects it.
"""
from __future__ import annotations

import io
import os
import re

import numpy as np
import tensorflow as tf

from jlml_tf.config import IMAGE_EXTENSIONS
from jlml_tf.data import pipeline

RESIZE_METHOD = "bilinear"
COLOR_ORDER = "RGB"


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


BMP_SIZE_MISMATCH = "a BMP whose size does not match its header"
# TensorFlow's decode errors, as the user should read them (matched on the start of its text).
_DECODE_ERRORS = (
    ("jpeg::Uncompress failed", "corrupt or truncated JPEG data"),
    ("Unknown image file format", "not an image (expected JPEG, PNG, BMP, GIF or WebP data)"),
    ("Invalid PNG", "corrupt or truncated PNG data"),
    ("Input size should match", BMP_SIZE_MISMATCH),
    ("Failed to decode", "corrupt image data"),
)


def tf_error_text(error: BaseException) -> str:
    """The first meaningful line of a TensorFlow error, without the graph and op decorations
    ("Graph execution error:", "{{function_node __wrapped__...}}", "[Op:...]", "[[{{node ...}}]]",
    "Detected at node ...")."""
    text = getattr(error, "message", None) or str(error)
    lines = []
    for line in text.strip().splitlines():
        line = line.strip()
        if not line or line.startswith(("Graph execution error", "Detected at node",
                                         "Stack trace", "File \"")):
            continue
        line = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", line)
        line = re.sub(r"\s*\[\[\{\{node [^\]]*\]\]", "", line)
        line = re.sub(r"\s*\[Op:[^\]]*\].*$", "", line)
        line = re.sub(r"^\(\d+\) [A-Za-z]+:\s*", "", line).strip()
        if line and not line.startswith(("[[", "{{", "name:")):
            lines.append(line)
    return lines[0] if lines else type(error).__name__


def decode_error_reason(error: BaseException) -> str:
    """A TensorFlow decode error -> why the data is not an image, in plain words."""
    text = tf_error_text(error)
    for start, reason in _DECODE_ERRORS:
        if start in text:
            return reason
    return text


# Person crops: standing people are taller than wide. Real crops of the data sets here range
# from 16 x 39 pixels (CAVIAR4REID) up, with height / width 1.47 (GRID) to 4.34 (CUHK03).
MIN_HEIGHT, MIN_WIDTH = 24, 12
ASPECT_RANGE = (1.2, 6.0)  # height / width
ODD_IMAGE_POLICIES = ("warn", "refuse", "accept")


def odd_image_reason(height: int, width: int) -> str | None:
    """Why an image of this size is unlikely to be a person crop, or None if it looks like one.

    Tiny images carry no appearance to match (a 1 x 1 PNG is upscaled to a flat colour), and
    wide or square ones (a whole camera frame, a texture) are squeezed into the model's portrait
    input: either way the embedding is meaningless yet lands somewhere in the gallery, possibly
    first."""
    if height < MIN_HEIGHT or width < MIN_WIDTH:
        return (f"{width}x{height} px (width x height) is smaller than the minimum "
                f"{MIN_WIDTH}x{MIN_HEIGHT} of a person crop")
    ratio = height / width
    if not ASPECT_RANGE[0] <= ratio <= ASPECT_RANGE[1]:
        shape = "wider than a standing person" if ratio < ASPECT_RANGE[0] else "very narrow"
        return (f"{width}x{height} px has height/width {ratio:.2f}, {shape} (person crops are "
                f"{ASPECT_RANGE[0]:g} to {ASPECT_RANGE[1]:g}); a whole frame or not a person?")
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) read from the image's header (Pillow, no decoding), None if unknown."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
        return int(height), int(width)
    except Exception:  # noqa: BLE001 - unknown to Pillow: TensorFlow decides below
        return None


def _read(source: str | os.PathLike | bytes) -> tuple[bytes, str]:
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
    return data, name


def _decode(data: bytes, name: str, height: int, width: int) -> np.ndarray:
    from jlml_tf import tf_quiet

    try:
        with tf_quiet.native_stderr_silenced():  # libjpeg's own complaints, in the commands
            return decode_and_resize(tf.constant(data), height, width).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        reason, excess = decode_error_reason(e), _bmp_excess_bytes(e)
        if reason != BMP_SIZE_MISMATCH or excess <= 0:  # a short BMP is truncated: an error
            raise UnreadableImageError(f"{name}: {reason}") from e
    # bytes after a BMP's pixel data (most of VIPeR's release files carry 2), which TF rejects
    return _decode(data[:-excess], name, height, width)


def _bmp_excess_bytes(error: BaseException) -> int:
    """How many bytes a BMP holds beyond its header's size, from TF's "... they differ by N"
    (negative: fewer); 0 when the message does not say."""
    found = re.search(r"differ by (-?\d+)", tf_error_text(error))
    return int(found.group(1)) if found else 0


def load_image(source: str | os.PathLike | bytes, height: int, width: int) -> np.ndarray:
    """A file path or encoded bytes -> uint8 [height, width, 3]; UnreadableImageError if not an image."""
    data, name = _read(source)
    return _decode(data, name, height, width)


def load_image_checked(source: str | os.PathLike | bytes, height: int, width: int
                       ) -> tuple[np.ndarray, str | None]:
    """load_image, and why the image is an odd person crop (`odd_image_reason`) or None."""
    data, name = _read(source)
    pixels = _decode(data, name, height, width)
    size = image_size(data)
    return pixels, (odd_image_reason(*size) if size else None)


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
