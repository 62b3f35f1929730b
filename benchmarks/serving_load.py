#!/usr/bin/env python3
"""Load test of the local model server on loopback: C concurrent clients x R requests each.

    python benchmarks/serving_load.py                                  # a tiny random model
    python benchmarks/serving_load.py --model_base_path=export_out/jlml --protocol=grpc
    python benchmarks/serving_load.py --target=127.0.0.1:8501         # an already running server

Prints throughput and latency p50/p95/p99 per protocol and the number of failed requests;
exits 1 if any request failed. Traffic goes to 127.0.0.1 only; the request loops are bounded.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import sys
import tempfile
import time
import urllib.error
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def rest_client(port, model, body, requests):
    url = f"http://127.0.0.1:{port}/v1/models/{model}:predict"
    data = json.dumps(body).encode()
    latencies, failures, outputs = [], 0, set()
    for _ in range(requests):
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data), timeout=60) as r:
                reply = r.read()
            outputs.add(hash(reply))
        except (urllib.error.URLError, OSError):
            failures += 1
        latencies.append(time.perf_counter() - start)
    return latencies, failures, outputs


def grpc_client(port, model, pixels, requests):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.inputs["images"].CopyFrom(tf.make_tensor_proto(pixels))
    latencies, failures, outputs = [], 0, set()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(requests):
            start = time.perf_counter()
            try:
                resp = stub.Predict(req, timeout=60)
                outputs.add(resp.outputs["embeddings"].SerializeToString())
            except grpc.RpcError:
                failures += 1
            latencies.append(time.perf_counter() - start)
    return latencies, failures, outputs


def run(protocol, port, model, pixels, clients, requests):
    if protocol == "rest":
        fn, arg = rest_client, {"instances": pixels.tolist()}
    else:
        fn, arg = grpc_client, pixels
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: fn(port, model, arg, requests), range(clients)))
    wall = time.perf_counter() - start
    lat = np.array([t for r in results for t in r[0]]) * 1000.0
    failures = sum(r[1] for r in results)
    distinct = set().union(*(r[2] for r in results))
    total = clients * requests
    print(f"{protocol:4s}: {total} requests ({clients} clients x {requests}), batch "
          f"{len(pixels)}: {total / wall:.1f} requests/s, latency ms p50 "
          f"{np.percentile(lat, 50):.1f} p95 {np.percentile(lat, 95):.1f} p99 "
          f"{np.percentile(lat, 99):.1f}; failures {failures}; distinct answers {len(distinct)}",
          flush=True)
    return failures + (len(distinct) > 1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_base_path", help="DIR/<model_name> (default: a tiny random model)")
    p.add_argument("--model_name", default=None)
    p.add_argument("--target", default=None, help="host:port of a running REST server "
                   "(127.0.0.1 only); else one is started in-process")
    p.add_argument("--protocol", choices=("rest", "grpc", "both"), default="both")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args(argv)
    if not (1 <= args.clients <= 64 and 1 <= args.requests <= 10000):
        p.error("--clients must be 1..64 and --requests 1..10000 (bounded load)")

    from jlml_tf.export import fixtures
    from jlml_tf.serving.server import ModelServer

    tmp = None
    base = args.model_base_path
    if base is None and args.target is None:
        tmp = tempfile.TemporaryDirectory()
        print("exporting a tiny random JLML model ...", flush=True)
        base, _, _ = fixtures.export_tiny(pathlib.Path(tmp.name) / "export")
    failures = 0
    try:
        if args.target:
            host, _, port = args.target.rpartition(":")
            if host not in ("127.0.0.1", "localhost"):
                p.error("--target must be on loopback (127.0.0.1)")
            model = args.model_name or "jlml"
            pixels = np.random.default_rng(0).integers(0, 256, (args.batch, 64, 32, 3), np.uint8)
            return int(run("rest", int(port), model, pixels, args.clients, args.requests) > 0)
        with ModelServer(base, args.model_name, rest_port=0, grpc_port=0, poll_seconds=0) as srv:
            servable = srv.registry.get(srv.model_name)
            shape = servable.signatures["serving_default"].inputs["images"].shape.as_list()
            pixels = np.random.default_rng(0).integers(0, 256, (args.batch, *shape[1:]), np.uint8)
            print(f"model {srv.model_name} version {servable.version}, input {shape[1:]}, "
                  f"{os.cpu_count()} CPUs", flush=True)
            for protocol in (("rest", "grpc") if args.protocol == "both" else (args.protocol,)):
                port = srv.rest_port if protocol == "rest" else srv.grpc_port
                failures += run(protocol, port, srv.model_name, pixels, args.clients,
                                args.requests)
    finally:
        if tmp is not None:
            tmp.cleanup()
    print("OK: zero failures" if not failures else f"FAILED: {failures}")
    return int(failures > 0)


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(pathlib.Path(__file__).resolve().parents[1]))
    sys.exit(main())
