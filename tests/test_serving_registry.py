"""Version handling: new versions are picked up while serving, broken ones do not take over."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from jlml_tf.inference import run_dir as run_dir_lib
import run_fixtures as fixtures
from jlml_tf.export import saved_model
from jlml_tf.modeling import jlml
from jlml_tf.serving.server import ModelServer

X = np.random.default_rng(0).integers(0, 256, (2, 64, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two runs with different weights: the embedding models (with L2) to export as versions."""
    root = tmp_path_factory.mktemp("versions")
    out = []
    for seed in (0, 1):
        run = fixtures.make_run(root / f"run{seed}", seed=seed)
        out.append(run_dir_lib.load_run(run).embedding_model)
    return out


def get(u):
    try:
        with urllib.request.urlopen(u, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def post(u, body):
    req = urllib.request.Request(u, json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def available(rest):
    """The version the REST status reports AVAILABLE (None if none)."""
    status, body = get(rest)
    if status != 200:
        return None
    return next((v["version"] for v in body["model_version_status"]
                 if v["state"] == "AVAILABLE"), None)


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def grpc_predict(port, version=None):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "jlml"
        if version:
            req.model_spec.version.value = version
        req.inputs["images"].CopyFrom(tf.make_tensor_proto(X))
        resp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, timeout=60)
        return resp.model_spec.version.value, tf.make_ndarray(resp.outputs["embeddings"])


@pytest.mark.slow  # exports two versions while serving
def test_new_version_is_picked_up_and_broken_one_ignored(models, tmp_path):
    base = tmp_path / "jlml"
    saved_model.export_saved_model(models[0], base, version=1)
    want = [jlml.with_l2_normalization(m)(X.astype(np.float32)).numpy() for m in models]
    with ModelServer(base, rest_port=0, grpc_port=0, poll_seconds=0.2) as server:
        rest = f"http://127.0.0.1:{server.rest_port}/v1/models/jlml"
        status, body = post(rest + ":predict", {"instances": X.tolist()})
        np.testing.assert_allclose(body["predictions"], want[0], atol=1e-5)

        saved_model.export_saved_model(models[1], base, version=2)  # written while serving
        assert wait_for(lambda: available(rest) == "2")
        status, body = post(rest + ":predict", {"instances": X.tolist()})
        assert status == 200
        np.testing.assert_allclose(body["predictions"], want[1], atol=1e-5)
        version, got = grpc_predict(server.grpc_port)
        assert version == 2
        np.testing.assert_allclose(got, want[1], atol=1e-5)
        status, body = post(rest + "/versions/1:predict", {"instances": X.tolist()})
        assert status == 404 and "Specific(jlml, 1)" in body["error"]

        broken = base / "3"  # a half-copied or corrupt version must not replace version 2
        broken.mkdir()
        (broken / "saved_model.pb").write_bytes(b"corrupt")
        assert wait_for(lambda: any(v["version"] == "3" for v in
                                    get(rest)[1]["model_version_status"]))
        status, body = get(rest)
        states = {v["version"]: v for v in body["model_version_status"]}
        assert states["2"]["state"] == "AVAILABLE"
        assert states["3"]["state"] == "END" and states["3"]["status"]["error_message"]
        status, body = post(rest + ":predict", {"instances": X.tolist()})
        assert status == 200
        np.testing.assert_allclose(body["predictions"], want[1], atol=1e-5)


@pytest.mark.slow
def test_waits_for_a_first_version_and_falls_back_when_one_is_removed(models, tmp_path):
    base = tmp_path / "jlml"
    base.mkdir()
    with ModelServer(base, rest_port=0, grpc_port=None, poll_seconds=0.2) as server:
        rest = f"http://127.0.0.1:{server.rest_port}/v1/models/jlml"
        status, body = post(rest + ":predict", {"instances": X.tolist()})
        assert status == 404 and "no version loaded" in body["error"]
        saved_model.export_saved_model(models[0], base, version=4)
        saved_model.export_saved_model(models[1], base, version=5)
        assert wait_for(lambda: post(rest + ":predict", {"instances": X.tolist()})[0] == 200)
        assert wait_for(lambda: available(rest) == "5")
        import shutil

        shutil.rmtree(base / "5")  # the newest version is withdrawn: the previous one returns
        assert wait_for(lambda: available(rest) == "4")
        status, body = get(rest)  # the deleted version is forgotten, not reported as failed
        assert [v["version"] for v in body["model_version_status"]] == ["4"]
        status, body = post(rest + "/versions/4:predict", {"instances": X.tolist()})
        assert status == 200


def test_missing_base_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--model_base_path"):
        ModelServer(tmp_path / "nope")


def _fake_export(root):
    """EXPORT/jlml/1/saved_model.pb and EXPORT/jlml_v1/, as the export writes them."""
    (root / "jlml" / "1").mkdir(parents=True)
    (root / "jlml" / "1" / "saved_model.pb").write_bytes(b"graph")
    (root / "jlml_v1").mkdir()
    return root / "jlml"


def test_a_base_path_one_level_off_says_where_the_model_is(tmp_path):
    """Issue 13 item 6: pointing at the folder above the model waited forever ("no version
    yet") with no hint; pointing at a version folder likewise."""
    base = _fake_export(tmp_path / "export")
    with pytest.raises(ValueError, match=f"the model is one level down: --model_base_path={base}$"):
        ModelServer(tmp_path / "export")
    with pytest.raises(ValueError, match=f"is a SavedModel version folder.*"
                                         f"--model_base_path={base}$"):
        ModelServer(base / "1")
    (tmp_path / "empty").mkdir()  # no version yet: the server waits for the first one
    assert ModelServer(tmp_path / "empty", rest_port=0, grpc_port=None).model_name == "empty"


def test_a_port_in_use_is_a_bind_error_before_the_model_loads(tmp_path):
    import socket

    from jlml_tf.serving.server import BindError

    (tmp_path / "jlml").mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for kwargs, api in ((dict(rest_port=port, grpc_port=None), "REST"),
                            (dict(rest_port=None, grpc_port=port), "gRPC")):
            server = ModelServer(tmp_path / "jlml", poll_seconds=0, **kwargs)
            with pytest.raises(BindError, match=f"cannot serve the {api} API on 127.0.0.1:{port}"):
                server.start()
            assert server.rest is None and server.grpc is None


def _serve(*args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "jlml_tf.serve", *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.mark.slow
def test_serve_cli_errors_are_one_line_without_help_or_traceback(tmp_path):
    import socket

    base = _fake_export(tmp_path / "export")
    res = _serve(f"--model_base_path={tmp_path / 'missing'}")
    assert res.returncode == 2 and res.stderr.strip() == (
        f"error: --model_base_path={tmp_path / 'missing'}: no such directory (expected "
        "DIR/<model_name> holding version folders 1, 2, ...)")
    res = _serve(f"--model_base_path={tmp_path / 'export'}")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert f"one level down: --model_base_path={base}" in res.stderr
    (tmp_path / "jlml").mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = _serve(f"--model_base_path={tmp_path / 'jlml'}", f"--rest_port={port}",
                     "--grpc_port=-1")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(
        f"error: --rest_port={port}: cannot serve the REST API on 127.0.0.1:{port}")
    assert "I0000" not in res.stderr and "absl::InitializeLog" not in res.stderr


@pytest.mark.slow
def test_serve_cli(models, tmp_path):
    """python -m jlml_tf.serve on free ports; SIGTERM stops it cleanly."""
    base = tmp_path / "reid"
    saved_model.export_saved_model(models[0], base, version=1)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "jlml_tf.serve", f"--model_base_path={base}",
                             "--rest_port=0", "--grpc_port=0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        ports = {}
        for line in proc.stdout:
            m = re.match(r"(REST|gRPC) 127\.0\.0\.1:(\d+)", line)
            if m:
                ports[m.group(1)] = int(m.group(2))
            if len(ports) == 2:
                break
        assert set(ports) == {"REST", "gRPC"}, proc.stderr.read() if proc.poll() else ports
        status, body = get(f"http://127.0.0.1:{ports['REST']}/v1/models/reid")
        assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
