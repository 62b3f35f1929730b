"""Mixup in the training step: blends within groups, keyed draws, the blended cross-entropy,
the teacher scoring the blends, and the settings it refuses."""
import types

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from jlml_tf.training import distill, losses, mixup
from jlml_tf.training.trainer import Trainer, TrainConfig

from test_trainer import colour_table, make_trainer

SEED = tf.constant([3, 7], tf.int64)


def constant_images(count=8):
    """Image i is filled with the value i, so a blend's pixels tell its two sources apart."""
    return tf.constant(np.arange(count, dtype=np.float32)[:, None, None, None]
                       * np.ones((1, 4, 2, 3), np.float32))


def test_each_image_is_blended_with_a_partner_of_its_own_group():
    images, labels = constant_images(), tf.range(8)
    blended, partners, weights = mixup.mix(images, labels, 1.0, SEED, group_size=4)
    blended, partners, weights = blended.numpy(), partners.numpy(), weights.numpy()
    assert np.all((weights >= 0) & (weights <= 1))
    assert np.array_equal(partners // 4, np.arange(8) // 4)  # the partner's group is its own
    for start in (0, 4):  # each group's partners are a permutation of the group
        assert sorted(partners[start:start + 4]) == list(range(start, start + 4))
    expected = weights * np.arange(8) + (1 - weights) * partners
    np.testing.assert_allclose(blended[:, 0, 0, 0], expected, rtol=1e-6)
    assert np.all(blended == blended[:, :1, :1, :1])  # every pixel of an image alike


def test_the_draw_is_a_function_of_the_seed():
    images, labels = constant_images(), tf.range(8)
    first = [t.numpy() for t in mixup.mix(images, labels, 1.0, SEED, 4)]
    again = [t.numpy() for t in mixup.mix(images, labels, 1.0, SEED, 4)]
    other = [t.numpy() for t in mixup.mix(images, labels, 1.0, SEED + 1, 4)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[2], other[2])


def test_a_batch_of_partial_groups_is_refused():
    with pytest.raises(tf.errors.InvalidArgumentError, match="whole groups of 3"):
        mixup.mix(constant_images(8), tf.range(8), 1.0, SEED, group_size=3)


def test_beta_one_is_uniform_and_tiny_alphas_stay_finite():
    uniform = mixup.beta(SEED, 1.0, [20000]).numpy()
    assert abs(uniform.mean() - 0.5) < 0.01 and abs(uniform.var() - 1 / 12) < 0.005
    assert np.histogram(uniform, bins=10, range=(0, 1))[0].min() > 1800  # flat: 2000 a bin
    middle = mixup.beta(SEED, 0.4, [20000]).numpy()  # Beta(a, a): variance 1 / (4 (2a + 1))
    assert abs(middle.mean() - 0.5) < 0.01 and abs(middle.var() - 1 / 7.2) < 0.005
    tiny = mixup.beta(SEED, 1e-3, [2000]).numpy()
    assert np.all(np.isfinite(tiny)) and np.all((tiny >= 0) & (tiny <= 1))
    assert np.mean((tiny < 0.01) | (tiny > 0.99)) > 0.9  # small alphas blend little


def test_blended_cross_entropy_is_the_weighted_sum_of_the_two_labels():
    logits = {"global": tf.constant([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])}
    labels, partners = tf.constant([0, 2]), tf.constant([1, 0])
    weights = tf.constant([0.25, 1.0])
    blended = losses.per_example_cross_entropy(labels, logits, mixup=(partners, weights))
    own = losses.per_example_cross_entropy(labels, logits)["global"].numpy()
    other = losses.per_example_cross_entropy(partners, logits)["global"].numpy()
    np.testing.assert_allclose(blended["global"].numpy(),
                               [0.25 * own[0] + 0.75 * other[0], own[1]], rtol=1e-6)


def test_problem_names_the_settings_mixup_cannot_go_with():
    assert mixup.problem(0.0, 1, False) is None
    assert "--triplet_weight=0" in mixup.problem(1.0, 1, False)
    assert "--distill_lomo_folds=1" in mixup.problem(0.0, 2, False)
    assert "--nojit_compile" in mixup.problem(0.0, 1, True)


def test_step_keys_differ_by_step_and_replica_and_from_the_pipelines():
    keys = {tuple(mixup.step_key(3, step, replica).numpy()) for step in (0, 1)
            for replica in (0, 1)}
    assert len(keys) == 4
    assert tuple(mixup.step_key(3, 0, 0).numpy()) != (3, 0)


class RecordingTeacher:
    """A stand-in distill.LomoTeacher that keeps the images it was asked to score."""
    folds = 1

    def __init__(self, shape):
        self.seen = tf.Variable(tf.zeros(shape), trainable=False)

    def distances(self, images, labels):
        self.seen.assign(images)
        return distill.normalised_distances(tf.reshape(images, [tf.shape(images)[0], -1]))


def test_the_step_blends_the_batch_the_teacher_scores(tmp_path, tiny_model_config):
    """The teacher scores exactly mixup.mix of the batch, keyed by (seed, step, replica 0), with
    the camera groups of 4 as partner groups; accuracy counts each blend's larger share."""
    table = colour_table(identities=4, per_identity=2)
    table = type(table)(table.images, table.pids, np.arange(len(table)) % 2, table.filenames)
    teacher = RecordingTeacher([8, tiny_model_config.input_height,
                                tiny_model_config.input_width, 3])
    trainer = make_trainer(tmp_path, tiny_model_config, epochs=1, table=table, teacher=teacher,
                           distill_weight=1.0, mixup_alpha=1.0, sampler="camera",
                           cameras_per_batch=2)
    images, labels = next(iter(trainer._dataset(0, 0)))
    for step in (0, 1):
        expected, partners, weights = mixup.mix(images, labels, 1.0, mixup.step_key(3, step, 0),
                                                group_size=4)
        logits = trainer.model(expected, training=True)  # as the step's forward pass sees it
        out = trainer.train_step((images, labels))
        np.testing.assert_allclose(teacher.seen.numpy(), expected.numpy(), rtol=1e-5)
        assert not np.allclose(teacher.seen.numpy(), images.numpy())
        top = np.where(weights.numpy() >= 0.5, labels.numpy(), partners.numpy())
        for head in ("global", "local"):
            hits = np.argmax(logits[head].numpy(), axis=1) == top
            assert float(out[f"acc_{head}"]) == pytest.approx(hits.mean())


def test_the_trainer_refuses_mixup_with_triplets(tmp_path, tiny_model_config):
    with pytest.raises(ValueError, match=r"--mixup_alpha=1.0: .*--triplet_weight=0"):
        make_trainer(tmp_path, tiny_model_config, mixup_alpha=1.0, triplet_weight=1.0,
                     sampler="pk", images_per_identity=2)


@pytest.mark.parametrize("batch, sampler, cameras, replicas, group", [
    (8, "camera", 1, 2, 4),  # a replica's half of one camera's 8
    (12, "camera", 2, 4, 3),  # camera groups of 6, shares of 3
    (12, "camera", 3, 2, 2),  # camera groups of 4, shares of 6: gcd 2
    (8, "random", 1, 2, 4),
    (4, "camera", 2, 4, 1)])  # shares of one image: refused
def test_partner_groups_cross_neither_a_camera_group_nor_a_replica(batch, sampler, cameras,
                                                                   replicas, group):
    fake = types.SimpleNamespace(
        train_cfg=TrainConfig(batch_size=batch, sampler=sampler, cameras_per_batch=cameras,
                              mixup_alpha=1.0),
        teacher=None, strategy=types.SimpleNamespace(num_replicas_in_sync=replicas))
    fake._mixup_group = types.MethodType(Trainer._mixup_group, fake)
    assert fake._mixup_group() == group
    if group < 2:
        with pytest.raises(ValueError, match=r"of 1 image .*--cameras_per_batch=2.*--batch_size"):
            Trainer._check_mixup(fake)
    else:
        Trainer._check_mixup(fake)


def test_the_command_refuses_mixup_with_triplets_or_folds(parse):
    with pytest.raises(flags.IllegalFlagValueError, match=r"--mixup_alpha=0.4: .*triplet"):
        parse("--mixup_alpha=0.4", "--triplet_weight=1", "--sampler=pk")
    with pytest.raises(flags.IllegalFlagValueError, match=r"--distill_lomo_folds=1"):
        parse("--mixup_alpha=0.4", "--distill_lomo_weight=1", "--distill_lomo_folds=2",
              "--random_erasing=0")
    with pytest.raises(flags.IllegalFlagValueError, match=r"--nojit_compile"):
        parse("--mixup_alpha=0.4", "--jit_compile")
    # folds count only with a teacher
    assert parse("--mixup_alpha=0.4", "--distill_lomo_folds=2").mixup_alpha == 0.4
