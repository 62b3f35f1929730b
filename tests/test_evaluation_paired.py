"""jlml_tf.evaluation.paired: the paired difference and its t interval, by hand."""
import math

import pytest

from jlml_tf.evaluation.paired import paired_difference


def test_paired_difference_and_its_t_interval_by_hand():
    better = {"trial0": {"rank1": 0.30}, "trial1": {"rank1": 0.34}, "trial2": {"rank1": 0.32}}
    worse = {"trial0": {"rank1": 0.25}, "trial1": {"rank1": 0.27}, "trial2": {"rank1": 0.28},
             "trial7": {"rank1": 0.99}}  # not shared: ignored
    d = paired_difference(better, worse)
    # differences 5, 7, 4 points: mean 16/3, sd sqrt(7/3), t(0.975, 2) = 4.303
    half = 4.302653 * math.sqrt(7 / 3) / math.sqrt(3)  # t(0.975, df=2)
    assert d["splits"] == ["trial0", "trial1", "trial2"]
    assert d["mean"] == pytest.approx(16 / 3)
    assert (d["low"], d["high"]) == (pytest.approx(16 / 3 - half), pytest.approx(16 / 3 + half))
    assert d["low"] > 0  # 5.33 - 3.80
    assert paired_difference(better, {"trial0": {"rank1": 0.1}}) is None  # one shared split
    wide = paired_difference(better, worse, confidence=0.995)  # t(0.9975, df=2) = 14.089
    assert wide["high"] - wide["mean"] == pytest.approx(14.0890 * math.sqrt(7 / 3) / math.sqrt(3), rel=1e-4)
    assert wide["low"] < 0 < wide["high"]
