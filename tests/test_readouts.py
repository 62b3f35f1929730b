"""benchmarks/readouts.py: readouts on hand-made features, the deployed one against the
deployed model, and the table's paired differences."""
import dataclasses

import numpy as np
import pytest

from conftest import load_benchmark

readouts = load_benchmark("readouts")


def _views():
    one = {"global_pre": np.array([[3.0, 4.0]]), "global_post": np.array([[300.0, 400.0]]),
           "local_pre": np.array([[0.0, 2.0]]), "local_post": np.array([[1.0, 0.0]])}
    mirror = {k: v.copy() for k, v in one.items()}
    return [one, mirror]


def test_per_branch_normalisation_weights_the_branches_equally():
    # after BNNeck the global feature is 500 times longer than the local one
    plain = readouts.readout(_views(), "post", ("global", "local"), per_branch=False)
    each = readouts.readout(_views(), "post", ("global", "local"), per_branch=True)
    np.testing.assert_allclose(plain, [[300, 400, 1, 0]] / np.sqrt(250001.0), rtol=1e-12)
    np.testing.assert_allclose(each, [[0.6, 0.8, 1.0, 0.0]] / np.sqrt(2.0), rtol=1e-12)


def test_flip_normalises_each_view_before_summing():
    one, mirror = _views()
    mirror["global_pre"] = np.array([[40.0, -30.0]])  # the mirror's feature is 10x longer
    got = readouts.readout([one, mirror], "pre", ("global",), per_branch=False)
    expected = np.array([[0.6 + 0.8, 0.8 - 0.6]])  # unit(3,4) + unit(40,-30), then unit
    np.testing.assert_allclose(got, expected / np.linalg.norm(expected), rtol=1e-12)


def test_deployed_readout_is_the_deployed_embedding(tiny_model_config):
    from jlml_tf.modeling import jlml

    cfg = dataclasses.replace(tiny_model_config, feature_bn=True)
    training_model, embedding_model = jlml.build_jlml(cfg)
    for branch in ("global", "local"):  # BNNeck statistics that change the features
        bn = training_model.get_layer(f"{branch}_feature_bn")
        bn.moving_mean.assign(np.linspace(-1, 1, cfg.feature_dim).astype(np.float32))
        bn.gamma.assign(np.linspace(0.5, 2, cfg.feature_dim).astype(np.float32))
    x = np.random.default_rng(0).uniform(0, 255, (3, cfg.input_height, cfg.input_width, 3)).astype(np.float32)
    model = readouts.branch_feature_model(training_model)
    views = [{k: v.numpy() for k, v in model(pixels, training=False).items()}
             for pixels in (x, x[:, :, ::-1])]
    deployed = jlml.with_flip_test(jlml.with_l2_normalization(embedding_model))(x).numpy()
    np.testing.assert_allclose(readouts.readout(views, *readouts.READOUTS[readouts.DEPLOYED]),
                               deployed, atol=1e-5)
    before = readouts.readout(views, "pre", ("global", "local"), False)
    assert np.abs(before - deployed).max() > 1e-2  # the BNNeck readouts differ


def test_table_pairs_each_readout_with_the_deployed_one():
    other = "global branch after BNNeck"
    per_trial = {f"trial{t}": {readouts.DEPLOYED: {"rank1": d, "map": d},
                               other: {"rank1": o, "map": o}}
                 for t, (d, o) in enumerate([(0.40, 0.42), (0.50, 0.51), (0.45, 0.48)])}
    rows = {line.split(" | ")[0][2:]: line for line in readouts.markdown(per_trial).splitlines()
            if line.startswith("| ") and "---" not in line}
    assert rows[readouts.DEPLOYED].endswith("| - |")
    # differences +2, +1, +3: mean +2.0, t(0.975, 2) = 4.303, sd 1: half width 2.48
    assert "+2.0 [-0.5, +4.5]" in rows[other]
    assert "| 45.0 ± 4.1 |" in rows[readouts.DEPLOYED]  # population std, as protocol.aggregate_trials


def test_missing_trial_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        readouts.main([f"--run_dir={tmp_path}", "--trials=0,3", f"--out={tmp_path}/o.json"])
    assert f"--run_dir={tmp_path}: no trial_NN/config.json for trials [0, 3]" in capsys.readouterr().err


def test_single_branch_model_is_refused_by_name(tiny_model_config):
    from jlml_tf.modeling import jlml

    cfg = dataclasses.replace(tiny_model_config, feature_bn=True, branches="global")
    with pytest.raises(ValueError, match="two-branch model trained with --feature_bn.*local_feature"):
        readouts.branch_feature_model(jlml.build_jlml(cfg)[0])


def test_table_orders_trials_by_index():
    per_trial = {f"trial{t}": {readouts.DEPLOYED: {"rank1": 0.5, "map": 0.5}} for t in (10, 2, 1)}
    assert readouts.markdown(per_trial).startswith("Trials: trial1, trial2, trial10")
