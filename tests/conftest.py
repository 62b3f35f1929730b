"""Shared test fixtures: quiet TensorFlow, the real-data location, tiny model configs."""
import importlib.util
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

import jlml_tf  # noqa: E402,F401 - tests run TensorFlow with the CPU kernels the tools choose

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
REAL_DATA = PROJECT_ROOT.parent / "shared" / "data"


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (benchmarks/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}",
                                                  PROJECT_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def real_data_dir():
    """../shared/data beside the project; tests that need it skip when it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture
def tiny_model_config():
    """A JLML small enough to build and run in well under a second."""
    import run_fixtures

    return run_fixtures.tiny_config()


@pytest.fixture
def parse(monkeypatch):
    """Parses training-command arguments the way `python -m jlml_tf.train` does, from the
    project root (nested --flagfile paths are relative to it)."""
    monkeypatch.chdir(PROJECT_ROOT)

    def _parse(*args):
        import jlml_tf.train as train

        fv = train.define_flags()
        fv(["train", *args])
        return fv

    return _parse
