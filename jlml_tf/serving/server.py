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


class ModelServer:
    def __init__(self, model_base_path: str | os.PathLike, model_name: str | None = None,
                 host: str = "127.0.0.1", rest_port: int | None = 8501,
                 grpc_port: int | None = 8500, poll_seconds: float = 1.0,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_batch: int = core.DEFAULT_MAX_BATCH):
        """`rest_port`/`grpc_port`: a port, 0 for a free one, None to leave that API off."""
        self.base_path = pathlib.Path(model_base_path)
        if not self.base_path.is_dir():
            raise FileNotFoundError(f"--model_base_path={self.base_path}: no such directory "
                                    "(expected DIR/<model_name> holding version folders 1, 2, ...)")
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
        s = self._settings
        self.registry.start()
        try:
            if s["rest_port"] is not None:
                self.rest = RestServer(self.registry, s["host"], s["rest_port"],
                                       s["max_request_bytes"], s["max_batch"]).start()
            if s["grpc_port"] is not None:
                self.grpc = GrpcServer(self.registry, s["host"], s["grpc_port"],
                                       s["max_request_bytes"], s["max_batch"]).start()
        except BaseException:
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
