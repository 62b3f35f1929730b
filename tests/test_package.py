"""Importing jlml_tf before TensorFlow turns TF's oneDNN CPU kernels on (jlml_tf/__init__.py),
unless the environment turns them off."""
import os
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT

_PROBE = """
import jlml_tf, tensorflow
from tensorflow.python.util import _pywrap_util_port as port
print(port.IsMklEnabled() if hasattr(port, "IsMklEnabled") else "unknown")
"""


def _onednn_enabled(env_value):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if env_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = env_value
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=PROJECT_ROOT,
                         capture_output=True, text=True, check=True).stdout.split()[-1]
    if out == "unknown":
        pytest.skip("this TensorFlow has no IsMklEnabled to ask")
    return out == "True"


def test_importing_jlml_tf_first_turns_onednn_on():
    assert _onednn_enabled(None)


def test_the_environment_can_turn_onednn_off():
    assert not _onednn_enabled("0")
