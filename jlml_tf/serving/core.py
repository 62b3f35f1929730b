"""What the REST and gRPC front ends share: errors, signatures, validation and prediction."""
from __future__ import annotations

import dataclasses

import grpc
import numpy as np
import tensorflow as tf

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
DEFAULT_MAX_BATCH = 1024

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.INTERNAL: 500,
}


class ServingError(Exception):
    """A request error with a gRPC status code (and the HTTP status TF Serving maps it to)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclasses.dataclass
class Signature:
    name: str
    fn: object  # a ConcreteFunction taking keyword tensors, returning a dict of tensors
    inputs: dict[str, tf.TensorSpec]
    outputs: dict[str, tf.TensorSpec]


def signatures_of(loaded) -> dict[str, Signature]:
    out = {}
    for name, fn in loaded.signatures.items():
        inputs = dict(fn.structured_input_signature[1])
        outputs = dict(fn.structured_outputs)
        out[name] = Signature(name, fn, inputs, outputs)
    return out


def check_input(name: str, value: np.ndarray, spec: tf.TensorSpec) -> np.ndarray:
    """Shape and dtype of one input against its spec; returns the array in the spec's dtype."""
    shape = spec.shape
    if value.ndim >= 1 and value.shape[0] == 0 and (shape.rank is None or shape.rank >= 1):
        raise invalid(f"input '{name}': the batch is empty; send at least one "
                      + ("encoded image" if spec.dtype == tf.string else "image"))
    if shape.rank is not None:
        if value.ndim != shape.rank:
            raise invalid(f"input '{name}': expected rank {shape.rank} (shape "
                          f"{_shape_str(shape)}), got shape {list(value.shape)}")
        for i, (want, got) in enumerate(zip(shape.as_list(), value.shape)):
            if want is not None and want != got:
                raise invalid(f"input '{name}': expected shape {_shape_str(shape)}, got "
                              f"{list(value.shape)} (dimension {i} must be {want})")
    want = spec.dtype
    if want == tf.string:
        if value.dtype != object or not all(isinstance(v, bytes) for v in value.reshape(-1)):
            raise invalid(f"input '{name}': expected strings (DT_STRING), got {value.dtype}")
        return value
    if value.dtype == object:
        raise invalid(f"input '{name}': expected numbers of type {want.name}, got strings or "
                      "mixed values")
    np_type = want.as_numpy_dtype
    if np.issubdtype(np_type, np.integer):
        if value.dtype == np.bool_ or not (np.issubdtype(value.dtype, np.integer)
                                           or np.issubdtype(value.dtype, np.floating)):
            raise invalid(f"input '{name}': expected {want.name}, got {value.dtype}")
        if np.issubdtype(value.dtype, np.floating) and value.size and (
                not np.all(np.isfinite(value)) or np.any(value != np.round(value))):
            raise invalid(f"input '{name}': expected whole numbers of type {want.name}, got "
                          "fractional values")
        info = np.iinfo(np_type)
        if value.size and (value.min() < info.min or value.max() > info.max):
            raise invalid(f"input '{name}': values {value.min()}..{value.max()} are out of the "
                          f"range of {want.name} ({info.min}..{info.max})")
    elif np.issubdtype(np_type, np.floating):
        if value.dtype == np.bool_ or not np.issubdtype(value.dtype, np.number):
            raise invalid(f"input '{name}': expected {want.name}, got {value.dtype}")
    return value.astype(np_type)


def _shape_str(shape: tf.TensorShape) -> str:
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape.as_list()) + "]"


def run_signature(signature: Signature, inputs: dict[str, np.ndarray],
                  max_batch: int = DEFAULT_MAX_BATCH,
                  output_filter: list[str] | None = None) -> dict[str, np.ndarray]:
    """Validates the inputs, runs the signature, returns numpy outputs."""
    missing = sorted(set(signature.inputs) - set(inputs))
    extra = sorted(set(inputs) - set(signature.inputs))
    if missing or extra:
        raise invalid(f"signature '{signature.name}' takes inputs {sorted(signature.inputs)}; "
                      + (f"missing {missing}" if missing else "")
                      + ("; " if missing and extra else "")
                      + (f"unknown {extra}" if extra else ""))
    checked = {}
    for name, value in inputs.items():
        value = check_input(name, value, signature.inputs[name])
        if value.ndim and value.shape[0] > max_batch:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"input '{name}': batch of {value.shape[0]} exceeds the limit of "
                               f"{max_batch}")
        checked[name] = value
    if output_filter:
        unknown = sorted(set(output_filter) - set(signature.outputs))
        if unknown:
            raise invalid(f"output_filter {unknown} names no output of signature "
                          f"'{signature.name}' (outputs: {sorted(signature.outputs)})")
    for name, value in checked.items():
        check_items(name, value, signature.inputs[name])
    try:
        result = signature.fn(**{k: tf.constant(v, dtype=signature.inputs[k].dtype)
                                 for k, v in checked.items()})
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        for name, value in checked.items():  # which image of the batch? (error path only)
            if signature.inputs[name].dtype == tf.string:
                find_undecodable(name, value)
        raise invalid(f"signature '{signature.name}': {tf_error_text(e)}") from e
    except tf.errors.ResourceExhaustedError as e:
        raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, tf_error_text(e)) from e
    names = output_filter or list(signature.outputs)
    return {k: result[k].numpy() for k in names}


def tf_error_text(error: BaseException) -> str:
    """TensorFlow's error without "Graph execution error:" and its node decorations."""
    from jlml_tf.data.preprocessing import tf_error_text as text

    return text(error)


def _items(name: str, indices: list[int], total: int) -> str:
    which = ", ".join(str(i) for i in indices[:10]) + (", ..." if len(indices) > 10 else "")
    noun = "item" if len(indices) == 1 else "items"
    return f"input '{name}' {noun} {which} (counting from 0) of the batch of {total}"


def check_items(name: str, value: np.ndarray, spec: tf.TensorSpec) -> None:
    """Checks a batch before it runs: no empty string where encoded images go (an empty batch
    is refused by `check_input`)."""
    if spec.dtype == tf.string:
        empty = [i for i, v in enumerate(value.reshape(-1)) if not v]
        if empty:
            raise invalid(f"{_items(name, empty, value.size)}: empty string"
                          + ("s" if len(empty) > 1 else "") + ", not an image")


def find_undecodable(name: str, value: np.ndarray) -> None:
    """Raises INVALID_ARGUMENT naming the items of a string batch that are not images (each
    decoded alone, as the signature's graph decodes it); returns if every item decodes."""
    from jlml_tf.data.preprocessing import decode_error_reason

    bad = {}
    for i, item in enumerate(value.reshape(-1)):
        try:
            tf.io.decode_image(tf.constant(item), channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
            bad[i] = decode_error_reason(e)
    if not bad:
        return
    reasons = sorted(set(bad.values()))
    if len(reasons) == 1:
        detail = reasons[0]
    else:
        detail = "; ".join(f"{i}: {r}" for i, r in list(bad.items())[:10])
    raise invalid(f"{_items(name, list(bad), value.size)}: {detail}")


def bytes_hint(signatures: dict, current: str) -> str:
    """A hint naming the signatures that take encoded images, for a request that sent strings
    (or {"b64": ...}) to a signature that takes pixels."""
    takers = [n for n, sig in signatures.items() if n != current
              and any(spec.dtype == tf.string for spec in sig.inputs.values())]
    if not takers:
        return ""
    return (f"; encoded images (base64 JPEG/PNG) go to the signature '{takers[0]}': set "
            f"\"signature_name\": \"{takers[0]}\" (REST) or model_spec.signature_name (gRPC)")


def signature_def_map(saved_model_dir) -> "object":
    """The SignatureDefMap TF Serving reports as metadata, read from saved_model.pb."""
    import os

    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    out = get_model_metadata_pb2.SignatureDefMap()
    for name, sig in proto.meta_graphs[0].signature_def.items():
        if not name.startswith("__"):  # __saved_model_init_op is not a servable signature
            out.signature_def[name].CopyFrom(sig)
    return out
