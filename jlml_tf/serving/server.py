"""`ModelServer`: the registry plus the REST and gRPC front ends, started and stopped together.

    with ModelServer("export/jlml", rest_port=0, grpc_port=0) as server:   # 0: a free port
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/jlml:predict"
"""
from __future__ import annotations

import os
import pathlib

from jlml_tf.serving import core
from jlml_tf.serving.grpc_server import GrpcServer
from jlml_tf.serving.registry import ModelRegistry
from jlml_tf.serving.rest import DEFAULT_MAX_REQUEST_BYTES, RestServer


class BindError(OSError):
    """An API could not listen on its address (typically: the port is in use)."""

    def __init__(self, api: str, host: str, port: int, reason: str):
        super().__init__(f"cannot serve the {api} API on {host}:{port}: {reason}")
        self.api, self.host, self.port, self.reason = api, host, port, reason


def check_base_path(base_path: pathlib.Path) -> None:
    """Refuses a --model_base_path that is certainly not a model's folder of versions: a
    missing folder, a version folder itself, or the folder above the model (an export
    directory). A folder with no version yet is fine: the server waits for the first one."""
    if not base_path.is_dir():
        raise FileNotFoundError(f"--model_base_path={base_path}: no such directory "
                                "(expected DIR/<model_name> holding version folders 1, 2, ...)")
    entries = [p for p in base_path.iterdir() if not p.name.startswith(".")]
    versions = [p for p in entries if p.is_dir() and p.name.isdigit()]
    if versions:
        return
    if (base_path / "saved_model.pb").is_file():
        raise ValueError(f"--model_base_path={base_path} is a SavedModel version folder; the "
                         "base path is the folder above it, which holds the numbered versions: "
                         f"--model_base_path={base_path.parent}")
    models = sorted(p for p in entries if p.is_dir() and any(
        v.is_dir() and v.name.isdigit() and (v / "saved_model.pb").is_file()
        for v in p.iterdir()))
    if models:
        hint = " or ".join(f"--model_base_path={m}" for m in models[:3])
        raise ValueError(f"--model_base_path={base_path} holds no version folders (1, 2, ...), "
                         f"but the model is one level down: {hint}")


class ModelServer:
    def __init__(self, model_base_path: str | os.PathLike, model_name: str | None = None,
                 host: str = "127.0.0.1", rest_port: int | None = 8501,
                 grpc_port: int | None = 8500, poll_seconds: float = 1.0,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_batch: int = core.DEFAULT_MAX_BATCH):
        """`rest_port`/`grpc_port`: a port, 0 for a free one, None to leave that API off."""
        self.base_path = pathlib.Path(model_base_path)
        check_base_path(self.base_path)
        self.model_name = model_name or self.base_path.resolve().name
        self.registry = ModelRegistry(self.model_name, self.base_path, poll_seconds)
        self._settings = dict(host=host, rest_port=rest_port, grpc_port=grpc_port,
                              max_request_bytes=max_request_bytes, max_batch=max_batch)
        self.rest: RestServer | None = None
        self.grpc: GrpcServer | None = None

    @property
    def rest_port(self) -> int | None:
        return self.rest.port if self.rest else None

    @property
    def grpc_port(self) -> int | None:
        return self.grpc.port if self.grpc else None

    def start(self) -> "ModelServer":
        """Binds the ports first (a port in use fails before the model is loaded), loads the
        newest version, then starts answering."""
        s = self._settings
        rest = grpc_server = None
        try:
            if s["rest_port"] is not None:
                try:
                    rest = RestServer(self.registry, s["host"], s["rest_port"],
                                      s["max_request_bytes"], s["max_batch"])
                except OSError as e:
                    raise BindError("REST", s["host"], s["rest_port"],
                                    e.strerror or str(e)) from e
            if s["grpc_port"] is not None:
                try:
                    grpc_server = GrpcServer(self.registry, s["host"], s["grpc_port"],
                                             s["max_request_bytes"], s["max_batch"])
                except (OSError, RuntimeError) as e:
                    raise BindError("gRPC", s["host"], s["grpc_port"],
                                    "address already in use or not available") from e
            self.registry.start()
            self.rest = rest.start() if rest is not None else None
            self.grpc = grpc_server.start() if grpc_server is not None else None
        except BaseException:
            if rest is not None and self.rest is None:
                rest.server_close()
            if grpc_server is not None and self.grpc is None:
                grpc_server.stop(0)
            self.stop()
            raise
        return self

    def stop(self):
        if self.rest is not None:
            self.rest.stop()
            self.rest = None
        if self.grpc is not None:
            self.grpc.stop()
            self.grpc = None
        self.registry.stop()

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc):
        self.stop()
