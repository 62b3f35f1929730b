"""The TF Serving gRPC API: PredictionService (Predict, GetModelMetadata) and ModelService
(GetModelStatus), on grpcio with the tensorflow-serving-api messages. Classify, Regress and
MultiInference answer UNIMPLEMENTED (the model has predict signatures only)."""
from __future__ import annotations

import logging
from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from jlml_tf.serving import core
from jlml_tf.serving.registry import ModelRegistry

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _version(model_spec) -> int | None:
    if model_spec.WhichOneof("version_choice") == "version_label":
        raise core.invalid("version labels are not supported; give a version number")
    return model_spec.version.value if model_spec.HasField("version") else None


def _abort(context, err: core.ServingError, method: str = ""):
    # the server's log says what went wrong too, not only the client
    log.warning("gRPC %s from %s: %s %s", method, context.peer(), err.code.name, err.message)
    context.abort(err.code, err.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, registry: ModelRegistry, max_batch: int = core.DEFAULT_MAX_BATCH):
        self.registry = registry
        self.max_batch = max_batch

    def Predict(self, request, context):  # noqa: N802 - gRPC naming
        try:
            spec = request.model_spec
            servable = self.registry.get(spec.name, _version(spec))
            signature = servable.signature(spec.signature_name)
            inputs = {}
            for name, proto in request.inputs.items():
                want = signature.inputs.get(name)
                if want is not None and proto.dtype != want.dtype.as_datatype_enum:
                    got = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "DT_INVALID"
                    hint = core.bytes_hint(servable.signatures, signature.name) \
                        if proto.dtype == tf.string.as_datatype_enum else ""
                    raise core.invalid(f"input '{name}': expects {want.dtype.name} but {got} is "
                                       f"provided{hint}")
                try:
                    inputs[name] = tf.make_ndarray(proto)
                except Exception as e:  # noqa: BLE001 - malformed TensorProto
                    raise core.invalid(f"input '{name}': malformed TensorProto ({e})") from e
            outputs = core.run_signature(signature, inputs, self.max_batch,
                                         list(request.output_filter) or None)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature.name
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response
        except core.ServingError as e:
            _abort(context, e, "Predict")
        except Exception as e:  # noqa: BLE001
            log.exception("Predict failed")
            _abort(context, core.ServingError(grpc.StatusCode.INTERNAL, f"internal error: {e}"),
                   "Predict")

    def GetModelMetadata(self, request, context):  # noqa: N802
        try:
            fields = list(request.metadata_field)
            if not fields:
                raise core.invalid("GetModelMetadataRequest must specify at least one "
                                   "metadata_field")
            unsupported = [f for f in fields if f != "signature_def"]
            if unsupported:
                raise core.invalid(f"Metadata field(s) {unsupported} not supported; only "
                                   "\"signature_def\"")
            servable = self.registry.get(request.model_spec.name, _version(request.model_spec))
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.metadata["signature_def"].Pack(servable.signature_def_map)
            return response
        except core.ServingError as e:
            _abort(context, e)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def GetModelStatus(self, request, context):  # noqa: N802
        try:
            return self.registry.status(request.model_spec.name, _version(request.model_spec))
        except core.ServingError as e:
            _abort(context, e)


class GrpcServer:
    def __init__(self, registry: ModelRegistry, host: str = "127.0.0.1", port: int = 8500,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_batch: int = core.DEFAULT_MAX_BATCH, max_workers: int = 16):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                             thread_name_prefix="grpc"),
                                  options=[("grpc.max_receive_message_length", max_message_bytes),
                                           ("grpc.max_send_message_length", max_message_bytes),
                                           ("grpc.so_reuseport", 0)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(registry, max_batch), self.server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(registry),
                                                                  self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if not self.port:
            raise OSError(f"cannot bind the gRPC server to {host}:{port}")

    def start(self) -> "GrpcServer":
        self.server.start()
        return self

    def stop(self, grace: float = 1.0):
        self.server.stop(grace).wait()
