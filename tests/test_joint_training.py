"""Joint training on several data sets: disjoint labels, and batches balanced by identity."""
import collections

import numpy as np
import pytest

from jlml_tf.data import pipeline
from jlml_tf.data.types import (ImageTable, ReidData, Trial, hold_out_identities,
                                keep_identity_fraction, repeat_training, union_for_training)


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


def test_repeated_target_fills_that_many_times_its_share_with_the_same_labels():
    target = _data("target", np.repeat([1, 2], 2))  # 2 ids x 2 images
    extra = _data("extra", np.repeat([1, 2, 3], 4))  # 3 ids x 4 images
    once = union_for_training([(target, target.trials[0]), (extra, extra.trials[0])])
    thrice = union_for_training([(target, repeat_training(target.trials[0], 3)),
                                 (extra, extra.trials[0])])
    assert thrice[2] == once[2] == 5  # no new classes
    assert len(thrice[0]) == 3 * 4 + 12
    assert thrice[1][:12].tolist() == [0, 0, 1, 1] * 3  # each image thrice, its own label
    assert list(thrice[0].filenames[:12]) == [f"target/{i}" for i in range(4)] * 3
    assert thrice[1][12:].tolist() == once[1][4:].tolist()  # the extra set unchanged
    assert repeat_training(target.trials[0], 1) is target.trials[0]
    with pytest.raises(ValueError, match="repeated 0 times"):
        repeat_training(target.trials[0], 0)


def test_cameras_of_two_data_sets_never_share_an_id_in_the_union():
    big = _data("big", np.repeat([1, 2], 4))
    big.table.camids[:] = np.tile([3, 5], 4)  # cameras 3 and 5
    small = _data("small", [1, 1, 2])
    small.table.camids[:] = [3, -1, 3]  # camera 3 again (another camera) and an unknown one
    table, _, _ = union_for_training([(big, big.trials[0]), (small, small.trials[0])])
    assert table.camids.tolist() == [0, 1] * 4 + [3, 2, 3]


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


def test_identity_fraction_keeps_whole_identities_of_each_data_set_by_seed():
    big = _data("big", np.repeat(np.arange(1, 21), 3))  # 20 ids x 3 images
    small = _data("small", np.repeat(np.arange(1, 5), 2))  # 4 ids x 2 images
    kept = {d.name: keep_identity_fraction(d, d.trials[0], 0.25, seed=3) for d in (big, small)}
    big_pids = np.unique(big.table.pids[kept["big"].train])
    assert len(big_pids) == 5 and len(kept["big"].train) == 15  # every image of a kept id
    assert len(kept["small"].train) == 2  # round(0.25 x 4) = 1 identity, both its images
    again = keep_identity_fraction(big, big.trials[0], 0.25, seed=3)
    np.testing.assert_array_equal(again.train, kept["big"].train)
    other = keep_identity_fraction(big, big.trials[0], 0.25, seed=4)
    assert not np.array_equal(other.train, kept["big"].train)
    _, labels, classes = union_for_training([(d, kept[d.name]) for d in (big, small)])
    assert classes == 6 and sorted(set(labels.tolist())) == list(range(6))
    assert keep_identity_fraction(big, big.trials[0], 1.0, seed=3) is big.trials[0]
    with pytest.raises(ValueError, match="fraction 0"):
        keep_identity_fraction(big, big.trials[0], 0.0, seed=3)
