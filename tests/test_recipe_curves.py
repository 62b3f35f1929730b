"""benchmarks/recipe_curves.py: window means on hand-made points, and the NAME=RUN parsing."""
import importlib.util
import sys

import numpy as np
import pytest

from conftest import PROJECT_ROOT

_spec = importlib.util.spec_from_file_location(
    "benchmarks_recipe_curves", PROJECT_ROOT / "benchmarks" / "recipe_curves.py")
recipe_curves = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = recipe_curves
_spec.loader.exec_module(recipe_curves)


def test_windows_average_the_points_they_hold_and_skip_empty_ones():
    steps = np.array([0, 10, 40, 120, 149])
    values = np.array([1.0, 3.0, 5.0, 2.0, 4.0])
    assert recipe_curves.windowed(steps, values, 50) == [(0, 3.0), (100, 3.0)]


def test_a_run_without_a_name_is_refused(capsys):
    with pytest.raises(SystemExit):
        recipe_curves.main(["/tmp/run_without_name", "--out=/tmp/x"])
    assert "NAME=RUN_DIR" in capsys.readouterr().err
