"""benchmarks/recipe_curves.py: window means on hand-made points, and the NAME=RUN parsing."""

import numpy as np
import pytest

from conftest import load_benchmark

recipe_curves = load_benchmark("recipe_curves")


def test_windows_average_the_points_they_hold_and_skip_empty_ones():
    steps = np.array([0, 10, 40, 120, 149])
    values = np.array([1.0, 3.0, 5.0, 2.0, 4.0])
    assert recipe_curves.windowed(steps, values, 50) == [(0, 3.0), (100, 3.0)]


def test_a_run_without_a_name_is_refused(capsys):
    with pytest.raises(SystemExit):
        recipe_curves.main(["/tmp/run_without_name", "--out=/tmp/x"])
    assert "NAME=RUN_DIR" in capsys.readouterr().err
