"""--init_from: feature weights copied from another run, classifiers left alone."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from jlml_tf.inference import run_dir as run_dir_lib
from jlml_tf.training import warm_start
from jlml_tf.modeling import jlml


def _saved_run(tmp_path, cfg):
    model, _ = jlml.build_jlml(cfg)
    run_dir_lib.write_config(tmp_path, cfg, train={}, data={})
    tf.train.Checkpoint(model=model).save(str(tmp_path / run_dir_lib.CHECKPOINT_DIR / "ckpt"))
    return model


@pytest.mark.parametrize("scale", [1, 2], ids=["same_input", "twice_the_input"])
def test_copies_every_feature_weight_and_no_classifier(tmp_path, tiny_model_config, scale):
    """Other identities, and (the network being convolutional up to its pooling) another
    input size: every feature weight is copied, the classifiers are new."""
    source = _saved_run(tmp_path, tiny_model_config)
    target_cfg = dataclasses.replace(tiny_model_config, num_classes=9,
                                     input_height=tiny_model_config.input_height * scale,
                                     input_width=tiny_model_config.input_width * scale)
    target, _ = jlml.build_jlml(target_cfg)
    copied = warm_start.copy_feature_weights(tmp_path, target, target_cfg)

    heads = jlml.classifier_layers(target)
    feature_layers = [l for l in target.layers if l.name not in heads and l.weights]
    assert copied == sum(len(l.weights) for l in feature_layers)
    for layer in feature_layers:
        for got, want in zip(layer.get_weights(), source.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(got, want)
    assert all(h.kernel.shape[-1] == 9 for h in heads.values())


def test_refuses_a_different_architecture(tmp_path, tiny_model_config):
    _saved_run(tmp_path, tiny_model_config)
    target_cfg = dataclasses.replace(tiny_model_config, feature_dim=32)
    target, _ = jlml.build_jlml(target_cfg)
    with pytest.raises(ValueError, match="feature_dim"):
        warm_start.copy_feature_weights(tmp_path, target, target_cfg)


def test_continuation_copies_the_classifiers_too(tmp_path, tiny_model_config):
    source = _saved_run(tmp_path, tiny_model_config)
    target, _ = jlml.build_jlml(tiny_model_config)
    copied = warm_start.copy_feature_weights(tmp_path, target, tiny_model_config,
                                             classifiers=True)
    assert copied == sum(len(l.weights) for l in target.layers if l.weights)
    for name in jlml.classifier_layers(target):
        for got, want in zip(target.get_layer(name).get_weights(),
                             source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)


def test_continuation_refuses_other_identities(tmp_path, tiny_model_config):
    _saved_run(tmp_path, tiny_model_config)
    target_cfg = dataclasses.replace(tiny_model_config, num_classes=9)
    target, _ = jlml.build_jlml(target_cfg)
    with pytest.raises(ValueError, match="init_classifiers.*identities"):
        warm_start.copy_feature_weights(tmp_path, target, target_cfg, classifiers=True)
