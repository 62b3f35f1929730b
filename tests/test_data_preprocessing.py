"""jlml_tf/data/preprocessing.py: decoding image files the way every tool reads them."""
import io

import numpy as np
import pytest
from PIL import Image

from jlml_tf.data import preprocessing


def bmp_bytes(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(out, format="BMP")
    return out.getvalue()


def test_a_bmp_with_bytes_after_its_pixels_reads_as_its_pixels(tmp_path):
    """VIPeR's release BMPs carry 2 bytes after the pixel data, which TensorFlow's decoder
    rejects; search, embed and export read such files with those bytes dropped."""
    pixels = np.random.default_rng(0).integers(0, 256, (128, 48, 3), dtype=np.uint8)
    path = tmp_path / "000_45.bmp"
    path.write_bytes(bmp_bytes(pixels) + b"\x00\x00")
    np.testing.assert_array_equal(preprocessing.load_image(path, 128, 48), pixels)
    np.testing.assert_array_equal(preprocessing.load_image(bmp_bytes(pixels), 128, 48), pixels)
    truncated = tmp_path / "short.bmp"
    truncated.write_bytes(bmp_bytes(pixels)[:-100])
    with pytest.raises(preprocessing.UnreadableImageError,
                       match="short.bmp: a BMP whose size does not match its header"):
        preprocessing.load_image(truncated, 128, 48)
