"""Distillation from LOMO + XQDA: the relational loss on hand-made points, the teacher's fit,
its file, and its term in the training step."""
import json

import numpy as np
import pytest
import tensorflow as tf

from jlml_tf.features import lomo as lomo_lib
from jlml_tf.training import distill

from test_trainer import colour_table, make_trainer, one_step_per_weight

taught = distill.normalised_distances  # the losses take the teacher's distances


def test_relational_loss_on_three_points_on_a_line():
    """Student 0, 1, 3: pair distances 1, 3, 2, mean 2 -> 0.5, 1.5, 1. Teacher 0, 2, 4: 2, 4, 2,
    mean 8/3 -> 0.75, 1.5, 0.75. Errors 0.25, 0, 0.25 -> Huber 0.03125, 0, 0.03125; mean 1/48."""
    student = tf.constant([[0.0], [1.0], [3.0]])
    teacher = tf.constant([[0.0], [2.0], [4.0]])
    loss = distill.relational_loss(student, taught(teacher))
    assert float(loss) == pytest.approx(1 / 48, rel=1e-5)


def test_relational_loss_is_linear_beyond_unit_error():
    """Student: four points at 0, one at 1. Of the 20 ordered pairs 12 are 0 apart and 8 are 1,
    mean 0.4 -> 0 or 2.5. Teacher: the unit vectors, every pair equally far -> 1. Errors: 12 of
    1 (Huber 0.5) and 8 of 1.5 (linear: 1.5 - 0.5 = 1); mean 0.7."""
    student = tf.constant([[0.0], [0.0], [0.0], [0.0], [1.0]])
    teacher = tf.constant(np.eye(5, dtype=np.float32))
    assert float(distill.relational_loss(student, taught(teacher))) == pytest.approx(0.7, abs=1e-5)


def test_relational_loss_ignores_scale_and_teaches_only_the_student():
    rng = np.random.default_rng(0)
    teacher = tf.constant(rng.normal(size=(6, 5)).astype(np.float32))
    loss = distill.relational_loss(3.0 * teacher, taught(teacher))
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    student = tf.Variable(rng.normal(size=(6, 4)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(teacher)
        loss = distill.relational_loss(student, taught(teacher))
    assert float(loss) > 0
    assert tape.gradient(loss, teacher) is None
    assert np.abs(tape.gradient(loss, student).numpy()).sum() > 0


def _kl_rows(teacher_logits, student_logits):
    p = np.exp(teacher_logits) / np.exp(teacher_logits).sum(axis=1, keepdims=True)
    log_q = student_logits - np.log(np.exp(student_logits).sum(axis=1, keepdims=True))
    return np.sum(p * (np.log(p) - log_q), axis=1)


def test_neighbour_loss_on_three_points_on_a_line():
    """Student 0, 1, 3 (mean distance 2), teacher 0, 2, 4 (mean 8/3); temperature 0.5 makes the
    scales 1 and 4/3. Each row's logits are -distance / scale over the two other points."""
    student = tf.constant([[0.0], [1.0], [3.0]])
    teacher = tf.constant([[0.0], [2.0], [4.0]])
    student_logits = -np.array([[1.0, 3.0], [1.0, 2.0], [3.0, 2.0]])
    teacher_logits = -np.array([[2.0, 4.0], [2.0, 2.0], [4.0, 2.0]]) / (4 / 3)
    expected = _kl_rows(teacher_logits, student_logits).mean()
    loss = distill.neighbour_loss(student, taught(teacher), temperature=0.5)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    loss = distill.neighbour_loss(2.5 * teacher, taught(teacher))
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_make_loss_binds_the_neighbours_temperature():
    student = tf.constant([[0.0], [1.0], [3.0]])
    teacher = tf.constant([[0.0], [2.0], [4.0]])
    assert float(distill.make_loss("neighbours", 0.5)(student, taught(teacher))) == pytest.approx(
        float(distill.neighbour_loss(student, taught(teacher), temperature=0.5)), rel=1e-6)
    assert float(distill.make_loss("neighbours")(student, taught(teacher))) == pytest.approx(
        float(distill.neighbour_loss(student, taught(teacher))), rel=1e-6)
    assert float(distill.make_loss("neighbours", 0.5)(student, taught(teacher))) != pytest.approx(
        float(distill.neighbour_loss(student, taught(teacher))), rel=1e-3)
    assert distill.make_loss("distance") is distill.relational_loss


@pytest.mark.parametrize("name, temperature, problem", [
    ("neighbours", 0.0, "finite and at least"), ("neighbours", float("inf"), "finite"),
    ("neighbours", 1e-9, "at least"), ("distance", 0.5, "distance loss has no temperature")])
def test_make_loss_refuses_a_temperature_the_loss_cannot_take(name, temperature, problem):
    with pytest.raises(ValueError, match=problem):
        distill.make_loss(name, temperature)


def test_neighbour_loss_teaches_only_the_student_with_finite_gradients():
    rng = np.random.default_rng(1)
    teacher = tf.constant(rng.normal(size=(6, 5)).astype(np.float32))
    student = tf.Variable(rng.normal(size=(6, 4)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(teacher)
        loss = distill.neighbour_loss(student, taught(teacher))
    gradient = tape.gradient(loss, student).numpy()
    assert float(loss) > 0 and tape.gradient(loss, teacher) is None
    assert np.isfinite(gradient).all() and np.abs(gradient).sum() > 0


def _table_images(identities=4, per_identity=3, height=64, width=32):
    table = colour_table(identities, per_identity, height, width)
    images = np.stack([np.asarray(tf.io.decode_png(b)) for b in table.images])
    return images, table.pids


def test_fitted_teacher_puts_each_identity_closer_to_itself():
    images, pids = _table_images()
    teacher = distill.fit(images, pids, batch_size=5)  # batches that do not divide 12
    assert teacher.folds == 1
    assert teacher.matrices[0].shape[0] == lomo_lib.feature_dim(distill.lomo_config(64, 32))
    (mapped,) = [f.numpy() for f in teacher.features(tf.constant(images, tf.float32))]
    d = np.linalg.norm(mapped[:, None] - mapped[None], axis=-1)
    same = pids[:, None] == pids[None, :]
    off = ~np.eye(len(pids), dtype=bool)
    assert d[same & off].max() < d[~same].min()


def test_fit_needs_two_identities_and_matching_labels():
    images, pids = _table_images(identities=1)
    with pytest.raises(ValueError, match="two identities"):
        distill.fit(images, pids)
    images, pids = _table_images()
    with pytest.raises(ValueError, match="N labels"):
        distill.fit(images, pids[:-1])


def test_teacher_file_round_trip_size_and_source_checks(tmp_path):
    images, pids = _table_images()
    source = distill.fingerprint([f"{i}.png" for i in range(len(pids))], pids)
    teacher = distill.fit(images, pids, source=source)
    path = distill.save(teacher, tmp_path / distill.TEACHER_FILE)
    loaded = distill.load(path, 64, 32, source)
    np.testing.assert_array_equal(loaded.matrices[0], teacher.matrices[0])
    assert loaded.folds == 1 and loaded.label_folds is None
    assert loaded.lomo == teacher.lomo and loaded.source == source
    assert [p.name for p in tmp_path.iterdir()] == [distill.TEACHER_FILE]  # no staging left
    with pytest.raises(ValueError, match=rf"{distill.TEACHER_FILE}.*64x32.*128x48"):
        distill.load(path, 128, 48, source)
    relabelled = distill.fingerprint([f"{i}.png" for i in range(len(pids))], pids[::-1])
    with pytest.raises(ValueError, match="other training images or labels"):
        distill.load(path, 64, 32, relabelled)


def test_deal_folds_shuffles_identities_into_near_equal_folds():
    labels = np.repeat(np.arange(10), 2)
    folds = distill.deal_folds(labels, 3, seed=0)
    assert folds.shape == (10,) and sorted(np.bincount(folds)) == [3, 3, 4]
    np.testing.assert_array_equal(folds, distill.deal_folds(labels[::-1], 3, seed=0))
    assert any(not np.array_equal(folds, distill.deal_folds(labels, 3, seed=s))
               for s in range(1, 4))


def test_cross_fitted_maps_are_each_fitted_without_their_fold():
    """Map k is exactly the single map fitted on the images outside fold k."""
    images, pids = _table_images(identities=6, per_identity=2)
    teacher = distill.fit(images, pids, folds=2, seed=3)
    np.testing.assert_array_equal(teacher.label_folds, distill.deal_folds(pids, 2, seed=3))
    assert teacher.folds == 2
    for k, matrix in enumerate(teacher.matrices):
        keep = teacher.label_folds[pids] != k
        (alone,) = distill.fit(images[keep], pids[keep]).matrices
        np.testing.assert_allclose(matrix, alone, rtol=1e-5, atol=1e-6)


def test_fit_needs_two_identities_in_every_map():
    images, pids = _table_images(identities=3, per_identity=2)
    assert distill.fit(images, pids, folds=3).folds == 3  # each map on two identities
    with pytest.raises(ValueError, match="3 identities in 4 fold"):
        distill.fit(images, pids, folds=4)  # an empty fold
    with pytest.raises(ValueError, match="2 identities in 2 fold"):
        distill.fit(images[:4], pids[:4], folds=2)  # a map on one identity


def _two_map_teacher(label_folds):
    cfg = distill.lomo_config(64, 32)
    rng = np.random.default_rng(0)
    maps = [rng.normal(size=(lomo_lib.feature_dim(cfg), 3)) for _ in range(2)]
    return distill.LomoTeacher(maps, cfg, "s", np.asarray(label_folds))


def test_cross_fitted_distances_take_each_row_from_the_map_blind_to_it():
    """Labels 0-3 in folds 0, 1, 1, 0; label 9 is beyond the split (--extra_train) and takes
    map 0. Each map's matrix is normalised over the whole batch before rows are picked."""
    teacher = _two_map_teacher([0, 1, 1, 0])
    images, _ = _table_images(identities=5, per_identity=1)
    images = tf.constant(images, tf.float32)
    labels = tf.constant([3, 9, 1, 0, 2], tf.int64)
    per_map = [taught(f).numpy() for f in teacher.features(images)]
    rows = teacher.distances(images, labels).numpy()
    for i, fold in enumerate([0, 0, 1, 0, 1]):
        np.testing.assert_allclose(rows[i], per_map[fold][i], rtol=1e-6)
    assert not np.allclose(per_map[0], per_map[1])
    single = distill.LomoTeacher(teacher.matrices[:1], teacher.lomo)
    np.testing.assert_allclose(single.distances(images, labels).numpy(), per_map[0], rtol=1e-6)


def test_relational_loss_teaches_the_mean_of_a_pairs_two_rows():
    """A cross-fitted teacher's matrix is not symmetric: the pair (i, j) is taught the mean of
    T[i, j] and T[j, i]."""
    rng = np.random.default_rng(2)
    student = tf.constant(rng.normal(size=(5, 3)).astype(np.float32))
    uneven = tf.constant(rng.uniform(0.5, 1.5, size=(5, 5)).astype(np.float32))
    mean = 0.5 * (uneven + tf.transpose(uneven))
    assert float(distill.relational_loss(student, uneven)) == pytest.approx(
        float(distill.relational_loss(student, mean)), rel=1e-6)
    errors = tf.abs(taught(student) - uneven) * (1.0 - tf.eye(5))
    unaveraged = tf.where(errors <= 1.0, 0.5 * tf.square(errors), errors - 0.5)
    assert float(distill.relational_loss(student, uneven)) != pytest.approx(
        float(tf.reduce_sum(unaveraged) / 20.0), rel=1e-4)


def test_cross_fitted_teacher_file_round_trip_and_fold_check(tmp_path):
    teacher = _two_map_teacher([1, 0, 0, 1])
    path = distill.save(teacher, tmp_path / distill.TEACHER_FILE)
    loaded = distill.load(path, 64, 32, "s", folds=2)
    for mine, theirs in zip(loaded.matrices, teacher.matrices, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(loaded.label_folds, [1, 0, 0, 1])
    with pytest.raises(ValueError, match=rf"{distill.TEACHER_FILE}.*2 fold\(s\), not this run's 1"):
        distill.load(path, 64, 32, "s")


def test_a_teacher_file_from_before_folds_loads_as_one_map(tmp_path):
    """Files written before cross-fitting hold one array named "matrix"."""
    cfg = distill.lomo_config(64, 32)
    matrix = np.ones((lomo_lib.feature_dim(cfg), 2), np.float32)
    path = tmp_path / distill.TEACHER_FILE
    np.savez(path, matrix=matrix, lomo=np.array(json.dumps(cfg.to_dict())), source=np.array("s"))
    loaded = distill.load(path, 64, 32, "s")
    assert loaded.folds == 1
    np.testing.assert_array_equal(loaded.matrices[0], matrix)
    with pytest.raises(ValueError, match=r"1 fold\(s\), not this run's 2"):
        distill.load(path, 64, 32, "s", folds=2)


def test_a_teacher_file_with_maps_but_no_folds_is_refused_naming_it(tmp_path):
    teacher = _two_map_teacher([1, 0, 0, 1])
    path = tmp_path / distill.TEACHER_FILE
    np.savez(path, matrix_0=teacher.matrices[0], matrix_1=teacher.matrices[1],
             lomo=np.array(json.dumps(teacher.lomo.to_dict())), source=np.array("s"))
    with pytest.raises(ValueError, match=f"{distill.TEACHER_FILE}.*fold of each label"):
        distill.load(path, 64, 32, "s", folds=2)


def test_a_teacher_takes_a_list_of_maps():
    cfg = distill.lomo_config(64, 32)
    with pytest.raises(ValueError, match="list of maps"):
        distill.LomoTeacher(np.ones((lomo_lib.feature_dim(cfg), 2), np.float32), cfg)


def test_fingerprint_ignores_order_and_sees_every_pair():
    names, labels = ["a.png", "b.png", "c.png"], [0, 1, 1]
    assert distill.fingerprint(names, labels) == distill.fingerprint(names[::-1], labels[::-1])
    assert distill.fingerprint(names, labels) != distill.fingerprint(names, [0, 1, 0])
    assert distill.fingerprint(names, labels) != distill.fingerprint(names[:2], labels[:2])


def test_distill_term_is_weighted_into_the_loss_and_trains_the_backbone(tmp_path,
                                                                         tiny_model_config):
    """Same weights, same batch: the loss grows by exactly weight x the distillation term,
    cross-entropy is unchanged, and the shared stem's update differs."""
    teacher = distill.fit(*_table_images(identities=4, per_identity=2))
    steps, stems = one_step_per_weight(tmp_path, tiny_model_config,
                                       colour_table(identities=4, per_identity=2),
                                       "distill_weight", (0.0, 3.0), teacher=teacher)
    assert "distill" not in steps[0.0] and steps[3.0]["distill"] > 0
    assert steps[3.0]["ce_global"] == pytest.approx(steps[0.0]["ce_global"], rel=1e-5)
    assert steps[3.0]["loss"] == pytest.approx(steps[0.0]["loss"] + 3.0 * steps[3.0]["distill"],
                                               rel=1e-5)
    assert not np.allclose(stems[0.0], stems[3.0])


def test_distill_temperature_reaches_the_step(tmp_path, tiny_model_config):
    """Same weights, same batch, weight 1: only the distillation term changes with the
    neighbours' temperature."""
    teacher = distill.fit(*_table_images(identities=4, per_identity=2))
    steps, _ = one_step_per_weight(tmp_path, tiny_model_config,
                                   colour_table(identities=4, per_identity=2),
                                   "distill_temperature", (0.1, 0.5), teacher=teacher,
                                   distill_weight=1.0)
    assert steps[0.5]["ce_global"] == pytest.approx(steps[0.1]["ce_global"], rel=1e-5)
    assert steps[0.5]["distill"] != pytest.approx(steps[0.1]["distill"], rel=1e-3)


def test_distill_weight_without_a_teacher_is_refused(tmp_path, tiny_model_config):
    with pytest.raises(ValueError, match="no LOMO teacher"):
        make_trainer(tmp_path, tiny_model_config, distill_weight=1.0)


@pytest.mark.parametrize("settings", [dict(batch_size=2),
                                      dict(sampler="camera", cameras_per_batch=1)])
def test_distillation_needs_pairs_within_each_replica(tmp_path, tiny_model_config, settings):
    """Two images give one pair (nothing to rank); one camera group per batch gives no
    cross-camera pair."""
    teacher = distill.fit(*_table_images())
    with pytest.raises(ValueError, match="at least 3 images per replica"):
        make_trainer(tmp_path, tiny_model_config, distill_weight=1.0, teacher=teacher,
                     **settings)
