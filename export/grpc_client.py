#!/usr/bin/env python3
"""Example gRPC client (PredictionService) for the JLML embedding served by TF Serving or by
`python -m jlml_tf.serve`. Needs grpcio, tensorflow-serving-api (install it with --no-deps
beside tensorflow or tensorflow-cpu) and NumPy.

    python export/grpc_client.py --port 8500 --model jlml a.jpg b.jpg
"""
import argparse
import sys

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc


def embed_files(stub, model, files, version=None, timeout=60.0):
    """Encoded files -> embeddings, decoded and resized by the serving_bytes signature."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_bytes"
    if version:
        request.model_spec.version.value = version
    data = [open(f, "rb").read() for f in files]
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(data, dtype=tf.string))
    response = stub.Predict(request, timeout=timeout)
    return tf.make_ndarray(response.outputs["embeddings"]), response.model_spec.version.value


def embed_pixels(stub, model, pixels, version=None, timeout=60.0):
    """uint8 RGB pixels [N, H, W, 3] -> embeddings via serving_default."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version:
        request.model_spec.version.value = version
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.asarray(pixels, np.uint8)))
    response = stub.Predict(request, timeout=timeout)
    return tf.make_ndarray(response.outputs["embeddings"]), response.model_spec.version.value


def signatures(stub, model, timeout=30.0):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = model
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=timeout)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sig_map)
    return sig_map.signature_def


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="*", help="image files (JPEG/PNG)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8500)
    p.add_argument("--model", default="jlml")
    p.add_argument("--version", type=int, default=None)
    args = p.parse_args(argv)
    with grpc.insecure_channel(f"{args.host}:{args.port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            sigs = signatures(stub, args.model)
            print("signatures:", ", ".join(sorted(sigs)))
            if not args.images:
                return 0
            emb, version = embed_files(stub, args.model, args.images, args.version)
        except grpc.RpcError as e:
            raise SystemExit(f"gRPC {e.code().name}: {e.details()}")
    print(f"version {version}: {emb.shape[0]} embeddings of dimension {emb.shape[1]}")
    sims = emb @ emb.T  # L2-normalised: the dot product is the cosine similarity
    for name, row in zip(args.images, sims):
        print(name, " ".join(f"{v:.3f}" for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
