"""No-match threshold calibration on hand-made distances and features with known answers."""
import json
import math

import numpy as np
import pytest

from jlml_tf.inference import threshold as th


def test_threshold_half_way_between_last_accepted_and_first_rejected_false_match():
    false = np.arange(1, 101) / 100.0  # 0.01 .. 1.00, shuffled: order must not matter
    np.random.default_rng(0).shuffle(false)
    true = np.array([0.01, 0.03, 0.05, 0.07, 0.2])
    cal = th.calibrate(true, false, target_false_match_rate=0.05)
    # 5 of 100 false matches may be accepted: 0.01..0.05; 0.06 is the first rejected.
    assert cal.threshold == pytest.approx(0.055)
    assert cal.false_match_rate == pytest.approx(0.05)
    assert cal.true_match_rate == pytest.approx(3 / 5)  # 0.01, 0.03, 0.05
    assert (cal.num_true_pairs, cal.num_false_pairs) == (5, 100)


def test_ties_at_the_boundary_keep_the_rate_at_or_below_the_target():
    false = [0.1, 0.2, 0.2, 0.2, 0.5]
    # Target 0.4 allows 2 of 5, but accepting any 0.2 accepts all three: stop below them.
    assert th.threshold_at_false_match_rate(false, 0.4) == pytest.approx(0.15)
    _, fmr = th.match_rates(0.15, [], false)
    assert fmr == pytest.approx(0.2)
    # Target 0.8 allows 4: all of 0.1, 0.2, 0.2, 0.2, and 0.5 is rejected.
    assert th.threshold_at_false_match_rate(false, 0.8) == pytest.approx(0.35)


def test_extreme_targets():
    assert th.threshold_at_false_match_rate([0.3, 0.5], 0.0) == pytest.approx(0.15)
    assert th.threshold_at_false_match_rate([0.3, 0.5], 1.0) == pytest.approx(0.5)
    assert th.threshold_at_false_match_rate([0.0, 0.5], 0.0) < 0.0  # rejects even distance 0
    with pytest.raises(ValueError, match="no false-match pairs"):
        th.threshold_at_false_match_rate([], 0.1)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        th.threshold_at_false_match_rate([0.1], 1.5)


def test_match_rates_count_distance_equal_to_threshold_as_accepted():
    tmr, fmr = th.match_rates(0.5, [0.5, 0.6], [0.4, 0.5, 0.9, 1.0])
    assert (tmr, fmr) == (0.5, 0.5)
    tmr, _ = th.match_rates(0.5, [], [0.1])
    assert math.isnan(tmr)


def test_pair_distances_on_points_of_a_line():
    # 1-D features: distances are differences of positions.
    x = np.array([[0.0], [1.0], [3.0], [6.0], [10.0], [20.0], [30.0]], np.float32)
    pids = [1, 1, 2, 2, -1, 0, 0]
    cams = [1, 2, 1, 1, 1, 1, 2]
    true, false, total = th.pair_distances(x, pids, cams)
    # True: (0, 1) across cameras = 1; (2, 3) is same-camera, not a true match.
    np.testing.assert_allclose(np.sort(true), [1.0])
    # False: pid 1 vs 2: 3, 6, 2, 5; pid 0 vs pids 1/2: 20, 19, 17, 14, 30, 29, 27, 24;
    # pid 0 vs pid 0 (unknown people) and anything with junk pid -1 are not pairs.
    expected = sorted([3, 6, 2, 5, 20, 19, 17, 14, 30, 29, 27, 24])
    np.testing.assert_allclose(np.sort(false), expected, rtol=1e-6)
    assert total == len(expected)


def test_pair_distances_unknown_cameras_count_as_cross_camera():
    x = np.array([[0.0], [2.0], [5.0]], np.float32)
    true, false, _ = th.pair_distances(x, [4, 4, 5], [-1, -1, -1])
    np.testing.assert_allclose(true, [2.0])
    np.testing.assert_allclose(np.sort(false), [3.0, 5.0])


def test_pair_distances_sample_false_pairs_beyond_the_cap():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    pids = np.repeat(np.arange(1, 31), 10)
    cams = np.tile([1, 2], 150)
    true, false, total = th.pair_distances(x, pids, cams, max_false_pairs=2000, seed=3)
    assert total == 300 * 299 // 2 - 30 * 45
    assert 1500 < len(false) < 2500  # a Bernoulli sample of about 2000
    assert len(true) == 30 * 25  # 5 x 5 cross-camera pairs per identity, all kept
    full_true, full_false, _ = th.pair_distances(x, pids, cams, max_false_pairs=None)
    assert len(full_false) == total
    np.testing.assert_allclose(np.sort(true), np.sort(full_true))
    # A sample's rate at a fixed threshold is close to the full set's.
    t = float(np.median(full_false))
    assert th.match_rates(t, [], false)[1] == pytest.approx(0.5, abs=0.05)


def test_cross_set_rates_hand_case():
    q = np.array([[0.0], [10.0]], np.float32)
    g = np.array([[1.0], [0.5], [10.2], [3.0], [50.0]], np.float32)
    rates = th.cross_set_rates(0.6, q, [1, 2], [1, 1], g, [1, 1, 2, 0, -1], [2, 1, 2, 3, 1])
    # True pairs (same pid, other camera): q0-g0 (d 1.0), q1-g2 (d 0.2); q0-g1 is same-camera.
    assert rates["num_true_pairs"] == 2 and rates["true_match_rate"] == pytest.approx(0.5)
    # False pairs: q0-{g2, g3}, q1-{g0, g1, g3}; none within 0.6. Junk g4 is ignored.
    assert rates["num_false_pairs"] == 5 and rates["false_match_rate"] == 0.0


def test_file_round_trip_and_lookup_beside_models(tmp_path):
    cal = th.calibrate([0.1, 0.4], [0.3, 0.5, 0.7, 0.9], 0.25, source={"dataset": "x"})
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    path = th.save(cal, run)
    assert path == run / th.FILE_NAME
    assert json.loads(path.read_text())["format"] == th.FORMAT
    back = th.load(run)
    assert back.threshold == pytest.approx(0.4) and back.source == {"dataset": "x"}
    assert th.find(run) == path
    assert th.find(run / "checkpoints" / "ckpt-7") == path
    export = tmp_path / "export" / "tflite"
    export.mkdir(parents=True)
    (export / "int8.tflite").write_bytes(b"x")
    assert th.find(export / "int8.tflite") is None
    th.save(cal, export.parent / th.FILE_NAME)
    assert th.find(export / "int8.tflite") == export.parent / th.FILE_NAME
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        th.load(tmp_path / "bad.json")


def test_lookup_in_an_export_by_every_spelling_of_the_model(tmp_path):
    """Issue 13 item 2: the export stores the threshold in jlml/<v>/assets.extra/ and in
    jlml_v<v>/; `--model=EXPORT/jlml` (a TF Serving base path) must find it too."""
    cal = th.calibrate([0.1, 0.4], [0.3, 0.5, 0.7, 0.9], 0.25)
    base = tmp_path / "export" / "jlml"
    for v in (1, 2):
        (base / str(v) / "assets.extra").mkdir(parents=True)
        (base / str(v) / "saved_model.pb").write_bytes(b"graph")
    newest = th.save(cal, base / "2" / "assets.extra" / th.FILE_NAME)
    assert th.find(base) == newest  # the base path: its newest version, as it is served
    assert th.find(base / "2") == newest
    assert th.find(str(base) + "/") == newest
    assert th.find(base / "1") is None
    (tmp_path / "export" / "jlml_v1").mkdir()
    beside = th.save(cal, tmp_path / "export" / "jlml_v1" / th.FILE_NAME)
    assert th.find(base / "1") == beside  # EXPORT/jlml_v1/threshold.json
    lite = tmp_path / "export" / "jlml_v1" / "tflite"
    lite.mkdir()
    (lite / "int8.tflite").write_bytes(b"x")
    assert th.find(lite / "int8.tflite") == beside


def _world(seed=0):
    """Features like a trained model's: the training identities spread over the whole sphere
    (the model learnt to tell them apart), the test identities crowded into one region of it
    (people it never saw look alike to it)."""
    rng = np.random.default_rng(seed)
    dim, per_id = 16, 4

    def people(first, count, offset, scale):
        centres = offset + scale * rng.normal(size=(count, dim))
        x = np.repeat(centres, per_id, 0) + rng.normal(scale=0.15 * scale,
                                                        size=(count * per_id, dim))
        pids = np.repeat(np.arange(first, first + count), per_id)
        cams = np.tile([1, 1, 2, 2], count)
        return x, pids, cams

    crowd = np.zeros(dim)
    crowd[0] = 6.0
    xs, ps, cs = zip(people(1, 40, 0.0, 1.0), people(101, 40, crowd, 1.0))
    x = np.concatenate(xs)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pids, cams = np.concatenate(ps), np.concatenate(cs)
    train = np.flatnonzero(pids < 100)
    test = np.flatnonzero(pids > 100)
    query = test[cams[test] == 1]
    gallery = test[cams[test] == 2]
    return x.astype(np.float32), pids, cams, train, query, gallery


def test_calibrating_on_training_identities_lets_unseen_people_match_too_often():
    """Issue 13 item 12: on people the model was trained on, the threshold is too lenient
    for people it never saw; held-out identities give the rate asked for."""
    x, pids, cams, train, query, gallery = _world()
    features_of = lambda rows: x[rows]  # noqa: E731
    target = 0.02
    seen = th.calibrate_split("train", features_of, pids, cams, train, query, gallery, target)
    assert seen.source["split"] == "train" and seen.source["held_out"] is False
    assert seen.false_match_rate <= target
    assert seen.unseen["false_match_rate"] > 3 * target  # the defect, made visible
    # the test trial's identities (asked for by the user): the unseen rate is cross-validated
    unseen = th.calibrate_split("test", features_of, pids, cams, train, query, gallery, target)
    assert unseen.source == {"split": "test", "held_out": True, "identities": 40, "images": 160}
    assert unseen.threshold < seen.threshold
    assert unseen.test["false_match_rate"] <= target and unseen.test["in_sample"]
    assert unseen.unseen["false_match_rate"] < 2 * target
    assert "cross-validation" in unseen.unseen["how"] and len(unseen.unseen["folds"]) == 2
    # identities held out from training (recorded by training as data.validation_pids)
    held = np.arange(21, 41)  # half of the training identities, pretend unseen
    val = th.calibrate_split("validation", features_of, pids, cams, train, query, gallery,
                             target, validation_pids=held)
    assert val.source["split"] == "validation" and val.source["identities"] == 20
    expected = th.calibrate_features(x[train[np.isin(pids[train], held)]],
                                     pids[train[np.isin(pids[train], held)]],
                                     cams[train[np.isin(pids[train], held)]], target)
    assert val.threshold == pytest.approx(expected.threshold)
    assert val.unseen["false_match_rate"] == val.test["false_match_rate"]
    with pytest.raises(ValueError, match="--calibration_split=test"):
        th.calibrate_split("validation", features_of, pids, cams, train, query, gallery, target)
    # the file keeps where it came from and what it implies
    text = th.describe(seen)
    assert text.startswith("calibrated on the 40 training identities (seen in training) of ")
    assert "on unseen people it lets 96." in text
    assert th.describe(unseen).startswith(
        "calibrated on the 40 identities of the test trial (unseen in training) of ")
    assert th.describe(val).startswith("calibrated on 20 identities held out from training")


def test_identity_folds_keep_identities_together():
    pids = np.array([5, 5, 7, 7, 7, 9, 0, 0, 0, 0, -1, 11])
    folds = th.identity_folds(pids, 2, seed=1)
    for p in (5, 7, 9, 11):
        assert len(set(folds[pids == p])) == 1
    assert folds[10] == -1
    assert sorted(folds[pids == 0]) == [0, 0, 1, 1]
    assert set(folds[pids > 0]) == {0, 1}
