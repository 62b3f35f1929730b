"""The REST API of the local server: TF Serving request/response forms and every bad request."""
import base64
import concurrent.futures
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

import run_fixtures as fixtures
from jlml_tf.serving.server import ModelServer


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return fixtures.export_tiny(tmp_path_factory.mktemp("rest") / "export")


@pytest.fixture
def server(exported):
    base, _, _ = exported
    with ModelServer(base, rest_port=0, grpc_port=None, poll_seconds=0,
                     max_request_bytes=400_000) as s:
        yield s
    assert s.rest is None  # stopped


def url(server, suffix=""):
    return f"http://127.0.0.1:{server.rest_port}/v1/models/jlml{suffix}"


def request(u, body=None, method=None, raw=None, headers=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(u, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def pixels(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 32, 3), dtype=np.uint8)


def test_status_and_metadata(server):
    status, body = request(url(server))
    assert status == 200
    assert body == {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {
        "error_code": "OK", "error_message": ""}}]}
    status, body = request(url(server, "/metadata"))
    assert status == 200 and body["model_spec"] == {"name": "jlml", "signature_name": "",
                                                     "version": "1"}
    sigs = body["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) == {"serving_default", "serving_bytes"}
    images = sigs["serving_default"]["inputs"]["images"]
    assert images["dtype"] == "DT_UINT8"
    assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "64", "32", "3"]
    assert sigs["serving_bytes"]["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert sigs["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_predict_row_columnar_and_bytes_agree_with_keras(server, exported):
    _, _, keras_model = exported
    x = pixels(3)
    want = keras_model(x.astype(np.float32)).numpy()
    status, rows = request(url(server, ":predict"), {"instances": x.tolist()})
    assert status == 200
    np.testing.assert_allclose(rows["predictions"], want, atol=1e-5)
    status, cols = request(url(server, "/versions/1:predict"),
                           {"signature_name": "serving_default", "inputs": {"images": x.tolist()}})
    assert status == 200
    np.testing.assert_allclose(cols["outputs"], want, atol=1e-5)
    b64 = [{"b64": base64.b64encode(tf.io.encode_png(i).numpy()).decode()} for i in x]
    status, enc = request(url(server, ":predict"),
                          {"signature_name": "serving_bytes", "instances": b64})
    assert status == 200
    np.testing.assert_allclose(enc["predictions"], want, atol=1e-5)
    status, enc = request(url(server, ":predict"),
                          {"signature_name": "serving_bytes", "inputs": {"image_bytes": b64}})
    assert status == 200 and np.array(enc["outputs"]).shape == (3, 32)


def test_bad_requests_get_errors_and_the_server_keeps_serving(server):
    good = {"instances": pixels(1).tolist()}
    bad_image = {"signature_name": "serving_bytes",
                 "instances": [{"b64": base64.b64encode(b"this is no image").decode()}]}
    cases = [  # (url suffix, body or raw bytes, status, text in the error)
        (":predict", b"{not json", 400, "JSON"),
        (":predict", b"[1, 2]", 400, "JSON object"),
        (":predict", {"instances": pixels(1)[:, :10].tolist()}, 400, "shape"),
        (":predict", {"instances": [[1, 2], [3]]}, 400, "ragged"),
        (":predict", {"instances": (pixels(1) + 0.5).tolist()}, 400, "whole numbers"),
        (":predict", {"instances": (pixels(1).astype(int) + 300).tolist()}, 400, "range"),
        (":predict", {"instances": [["a"] * 3]}, 400, "strings"),
        (":predict", {"instances": [True]}, 400, "booleans"),
        (":predict", bad_image, 400, "input 'image_bytes' item 0 (counting from 0) of the batch "
         "of 1: not an image (expected JPEG, PNG, BMP, GIF or WebP data)"),
        (":predict", {"signature_name": "serving_bytes", "instances": [{"b64": "%%%"}]}, 400,
         "base64"),
        (":predict", {"signature_name": "serving_bytes", "instances": [5]}, 400, "strings"),
        (":predict", {"signature_name": "nope", **good}, 400, "nope"),
        (":predict", {"instances": [], "inputs": []}, 400, "exactly one"),
        (":predict", {"inputs": {"pixels": []}}, 400, "unknown inputs"),
        (":predict", {"instances": pixels(1).tolist(), "extra": 1}, 400, "unknown request"),
        ("/versions/7:predict", good, 404, "Specific(jlml, 7)"),
        ("/versions/x:predict", good, 400, "version"),
        (":classify", good, 400, "not supported"),
        (":predict", b"x" * 500_000, 413, "exceeds"),
    ]
    for suffix, body, want_status, text in cases:
        raw = body if isinstance(body, bytes) else None
        status, reply = request(url(server, suffix), None if raw else body, raw=raw)
        assert status == want_status, (suffix, str(body)[:80], reply)
        assert set(reply) == {"error"} and text in reply["error"], (suffix, reply)
    status, reply = request(f"http://127.0.0.1:{server.rest_port}/v1/models/other:predict", good)
    assert status == 404 and "Latest(other)" in reply["error"]
    status, reply = request(f"http://127.0.0.1:{server.rest_port}/v1/models/other")
    assert status == 404 and "error" in reply
    status, reply = request(f"http://127.0.0.1:{server.rest_port}/v2/unknown")
    assert status == 404 and "Malformed request" in reply["error"]
    status, reply = request(url(server, ":predict"), good)  # still serving
    assert status == 200 and np.array(reply["predictions"]).shape == (1, 32)


def _b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def test_bad_images_and_empty_batches_say_what_is_wrong(server, caplog):
    """Issue 13 item 4: every kind of bad request used to get {"error": "Graph execution
    error:"}; the answer names the problem and the item of the batch, and the server logs it."""
    x = pixels(1)[0]
    png = tf.io.encode_png(x).numpy()
    jpeg = tf.io.encode_jpeg(x).numpy()
    garbled = b"\xff\xd8\xff\xe0garbage"
    item = "input 'image_bytes' item {} (counting from 0) of the batch of {}: {}"
    cases = [  # (body, text of the error)
        ({"signature_name": "serving_bytes", "instances": [_b64(png), _b64(b"plain text")]},
         item.format(1, 2, "not an image (expected JPEG, PNG, BMP, GIF or WebP data)")),
        ({"signature_name": "serving_bytes", "instances": [_b64(jpeg[:200]), _b64(png)]},
         item.format(0, 2, "corrupt or truncated JPEG data")),
        ({"signature_name": "serving_bytes", "inputs": {"image_bytes": [
            _b64(png), _b64(png), _b64(garbled)]}},
         item.format(2, 3, "corrupt or truncated JPEG data")),
        ({"signature_name": "serving_bytes", "instances": [_b64(png), _b64(b"")]},
         item.format(1, 2, "empty string, not an image")),
        ({"signature_name": "serving_bytes", "instances": [""]},
         item.format(0, 1, "empty string, not an image")),
        ({"signature_name": "serving_bytes", "instances": []},
         "input 'image_bytes': the batch is empty; send at least one encoded image"),
        ({"instances": []}, "input 'images': the batch is empty; send at least one image"),
        ({"inputs": {"images": []}}, "input 'images': the batch is empty"),
        # base64 images sent to the pixel signature: point at serving_bytes
        ({"instances": [_b64(png)]}, "\"signature_name\": \"serving_bytes\""),
        ({"inputs": {"images": [_b64(png)]}}, "go to the signature 'serving_bytes'"),
    ]
    for body, text in cases:
        caplog.clear()
        with caplog.at_level("WARNING", logger="jlml_tf.serving.rest"):
            status, reply = request(url(server, ":predict"), body)
        assert status == 400, (body, reply)
        assert text in reply["error"] and "Graph execution" not in reply["error"], reply
        assert any(text in r.getMessage() for r in caplog.records), caplog.text
    status, reply = request(url(server, ":predict"), {
        "signature_name": "serving_bytes", "instances": [_b64(png), _b64(jpeg)]})
    assert status == 200 and np.array(reply["predictions"]).shape == (2, 32)


def test_concurrent_clients_get_identical_results(server):
    x = pixels(2, seed=5).tolist()

    def client(_):
        return [request(url(server, ":predict"), {"instances": x}) for _ in range(10)]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = [r for batch in pool.map(client, range(4)) for r in batch]
    assert len(results) == 40
    assert all(status == 200 for status, _ in results)
    first = results[0][1]["predictions"]
    assert all(body["predictions"] == first for _, body in results)
