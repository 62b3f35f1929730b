"""benchmarks/serving_load.py against a running server (--target): the input shape comes from
the model's metadata, and failures are reported with their causes (issue 13 item 5)."""
import importlib.util
import pathlib

import pytest

import run_fixtures as fixtures
from jlml_tf.serving.server import ModelServer

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "serving_load.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("serving_load", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A model whose input is not the 64 x 32 the script used to hard-code."""
    root = tmp_path_factory.mktemp("load")
    run = fixtures.make_run(root / "run", fixtures.tiny_config(input_height=96, input_width=48))
    base, _, _ = fixtures.export_tiny(root / "export", run_dir=run)
    return base


def test_target_reads_the_input_shape_from_the_metadata(base, capsys):
    script = _load_script()
    with ModelServer(base, rest_port=0, grpc_port=None, poll_seconds=0) as server:
        rc = script.main([f"--target=127.0.0.1:{server.rest_port}", "--clients=2",
                          "--requests=3"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "model jlml version 1" in out and "input [96, 48, 3]" in out
    assert "successful requests/s" in out and "failures 0" in out and "OK: zero failures" in out


def test_failures_are_reported_with_their_cause_and_no_throughput(base, capsys):
    script = _load_script()
    with ModelServer(base, rest_port=0, grpc_port=None, poll_seconds=0, max_batch=1) as server:
        rc = script.main([f"--target=127.0.0.1:{server.rest_port}", "--clients=2",
                          "--requests=3", "--batch=2"])
        out = capsys.readouterr().out
        assert rc == 1
        assert "all 6 requests failed, so there is no throughput" in out
        assert "requests/s" not in out
        assert "6 failed: HTTP 413: input 'images': batch of 2 exceeds the limit of 1" in out
        with pytest.raises(SystemExit, match="HTTP 404: Servable not found"):
            script.main([f"--target=127.0.0.1:{server.rest_port}", "--model_name=other"])
