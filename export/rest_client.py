#!/usr/bin/env python3
"""Example REST client for the JLML embedding served by TF Serving (or `python -m jlml_tf.serve`).

Standard library only. Sends image files to the `serving_bytes` signature (the server decodes
and resizes), or with --pixels sends uint8 RGB pixel arrays to `serving_default` (needs NumPy
and Pillow, or TensorFlow to decode JPEGs bit for bit as the model does; `resize_like_model`
resizes exactly as the model's own preprocessing does), and prints the embeddings' cosine
similarities.

    python export/rest_client.py --port 8501 --model jlml a.jpg b.jpg c.jpg
    python export/rest_client.py --port 8501 --pixels a.jpg b.jpg --output=emb.json
    python export/rest_client.py --metadata
"""
import argparse
import base64
import json
import sys
import urllib.error
import urllib.request


def call(url, body=None, timeout=60.0):
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:  # TF Serving errors are {"error": "..."}
        raise SystemExit(f"HTTP {e.code}: {json.loads(e.read()).get('error')}")


def embed_files(base, files, version=None):
    """Encoded files -> embeddings via the serving_bytes signature (row format, b64)."""
    instances = []
    for f in files:
        with open(f, "rb") as fh:
            instances.append({"b64": base64.b64encode(fh.read()).decode("ascii")})
    url = base + (f"/versions/{version}" if version else "") + ":predict"
    return call(url, {"signature_name": "serving_bytes", "instances": instances})["predictions"]


def resize_like_model(rgb, height, width):
    """uint8 RGB [h, w, 3] -> uint8 [height, width, 3] exactly as the model's preprocessing
    (`jlml_tf.data.preprocessing`, i.e. TensorFlow 2's `tf.image.resize(method="bilinear")`
    on float32 pixels, then rounded half to even and clipped): bilinear interpolation with
    half-pixel centres and no antialiasing, computed in float32.

    Pillow's `resize(..., BILINEAR)` is not this: it antialiases when it shrinks (a wider
    filter), which moves embeddings (cosine 0.95-0.99 to the bytes path on real crops).
    """
    import numpy as np

    img = np.asarray(rgb, np.float32)
    in_h, in_w = img.shape[:2]

    def axis(out_size, in_size):
        scale = np.float32(in_size) / np.float32(out_size)
        x = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
        floor = np.floor(x)
        lower = np.maximum(floor, 0).astype(np.int64)
        upper = np.minimum(np.ceil(x), in_size - 1).astype(np.int64)
        return lower, upper, (x - floor).astype(np.float32)

    y0, y1, ly = axis(height, in_h)
    x0, x1, lx = axis(width, in_w)
    lx, ly = lx[None, :, None], ly[:, None, None]
    top_left, top_right = img[y0][:, x0], img[y0][:, x1]
    bottom_left, bottom_right = img[y1][:, x0], img[y1][:, x1]
    top = top_left + (top_right - top_left) * lx
    bottom = bottom_left + (bottom_right - bottom_left) * lx
    out = top + (bottom - top) * ly
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def decode_rgb(path, decoder="auto"):
    """An image file -> uint8 RGB [h, w, 3].

    "tensorflow" decodes as the model does (tf.io.decode_image, channels=3: its JPEG decoder
    uses the fast integer DCT); "pillow" uses Pillow, whose JPEG decoder uses the accurate
    integer DCT, so JPEG pixels differ by a few levels (PNG, BMP, GIF are identical), which
    can move embeddings noticeably (cosine down to 0.94 to the bytes path on real GRID JPEGs
    with a weak model); "auto" takes TensorFlow when it is installed, else Pillow (with a
    warning for JPEG files).
    """
    import numpy as np

    if decoder in ("auto", "tensorflow"):
        try:
            import tensorflow as tf
        except ImportError:
            if decoder == "tensorflow":
                raise
        else:
            with open(path, "rb") as f:
                data = f.read()
            return tf.io.decode_image(data, channels=3, dtype=tf.uint8,
                                      expand_animations=False).numpy()
    from PIL import Image

    with Image.open(path) as img:
        if img.format == "JPEG" and decoder == "auto" and not _warned:
            _warned.append(True)
            print("warning: TensorFlow is not installed, so Pillow decodes the JPEGs: their "
                  "pixels differ from the model's decoder by a few levels and the embeddings "
                  "move; for the model's exact pixels send the files (no --pixels) or install "
                  "TensorFlow", file=sys.stderr)
        return np.asarray(img.convert("RGB"))


_warned = []


def load_pixels(path, height, width, decoder="auto"):
    """An image file -> uint8 RGB [height, width, 3], as the model's `serving_bytes` sees it."""
    return resize_like_model(decode_rgb(path, decoder), height, width)


def embed_pixels(base, files, height, width, version=None, decoder="auto"):
    """Decoded uint8 RGB pixels -> embeddings via serving_default (columnar format)."""
    import numpy as np

    pixels = [load_pixels(f, height, width, decoder) for f in files]
    url = base + (f"/versions/{version}" if version else "") + ":predict"
    return call(url, {"inputs": np.stack(pixels).tolist()})["outputs"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="*", help="image files (JPEG/PNG)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--model", default="jlml")
    p.add_argument("--version", type=int, default=None, help="a specific version (default newest)")
    p.add_argument("--pixels", action="store_true", help="send pixels to serving_default")
    p.add_argument("--decoder", choices=("auto", "tensorflow", "pillow"), default="auto",
                   help="--pixels: who decodes (auto: TensorFlow if installed, as the model "
                   "does; Pillow's JPEG pixels differ by a few levels)")
    p.add_argument("--metadata", action="store_true", help="print status and signatures")
    p.add_argument("--output", default=None, help="also write the embeddings to this JSON file")
    args = p.parse_args(argv)
    base = f"http://{args.host}:{args.port}/v1/models/{args.model}"
    status = call(base)
    print("status:", json.dumps(status["model_version_status"]))
    meta = call(base + "/metadata")
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    if args.metadata:
        print(json.dumps(meta, indent=1))
    if not args.images:
        return 0
    if args.pixels:
        dims = sigs["serving_default"]["inputs"]["images"]["tensor_shape"]["dim"]
        emb = embed_pixels(base, args.images, int(dims[1]["size"]), int(dims[2]["size"]),
                           args.version, args.decoder)
    else:
        emb = embed_files(base, args.images, args.version)
    print(f"{len(emb)} embeddings of dimension {len(emb[0])}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"files": args.images, "embeddings": emb}, f)
    for i, a in enumerate(emb):  # embeddings are L2-normalised: the dot product is the cosine
        print(args.images[i], " ".join(f"{sum(x * y for x, y in zip(a, b)):.3f}" for b in emb))
    return 0


if __name__ == "__main__":
    sys.exit(main())
