#!/usr/bin/env python3
"""Load test of the local model server on loopback: C concurrent clients x R requests each.

    python benchmarks/serving_load.py                                  # a tiny random model
    python benchmarks/serving_load.py --model_base_path=export_out/jlml --protocol=grpc
    python benchmarks/serving_load.py --target=127.0.0.1:8501         # an already running server

The request's input shape (and the model's version) comes from the model's metadata, so any
export works. Prints throughput and latency p50/p95/p99 per protocol over the successful
requests, and every kind of failure with its cause and count; with no successful request
there is no throughput to report. Exits 1 if any request failed. Traffic goes to 127.0.0.1
only; the request loops are bounded.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import pathlib
import sys
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np  # noqa: E402


def _http_cause(e: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(e.read()).get("error", "")
    except (ValueError, OSError, AttributeError):
        message = ""
    return f"HTTP {e.code}: {message or e.reason}"


def rest_client(port, model, body, requests):
    url = f"http://127.0.0.1:{port}/v1/models/{model}:predict"
    data = json.dumps(body).encode()
    latencies, failures, outputs = [], collections.Counter(), set()
    for _ in range(requests):
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data), timeout=60) as r:
                reply = r.read()
            outputs.add(hash(reply))
            latencies.append(time.perf_counter() - start)
        except urllib.error.HTTPError as e:
            failures[_http_cause(e)] += 1
        except (urllib.error.URLError, OSError) as e:
            failures[f"{type(e).__name__}: {getattr(e, 'reason', e)}"] += 1
    return latencies, failures, outputs


def grpc_client(port, model, pixels, requests):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.inputs["images"].CopyFrom(tf.make_tensor_proto(pixels))
    latencies, failures, outputs = [], collections.Counter(), set()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(requests):
            start = time.perf_counter()
            try:
                resp = stub.Predict(req, timeout=60)
                outputs.add(resp.outputs["embeddings"].SerializeToString())
                latencies.append(time.perf_counter() - start)
            except grpc.RpcError as e:
                failures[f"gRPC {e.code().name}: {e.details()}"] += 1
    return latencies, failures, outputs


def run(protocol, port, model, pixels, clients, requests):
    """One protocol's load; returns the number of failed requests (+1 if answers differ)."""
    if protocol == "rest":
        fn, arg = rest_client, {"instances": pixels.tolist()}
    else:
        fn, arg = grpc_client, pixels
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: fn(port, model, arg, requests), range(clients)))
    wall = time.perf_counter() - start
    lat = np.array([t for r in results for t in r[0]]) * 1000.0
    failures = sum((r[1] for r in results), collections.Counter())
    distinct = set().union(*(r[2] for r in results))
    total = clients * requests
    failed = sum(failures.values())
    head = (f"{protocol:4s}: {total} requests ({clients} clients x {requests}), batch "
            f"{len(pixels)}")
    if not len(lat):
        print(f"{head}: all {total} requests failed, so there is no throughput or latency to "
              "report", flush=True)
    else:
        print(f"{head}: {len(lat) / wall:.1f} successful requests/s, latency ms p50 "
              f"{np.percentile(lat, 50):.1f} p95 {np.percentile(lat, 95):.1f} p99 "
              f"{np.percentile(lat, 99):.1f}; failures {failed}; distinct answers "
              f"{len(distinct)}", flush=True)
    for cause, count in failures.most_common():
        print(f"      {count} failed: {cause}", flush=True)
    return failed + (len(distinct) > 1)


def target_input_shape(port: int, model: str) -> tuple[list[int], str]:
    """The `serving_default` pixel input's [H, W, C] and the served version, read from the
    model's REST metadata (GET /v1/models/<model>/metadata)."""
    url = f"http://127.0.0.1:{port}/v1/models/{model}/metadata"
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            meta = json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise SystemExit(f"error: {url}: {_http_cause(e)}")
    except (urllib.error.URLError, OSError) as e:
        raise SystemExit(f"error: {url}: {getattr(e, 'reason', e)} (is a server running there?)")
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    if "serving_default" not in sigs:
        raise SystemExit(f"error: model {model} has no serving_default signature ({sorted(sigs)})")
    inputs = sigs["serving_default"]["inputs"]
    (spec,) = inputs.values()
    if spec.get("dtype") != "DT_UINT8":
        raise SystemExit(f"error: serving_default takes {spec.get('dtype')}, not uint8 pixels")
    dims = [int(d["size"]) for d in spec["tensor_shape"]["dim"]]
    return dims[1:], str(meta["model_spec"].get("version", "?"))


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

    from jlml_tf import tf_quiet

    tf_quiet.quiet_tensorflow()
    import run_fixtures as fixtures  # tests/run_fixtures.py: runs with random weights
    from jlml_tf.serving.server import ModelServer

    tmp = None
    base = args.model_base_path
    if base is None and args.target is None:
        tmp = tempfile.TemporaryDirectory()
        print("exporting a tiny random JLML model ...", flush=True)
        work = pathlib.Path(tmp.name)
        # The paper's four stripes (the tests' tiny model has two), as BENCHMARKS.md measured.
        tiny_run = fixtures.make_run(work / "run", fixtures.tiny_config(num_stripes=4))
        base, _, _ = fixtures.export_tiny(work / "export", run_dir=tiny_run)
    failures = 0
    try:
        if args.target:
            host, _, port = args.target.rpartition(":")
            if host not in ("127.0.0.1", "localhost"):
                p.error("--target must be on loopback (127.0.0.1)")
            if not port.isdigit():
                p.error(f"--target={args.target}: expected HOST:PORT of the REST API")
            model = args.model_name or "jlml"
            shape, version = target_input_shape(int(port), model)
            print(f"model {model} version {version} at {args.target}, input {shape}", flush=True)
            pixels = np.random.default_rng(0).integers(0, 256, (args.batch, *shape), np.uint8)
            failures = run("rest", int(port), model, pixels, args.clients, args.requests)
            print("OK: zero failures" if not failures else f"FAILED: {failures}")
            return int(failures > 0)
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
    root = pathlib.Path(__file__).resolve().parents[1]
    sys.path[:0] = [os.fspath(root), os.fspath(root / "tests")]  # the package, run_fixtures
    sys.exit(main())
