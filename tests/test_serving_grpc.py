"""The gRPC API of the local server (tensorflow-serving-api messages and stubs)."""
import concurrent.futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

import run_fixtures as fixtures
from jlml_tf.serving.server import ModelServer


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return fixtures.export_tiny(tmp_path_factory.mktemp("grpc") / "export")


@pytest.fixture
def channel(exported):
    base, _, _ = exported
    with ModelServer(base, rest_port=None, grpc_port=0, poll_seconds=0,
                     max_request_bytes=300_000) as server:
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
            yield ch
    assert server.grpc is None


def predict_request(x, signature="", name="jlml", version=None, key="images", dtype=None):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    req.inputs[key].CopyFrom(tf.make_tensor_proto(x, dtype=dtype))
    return req


def pixels(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 32, 3), dtype=np.uint8)


def test_predict_pixels_and_bytes(channel, exported):
    _, _, keras_model = exported
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    x = pixels(3)
    resp = stub.Predict(predict_request(x), timeout=60)
    got = tf.make_ndarray(resp.outputs["embeddings"])
    np.testing.assert_allclose(got, keras_model(x.astype(np.float32)).numpy(), atol=1e-5)
    assert resp.model_spec.name == "jlml" and resp.model_spec.version.value == 1
    assert resp.model_spec.signature_name == "serving_default"
    encoded = [tf.io.encode_png(i).numpy() for i in x]
    resp = stub.Predict(predict_request(encoded, "serving_bytes", version=1, key="image_bytes",
                                        dtype=tf.string), timeout=60)
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["embeddings"]), got, atol=1e-5)
    req = predict_request(x)
    req.output_filter.append("embeddings")
    assert list(stub.Predict(req, timeout=60).outputs) == ["embeddings"]


def test_metadata_and_status(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "jlml"
    req.metadata_field.append("signature_def")
    resp = stub.GetModelMetadata(req, timeout=30)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sig_map)
    assert set(sig_map.signature_def) == {"serving_default", "serving_bytes"}
    assert sig_map.signature_def["serving_default"].inputs["images"].dtype == tf.uint8.as_datatype_enum
    assert resp.model_spec.version.value == 1
    status_req = get_model_status_pb2.GetModelStatusRequest()
    status_req.model_spec.name = "jlml"
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_req, timeout=30)
    (entry,) = status.model_version_status
    assert entry.version == 1
    assert entry.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


def test_bad_requests_and_the_server_keeps_serving(channel, caplog):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    code = grpc.StatusCode
    png = tf.io.encode_png(pixels(1)[0]).numpy()
    no_field = get_model_metadata_pb2.GetModelMetadataRequest()
    no_field.model_spec.name = "jlml"
    filtered = predict_request(pixels(1))
    filtered.output_filter.append("logits")
    cases = [
        (stub.Predict, predict_request(pixels(1).astype(np.float32)), code.INVALID_ARGUMENT,
         "expects uint8"),
        (stub.Predict, predict_request(pixels(1)[:, :8]), code.INVALID_ARGUMENT, "shape"),
        (stub.Predict, predict_request(pixels(1), key="pixels"), code.INVALID_ARGUMENT,
         "missing"),
        (stub.Predict, predict_request(pixels(1), name="other"), code.NOT_FOUND, "other"),
        (stub.Predict, predict_request(pixels(1), version=9), code.NOT_FOUND, "9"),
        (stub.Predict, predict_request(pixels(1), "nope"), code.INVALID_ARGUMENT, "nope"),
        (stub.Predict, predict_request([png, b"no image"], "serving_bytes", key="image_bytes",
                                       dtype=tf.string), code.INVALID_ARGUMENT,
         "input 'image_bytes' item 1 (counting from 0) of the batch of 2: not an image"),
        (stub.Predict, predict_request([png, png[:60]], "serving_bytes", key="image_bytes",
                                       dtype=tf.string), code.INVALID_ARGUMENT,
         "item 1 (counting from 0) of the batch of 2: corrupt or truncated PNG data"),
        (stub.Predict, predict_request([b""], "serving_bytes", key="image_bytes",
                                       dtype=tf.string), code.INVALID_ARGUMENT,
         "item 0 (counting from 0) of the batch of 1: empty string, not an image"),
        (stub.Predict, predict_request(np.zeros([0], object), "serving_bytes",
                                       key="image_bytes", dtype=tf.string),
         code.INVALID_ARGUMENT, "the batch is empty"),
        (stub.Predict, predict_request(np.zeros([0, 64, 32, 3], np.uint8)),
         code.INVALID_ARGUMENT, "input 'images': the batch is empty"),
        (stub.Predict, predict_request([png], key="images", dtype=tf.string),
         code.INVALID_ARGUMENT, "go to the signature 'serving_bytes'"),
        (stub.Predict, filtered, code.INVALID_ARGUMENT, "output_filter"),
        (stub.Predict, predict_request(pixels(60)), code.RESOURCE_EXHAUSTED, ""),  # 369 kB > 300 kB
        (stub.GetModelMetadata, no_field, code.INVALID_ARGUMENT, "metadata_field"),
    ]
    caplog.set_level("WARNING", logger="jlml_tf.serving.grpc_server")
    for method, req, want, text in cases:
        caplog.clear()
        with pytest.raises(grpc.RpcError) as err:
            method(req, timeout=60)
        if want != code.RESOURCE_EXHAUSTED:  # (that one is refused by grpcio itself)
            # the server logs what it answered (issue 13 item 4)
            assert any(err.value.details() in r.getMessage() for r in caplog.records), \
                caplog.text
        assert err.value.code() == want, (want, err.value.details())
        assert text in (err.value.details() or ""), err.value.details()
        assert "Graph execution" not in err.value.details()
    resp = stub.Predict(predict_request(pixels(1)), timeout=60)
    assert tf.make_ndarray(resp.outputs["embeddings"]).shape == (1, 32)


def test_concurrent_clients_get_identical_results(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    req = predict_request(pixels(2, seed=3))

    def client(_):
        return [tf.make_ndarray(stub.Predict(req, timeout=60).outputs["embeddings"])
                for _ in range(10)]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = [r for batch in pool.map(client, range(4)) for r in batch]
    assert len(results) == 40
    assert all(np.array_equal(r, results[0]) for r in results)
