"""Per-camera batch-norm calibration (jlml_tf/inference/camera_bn.py) and the features it gives."""
import types

import keras
import numpy as np
import pytest

from jlml_tf.config import ModelConfig
from jlml_tf.inference import camera_bn, eval_trial
from jlml_tf.modeling import jlml
from jlml_tf.modeling.fused_batch_norm import FusedBatchNormalization
import run_fixtures as fixtures


def one_batch_norm_model():
    inputs = keras.Input((3,))
    inner = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(momentum=0.9)])
    return keras.Model(inputs, inner(inputs)), inner.layers[0]


def test_batch_norm_layers_are_found_once_in_nested_models_fused_ones_included():
    cfg = ModelConfig(input_height=32, input_width=16, stem_filters=4, global_widths=(4,),
                      local_widths=(2,), units_per_stage=(1,), stage_strides=(1,),
                      feature_dim=8, num_classes=3, feature_bn=True, fused_batch_norm=True)
    _, embedding = jlml.build_jlml(cfg)
    wrapped = jlml.with_l2_normalization(embedding)
    expected = [l for l in embedding.layers if isinstance(l, keras.layers.BatchNormalization)]
    # stem 1 + global unit 3 convs + projection 1 + 4 stripes x (3 + 1) + 2 feature BNs
    assert len(expected) == 1 + 4 + cfg.num_stripes * 4 + 2
    found = camera_bn.batch_norm_layers(wrapped)
    assert [id(l) for l in found] == [id(l) for l in expected]


def test_calibration_sets_the_statistics_of_all_batches_weighted_by_size():
    model, layer = one_batch_norm_model()
    rng = np.random.default_rng(0)
    batches = [rng.normal(5.0, 2.0, (3, 3)).astype("float32"),
               rng.normal(-1.0, 0.5, (5, 3)).astype("float32")]
    assert camera_bn.calibrate(model, batches) == 8
    everything = np.concatenate(batches)
    np.testing.assert_allclose(np.array(layer.moving_mean), everything.mean(0), rtol=1e-5)
    # the variance over all 8 images, spread between the two batches' means included
    np.testing.assert_allclose(np.array(layer.moving_variance), everything.var(0), rtol=1e-5)
    assert layer.momentum == 0.9  # the training momentum is back


def test_fused_calibration_on_batches_of_one_person_each_gives_the_variance_over_all():
    # Images listed person by person: each batch holds one "person", so the average of the
    # batch variances would be about 0.1 of the true one. 4x3 maps: 12 positions per image.
    inputs = keras.Input((4, 3, 2))
    layer = FusedBatchNormalization(momentum=0.99)
    model = keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(1)
    people = [rng.normal(centre, 0.3, (4, 4, 3, 2)).astype("float32")
              for centre in (-2.0, 0.0, 1.0, 3.0)]
    assert camera_bn.calibrate(model, people) == 16
    everything = np.concatenate(people).reshape(-1, 2)
    np.testing.assert_allclose(np.array(layer.moving_mean), everything.mean(0), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(np.array(layer.moving_variance), everything.var(0), rtol=1e-4)


def test_a_model_built_with_training_groups_is_calibrated_over_whole_batches():
    inputs = keras.Input((3,))
    layer = FusedBatchNormalization(momentum=0.9, group_size=2)
    model = keras.Model(inputs, layer(inputs))
    batch = np.random.default_rng(3).normal(0.0, 1.0, (5, 3)).astype("float32")  # 5: no groups
    assert camera_bn.calibrate(model, [batch]) == 5
    np.testing.assert_allclose(np.array(layer.moving_variance), batch.var(0), rtol=1e-5)
    assert layer.group_size == 2  # back for training


def test_calibrated_to_restores_the_trained_statistics_also_after_an_error():
    model, layer = one_batch_norm_model()
    layer.moving_mean.assign([1.0, 2.0, 3.0])
    batch = np.full((4, 3), 7.0, "float32")
    with camera_bn.calibrated_to(model, [batch]) as count:
        assert count == 4
        np.testing.assert_allclose(np.array(layer.moving_mean), [7.0, 7.0, 7.0])
    np.testing.assert_allclose(np.array(layer.moving_mean), [1.0, 2.0, 3.0])
    with pytest.raises(RuntimeError):
        with camera_bn.calibrated_to(model, [batch]):
            raise RuntimeError("boom")
    np.testing.assert_allclose(np.array(layer.moving_mean), [1.0, 2.0, 3.0])


def test_no_calibration_batch_keeps_the_statistics_and_no_batch_norm_is_an_error():
    model, layer = one_batch_norm_model()
    layer.moving_variance.assign([4.0, 4.0, 4.0])
    assert camera_bn.calibrate(model, []) == 0
    np.testing.assert_allclose(np.array(layer.moving_variance), [4.0, 4.0, 4.0])
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="no_bn")
    with pytest.raises(ValueError, match="no_bn: no batch-norm layer.*--camera_bn"):
        camera_bn.calibrate(dense, [np.zeros((1, 3), "float32")])


def test_calibration_rows_per_camera_from_the_training_split_or_the_test_images_shuffled():
    table = types.SimpleNamespace(camids=np.array([0, 1, 0, 1, 2, 0, 0, 0, 0, 0]))
    trial = types.SimpleNamespace(train=np.array([0, 1, 3]), query=np.array([2, 4]),
                                  gallery=np.array([5, 6, 7, 8, 9]),
                                  multi_query=np.array([4], np.int64))
    train = camera_bn.calibration_rows("train", table, trial)
    assert {c: sorted(r.tolist()) for c, r in train.items()} == {0: [0], 1: [1, 3]}
    # "test": the query, gallery and multi-query images only, never the training split
    test = camera_bn.calibration_rows("test", table, trial)
    assert {c: sorted(r.tolist()) for c, r in test.items()} == {0: [2, 5, 6, 7, 8, 9], 2: [4]}
    orders = {tuple(camera_bn.calibration_rows("test", table, trial, seed=seed)[0])
              for seed in range(5)}
    assert len(orders) > 1  # shuffled (by seed), so batches mix the people of a camera
    with pytest.raises(ValueError, match="'off'.*train, test"):
        camera_bn.calibration_rows("off", table, trial)


@pytest.fixture(scope="module")
def tiny_data_and_model(tmp_path_factory):
    import jlml_tf_datasets

    data = jlml_tf_datasets.load("synthetic", None, config="tiny",
                                 data_dir=str(tmp_path_factory.mktemp("camera_bn")))
    cfg = fixtures.tiny_config(num_classes=6)
    keras.utils.set_random_seed(0)
    _, embedding = jlml.build_jlml(cfg)
    return data, cfg, embedding


def test_features_by_camera_use_each_cameras_statistics_and_leave_the_model_as_it_was(
        tiny_data_and_model):
    data, cfg, model = tiny_data_and_model
    table = data.table
    rows = np.arange(len(table))
    cams = table.camids[rows]
    assert len(np.unique(cams)) >= 2
    first, other = np.unique(cams)[:2]
    assert np.sum(cams == first) >= camera_bn.MIN_IMAGES
    calibration = {int(first): rows[cams == first]}  # `other` has none: trained statistics
    trained = [np.array(l.moving_mean) for l in camera_bn.batch_norm_layers(model)]
    got = eval_trial.extract_features_by_camera(model, table, rows, calibration, 64, 32,
                                                batch_size=8, verbose=0)
    after = [np.array(l.moving_mean) for l in camera_bn.batch_norm_layers(model)]
    for a, b in zip(trained, after):
        np.testing.assert_array_equal(a, b)
    plain = eval_trial.extract_features(model, table, rows, 64, 32, verbose=0)
    np.testing.assert_allclose(got[cams == other], plain[cams == other], atol=1e-5)
    assert not np.allclose(got[cams == first], plain[cams == first], atol=1e-3)
    with camera_bn.calibrated_to(model, image_batches(data, rows[cams == first], 8)):
        by_hand = eval_trial.extract_features(model, table, rows[cams == first], 64, 32,
                                              verbose=0)
    np.testing.assert_allclose(got[cams == first], by_hand, atol=1e-4)
    # too few calibration images: the camera keeps the trained statistics
    few = {int(first): rows[cams == first][:camera_bn.MIN_IMAGES - 1]}
    kept = eval_trial.extract_features_by_camera(model, table, rows, few, 64, 32,
                                                 batch_size=8, verbose=0)
    np.testing.assert_allclose(kept, plain, atol=1e-5)


def image_batches(data, rows, batch_size):
    from jlml_tf.data import pipeline

    return [b.numpy() for b in pipeline.eval_dataset(data.table, rows, 64, 32, batch_size)]
