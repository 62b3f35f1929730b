"""The TF Serving REST API (https://www.tensorflow.org/tfx/serving/api_rest) on http.server.

    GET  /v1/models/<name>[/versions/<v>]              model status
    GET  /v1/models/<name>[/versions/<v>]/metadata     signature metadata
    POST /v1/models/<name>[/versions/<v>]:predict      {"signature_name": ..., "instances": [...]}
                                                       or {"inputs": ...}; {"b64": ...} for bytes

Errors are `{"error": "..."}` with the HTTP status TF Serving maps the gRPC code to (400 for a
bad request, 404 for an unknown model or version, 413 for an oversized payload).
"""
from __future__ import annotations

import base64
import binascii
import http.server
import json
import logging
import re
import threading

import grpc
import numpy as np
from google.protobuf import json_format

from jlml_tf.serving import core
from jlml_tf.serving.registry import ModelRegistry

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
                   r"(?:(?P<meta>/metadata)|:(?P<verb>[A-Za-z]+))?$")


# -- JSON <-> tensors --------------------------------------------------------------------------
def _decode_strings(value, name):
    """Nested lists of str / {"b64": str} -> nested lists of bytes."""
    if isinstance(value, list):
        return [_decode_strings(v, name) for v in value]
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise core.invalid(f"input '{name}': an object value must be {{\"b64\": \"...\"}}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise core.invalid(f"input '{name}': invalid base64 in \"b64\" ({e})") from e
    if isinstance(value, str):
        return value.encode("utf-8")
    raise core.invalid(f"input '{name}': expected strings or {{\"b64\": ...}}, got "
                       f"{type(value).__name__}")


def _shape_of(value) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def to_array(value, name: str, spec) -> np.ndarray:
    """A JSON value for one input -> numpy array (dtype checked later against the spec)."""
    import tensorflow as tf

    if spec.dtype == tf.string:
        data = _decode_strings(value, name)
        shape = _shape_of(data)
        arr = np.empty(shape, dtype=object) if shape else np.empty((), dtype=object)
        try:
            if shape:
                flat = np.array(data, dtype=object)
                if flat.shape != tuple(shape):
                    raise ValueError
                arr[...] = flat
            else:
                arr[()] = data
        except ValueError:
            raise core.invalid(f"input '{name}': ragged nested lists (every row must have the "
                               "same length)")
        return arr
    try:
        arr = np.array(value)
    except ValueError:
        raise core.invalid(f"input '{name}': ragged nested lists (every row must have the same "
                           "length)")
    if arr.dtype.kind in "USO":
        if _contains(value, lambda v: isinstance(v, dict) and "b64" in v):
            raise core.invalid(f"input '{name}': expected numbers of type {spec.dtype.name}, "
                               "got {\"b64\": ...} (encoded bytes)")
        if _contains(value, lambda v: isinstance(v, (str, dict))):
            raise core.invalid(f"input '{name}': expected numbers of type {spec.dtype.name}, "
                               "got strings or objects")
        raise core.invalid(f"input '{name}': ragged nested lists or null values")
    if arr.dtype == np.bool_:
        raise core.invalid(f"input '{name}': expected numbers of type {spec.dtype.name}, got "
                           "booleans")
    if arr.size == 0 and arr.dtype == np.float64:
        arr = arr.astype(spec.dtype.as_numpy_dtype)
    return arr


def _contains(value, test) -> bool:
    if isinstance(value, list):
        return any(_contains(v, test) for v in value)
    return test(value)


def to_json_value(arr: np.ndarray, name: str):
    if arr.dtype == object:
        def conv(v):
            if isinstance(v, bytes):
                if name.endswith("_bytes"):
                    return {"b64": base64.b64encode(v).decode("ascii")}
                return v.decode("utf-8", errors="replace")
            return v
        return np.vectorize(conv, otypes=[object])(arr).tolist() if arr.size else arr.tolist()
    return arr.tolist()


def parse_predict(body: dict, signature: core.Signature) -> tuple[dict[str, np.ndarray], bool]:
    """Request body -> ({input name: array}, row_format)."""
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances == has_inputs:
        raise core.invalid("the request must have exactly one of \"instances\" (row format) or "
                           "\"inputs\" (columnar format)")
    unknown = sorted(set(body) - {"instances", "inputs", "signature_name"})
    if unknown:
        raise core.invalid(f"unknown request fields {unknown}")
    names = list(signature.inputs)
    if has_instances:
        rows = body["instances"]
        if not isinstance(rows, list):
            raise core.invalid("\"instances\" must be a list, one entry per example")
        per_input = {n: [] for n in names}
        for i, row in enumerate(rows):
            if isinstance(row, dict) and not (len(names) == 1 and set(row) == {"b64"}):
                if set(row) != set(names):
                    raise core.invalid(f"instance {i} has inputs {sorted(row)}; signature "
                                       f"'{signature.name}' takes {sorted(names)}")
                for n in names:
                    per_input[n].append(row[n])
            elif len(names) == 1:
                per_input[names[0]].append(row)
            else:
                raise core.invalid(f"instance {i}: signature '{signature.name}' takes several "
                                   f"inputs {names}; each instance must be an object naming them")
        arrays = {}
        for n in names:
            arr = to_array(per_input[n], n, signature.inputs[n])
            if not rows:  # an empty batch: give it the signature's trailing shape
                dims = [0] + [d or 0 for d in signature.inputs[n].shape.as_list()[1:]]
                arr = np.zeros(dims, dtype=object if arr.dtype == object
                               else signature.inputs[n].dtype.as_numpy_dtype)
            arrays[n] = arr
        return arrays, True
    value = body["inputs"]
    if isinstance(value, dict) and not (len(names) == 1 and set(value) == {"b64"}):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise core.invalid(f"unknown inputs {unknown}; signature '{signature.name}' takes "
                               f"{sorted(names)}")
        return {n: to_array(v, n, signature.inputs[n]) for n, v in value.items()}, False
    if len(names) != 1:
        raise core.invalid(f"signature '{signature.name}' takes several inputs {names}: "
                           "\"inputs\" must be an object naming them")
    return {names[0]: to_array(value, names[0], signature.inputs[names[0]])}, False


def format_predict(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    if row_format:
        if len(outputs) == 1:
            (name, arr), = outputs.items()
            return {"predictions": to_json_value(arr, name)}
        n = min(len(a) for a in outputs.values())
        values = {k: to_json_value(a, k) for k, a in outputs.items()}
        return {"predictions": [{k: values[k][i] for k in outputs} for i in range(n)]}
    if len(outputs) == 1:
        (name, arr), = outputs.items()
        return {"outputs": to_json_value(arr, name)}
    return {"outputs": {k: to_json_value(a, k) for k, a in outputs.items()}}


# -- HTTP ---------------------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "jlml-serving"
    # headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK stall each response by ~40 ms
    disable_nagle_algorithm = True
    server: "RestServer"

    def log_message(self, fmt, *args):  # quiet by default; the server logs at debug level
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, payload: dict):
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, err: core.ServingError):
        # the server's log says what went wrong too, not only the client
        log.warning("%s %s from %s: HTTP %d %s", self.command, self.path.split("?", 1)[0],
                    self.address_string(), err.http_status, err.message)
        self._send(err.http_status, {"error": err.message})

    def _route(self, method: str):
        m = _PATH.match(self.path.split("?", 1)[0])
        if not m:
            raise core.ServingError(grpc.StatusCode.NOT_FOUND,
                                    f"Malformed request: {method} {self.path}")
        version = m.group("version")
        if version is not None:
            if not version.isdigit():
                raise core.invalid(f"version must be a positive integer, got {version!r}")
            version = int(version)
        return m.group("name"), version, bool(m.group("meta")), m.group("verb")

    def do_GET(self):  # noqa: N802 - http.server naming
        try:
            name, version, meta, verb = self._route("GET")
            if verb:
                raise core.ServingError(grpc.StatusCode.NOT_FOUND,
                                        f"Malformed request: GET {self.path} (use POST for :{verb})")
            registry = self.server.registry
            if meta:
                servable = registry.get(name, version)
                self._send(200, {
                    "model_spec": {"name": name, "signature_name": "",
                                   "version": str(servable.version)},
                    "metadata": {"signature_def": json_format.MessageToDict(
                        servable.signature_def_map, preserving_proto_field_name=True)}})
            else:
                status = registry.status(name, version)
                self._send(200, json_format.MessageToDict(
                    status, preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True))
        except core.ServingError as e:
            self._error(e)
        except Exception as e:  # noqa: BLE001 - never let a request kill the server
            log.exception("GET %s failed", self.path)
            self._error(core.ServingError(grpc.StatusCode.INTERNAL, f"internal error: {e}"))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise core.ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                    "chunked requests are not supported: send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise core.invalid("missing or invalid Content-Length header")
        length = int(length)
        if length > self.server.max_request_bytes:
            self.close_connection = True  # the unread body must not be parsed as a request
            raise core.ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"request of {length} bytes exceeds the limit of "
                                    f"{self.server.max_request_bytes} bytes")
        return self.rfile.read(length)

    def do_POST(self):  # noqa: N802
        try:
            body = self._read_body()
            name, version, meta, verb = self._route("POST")
            if meta or verb is None:
                raise core.ServingError(grpc.StatusCode.NOT_FOUND,
                                        f"Malformed request: POST {self.path}")
            if verb != "predict":
                raise core.ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT if verb in ("classify", "regress")
                    else grpc.StatusCode.NOT_FOUND,
                    f"{verb!r} is not supported by this model: its signatures are predict "
                    "signatures (use :predict)")
            try:
                request = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise core.invalid(f"JSON parse error: {e}") from e
            if not isinstance(request, dict):
                raise core.invalid("the request body must be a JSON object")
            servable = self.server.registry.get(name, version)
            sig_name = request.get("signature_name") or core.DEFAULT_SIGNATURE
            if not isinstance(sig_name, str):
                raise core.invalid("\"signature_name\" must be a string")
            signature = servable.signature(sig_name)
            try:
                inputs, row_format = parse_predict(request, signature)
            except core.ServingError as e:
                if "got strings" in e.message or "(encoded bytes)" in e.message:
                    e.message += core.bytes_hint(servable.signatures, signature.name)
                raise
            outputs = core.run_signature(signature, inputs, self.server.max_batch)
            self._send(200, format_predict(outputs, row_format))
        except core.ServingError as e:
            self._error(e)
        except Exception as e:  # noqa: BLE001
            log.exception("POST %s failed", self.path)
            self._error(core.ServingError(grpc.StatusCode.INTERNAL, f"internal error: {e}"))

    def do_PUT(self):  # noqa: N802
        self.close_connection = True
        self._error(core.ServingError(grpc.StatusCode.NOT_FOUND,
                                      f"Malformed request: PUT {self.path}"))

    do_DELETE = do_PUT


class RestServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # listen backlog; the default 5 drops connections under load

    def __init__(self, registry: ModelRegistry, host: str = "127.0.0.1", port: int = 8501,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_batch: int = core.DEFAULT_MAX_BATCH):
        self.registry = registry
        self.max_request_bytes = max_request_bytes
        self.max_batch = max_batch
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> "RestServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="rest", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
