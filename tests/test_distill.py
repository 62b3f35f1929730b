"""Distillation from LOMO + XQDA: the relational loss on hand-made points, the teacher's fit,
its file, and its term in the training step."""
import numpy as np
import pytest
import tensorflow as tf

from jlml_tf.features import lomo as lomo_lib
from jlml_tf.training import distill

from test_trainer import colour_table, make_trainer, one_step_per_weight


def test_relational_loss_on_three_points_on_a_line():
    """Student 0, 1, 3: pair distances 1, 3, 2, mean 2 -> 0.5, 1.5, 1. Teacher 0, 2, 4: 2, 4, 2,
    mean 8/3 -> 0.75, 1.5, 0.75. Errors 0.25, 0, 0.25 -> Huber 0.03125, 0, 0.03125; mean 1/48."""
    student = tf.constant([[0.0], [1.0], [3.0]])
    teacher = tf.constant([[0.0], [2.0], [4.0]])
    assert float(distill.relational_loss(student, teacher)) == pytest.approx(1 / 48, rel=1e-5)


def test_relational_loss_is_linear_beyond_unit_error():
    """Student: four points at 0, one at 1. Of the 20 ordered pairs 12 are 0 apart and 8 are 1,
    mean 0.4 -> 0 or 2.5. Teacher: the unit vectors, every pair equally far -> 1. Errors: 12 of
    1 (Huber 0.5) and 8 of 1.5 (linear: 1.5 - 0.5 = 1); mean 0.7."""
    student = tf.constant([[0.0], [0.0], [0.0], [0.0], [1.0]])
    teacher = tf.constant(np.eye(5, dtype=np.float32))
    assert float(distill.relational_loss(student, teacher)) == pytest.approx(0.7, abs=1e-5)


def test_relational_loss_ignores_scale_and_teaches_only_the_student():
    rng = np.random.default_rng(0)
    teacher = tf.constant(rng.normal(size=(6, 5)).astype(np.float32))
    assert float(distill.relational_loss(3.0 * teacher, teacher)) == pytest.approx(0.0, abs=1e-6)
    student = tf.Variable(rng.normal(size=(6, 4)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(teacher)
        loss = distill.relational_loss(student, teacher)
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
    assert float(distill.neighbour_loss(student, teacher, temperature=0.5)) == pytest.approx(
        expected, rel=1e-5)
    assert float(distill.neighbour_loss(2.5 * teacher, teacher)) == pytest.approx(0.0, abs=1e-6)


def test_make_loss_binds_the_neighbours_temperature():
    student = tf.constant([[0.0], [1.0], [3.0]])
    teacher = tf.constant([[0.0], [2.0], [4.0]])
    assert float(distill.make_loss("neighbours", 0.5)(student, teacher)) == pytest.approx(
        float(distill.neighbour_loss(student, teacher, temperature=0.5)), rel=1e-6)
    assert float(distill.make_loss("neighbours")(student, teacher)) == pytest.approx(
        float(distill.neighbour_loss(student, teacher)), rel=1e-6)
    assert float(distill.make_loss("neighbours", 0.5)(student, teacher)) != pytest.approx(
        float(distill.neighbour_loss(student, teacher)), rel=1e-3)
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
        loss = distill.neighbour_loss(student, teacher)
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
    assert teacher.matrix.shape[0] == lomo_lib.feature_dim(distill.lomo_config(64, 32))
    mapped = teacher.features(tf.constant(images, tf.float32)).numpy()
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
    np.testing.assert_array_equal(loaded.matrix, teacher.matrix)
    assert loaded.lomo == teacher.lomo and loaded.source == source
    assert [p.name for p in tmp_path.iterdir()] == [distill.TEACHER_FILE]  # no staging left
    with pytest.raises(ValueError, match=rf"{distill.TEACHER_FILE}.*64x32.*128x48"):
        distill.load(path, 128, 48, source)
    relabelled = distill.fingerprint([f"{i}.png" for i in range(len(pids))], pids[::-1])
    with pytest.raises(ValueError, match="other training images or labels"):
        distill.load(path, 64, 32, relabelled)


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
