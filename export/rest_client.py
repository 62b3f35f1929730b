#!/usr/bin/env python3
"""Example REST client for the JLML embedding served by TF Serving (or `python -m jlml_tf.serve`).

Standard library only. Sends image files to the `serving_bytes` signature (the server decodes
and resizes), or with --pixels sends uint8 RGB pixel arrays to `serving_default` (needs NumPy
and Pillow; resizes like the model card says), and prints the embeddings' cosine similarities.

    python export/rest_client.py --port 8501 --model jlml a.jpg b.jpg c.jpg
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


def embed_pixels(base, files, height, width, version=None):
    """Decoded uint8 RGB pixels -> embeddings via serving_default (columnar format)."""
    import numpy as np
    from PIL import Image

    pixels = [np.asarray(Image.open(f).convert("RGB").resize((width, height), Image.BILINEAR))
              for f in files]
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
    p.add_argument("--metadata", action="store_true", help="print status and signatures")
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
                           args.version)
    else:
        emb = embed_files(base, args.images, args.version)
    print(f"{len(emb)} embeddings of dimension {len(emb[0])}")
    for i, a in enumerate(emb):  # embeddings are L2-normalised: the dot product is the cosine
        print(args.images[i], " ".join(f"{sum(x * y for x, y in zip(a, b)):.3f}" for b in emb))
    return 0


if __name__ == "__main__":
    sys.exit(main())
