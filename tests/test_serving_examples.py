"""The client examples in export/ work against the local server (as against TF Serving)."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from jlml_tf.export import fixtures
from jlml_tf.serving.server import ModelServer

EXPORT = pathlib.Path(__file__).resolve().parents[1] / "export"


@pytest.mark.slow
def test_rest_and_grpc_examples(tmp_path):
    base, _, _ = fixtures.export_tiny(tmp_path / "export")
    rng = np.random.default_rng(0)
    files = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        path.write_bytes(tf.io.encode_png(rng.integers(0, 256, (64, 32, 3), np.uint8)).numpy())
        files.append(os.fspath(path))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with ModelServer(base, rest_port=0, grpc_port=0, poll_seconds=0) as server:
        outs = {}
        for name, args in (
                ("rest", ["rest_client.py", f"--port={server.rest_port}"]),
                ("rest_pixels", ["rest_client.py", f"--port={server.rest_port}", "--pixels"]),
                ("grpc", ["grpc_client.py", f"--port={server.grpc_port}"])):
            res = subprocess.run([sys.executable, os.fspath(EXPORT / args[0]), *args[1:], *files],
                                 capture_output=True, text=True, env=env, timeout=300)
            assert res.returncode == 0, res.stderr[-2000:]
            assert "embeddings of dimension 32" in res.stdout
            # the similarity rows: each image is identical to itself
            rows = [line.split()[1:] for line in res.stdout.splitlines()
                    if line.startswith(files[0])]
            assert rows and rows[0][0] == "1.000"
            outs[name] = rows
        assert outs["rest"] == outs["grpc"] == outs["rest_pixels"]
        res = subprocess.run([sys.executable, os.fspath(EXPORT / "rest_client.py"),
                              f"--port={server.rest_port}", "--model=other"],
                             capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode != 0 and "HTTP 404" in res.stderr
