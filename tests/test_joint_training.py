"""Joint training on several data sets: disjoint labels, and batches balanced by identity."""
import collections

import numpy as np
import pytest

from jlml_tf.data import pipeline
from jlml_tf.data.types import ImageTable, ReidData, Trial, hold_out_identities, union_for_training


def _data(name, pids):
    pids = np.asarray(pids)
    n = len(pids)
    table = ImageTable(np.array([b"x"] * n, dtype=object), pids, np.ones(n), [f"{name}/{i}" for i in range(n)])
    return ReidData(name, "p", table, [Trial("t", np.arange(n), [], [])])


def test_same_pid_values_in_two_data_sets_get_different_labels():
    big = _data("big", np.repeat([1, 2, 3], 10))  # 3 ids x 10 images
    small = _data("small", np.repeat([1, 2, 3, 4], 2))  # same pid values, other people
    table, labels, classes = union_for_training([(big, big.trials[0]), (small, small.trials[0])])
    assert classes == 7 and len(table) == 38
    assert labels[:30].tolist() == np.repeat([0, 1, 2], 10).tolist()
    assert labels[30:].tolist() == np.repeat([3, 4, 5, 6], 2).tolist()


def test_identity_sampler_balances_identities_not_images_across_data_sets():
    big = _data("big", np.repeat(np.arange(1, 5), 30))  # 4 ids x 30 images
    small = _data("small", np.repeat(np.arange(1, 5), 2))  # 4 ids x 2 images
    _, labels, _ = union_for_training([(big, big.trials[0]), (small, small.trials[0])])
    k = 2
    random_counts = collections.Counter(labels[pipeline.epoch_order(labels, 8, 0, 0)] >= 4)
    pk_order = pipeline.epoch_order(labels, 8, 0, 0, sampler="pk", images_per_identity=k)
    pk_counts = collections.Counter(labels[pk_order] >= 4)
    # random: images in proportion to the data sets' sizes (120 : 8); P x K: half each
    assert random_counts[False] > 10 * random_counts[True]
    assert pk_counts[True] == pk_counts[False]
    for batch in labels[pk_order].reshape(-1, 8):
        assert sorted(collections.Counter(batch).values()) == [k] * 4


def test_held_out_identities_leave_training_and_are_drawn_from_the_seed():
    data = _data("d", np.repeat(np.arange(1, 11), 3))  # 10 ids x 3 images
    trial, held = hold_out_identities(data, data.trials[0], 3, seed=7)
    assert len(held) == 3 and held == sorted(held) and set(held) <= set(range(1, 11))
    kept_pids = set(data.table.pids[trial.train].tolist())
    assert kept_pids.isdisjoint(held) and len(kept_pids) == 7 and len(trial.train) == 21
    assert hold_out_identities(data, data.trials[0], 3, seed=7)[1] == held
    assert hold_out_identities(data, data.trials[0], 0, seed=7) == (data.trials[0], [])
    with pytest.raises(ValueError, match="10 training identities"):
        hold_out_identities(data, data.trials[0], 10, seed=7)
