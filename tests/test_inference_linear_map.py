"""RUN/linear_map.npz (jlml_tf/inference/linear_map.py): a fused map's checks."""
import numpy as np
import pytest

from jlml_tf.features import lomo
from jlml_tf.inference import linear_map

CFG = lomo.LomoConfig(height=64, width=32, retinex="none")


def save_fused(path, fusion, rows=None):
    rows = rows or 32 + lomo.feature_dim(CFG)
    source = {"metric": "xqda_map", "flip_test": False, linear_map.FUSION_KEY: fusion}
    return linear_map.save(linear_map.LinearMap(np.ones((rows, 3), np.float32), 5.0, source),
                           path)


def test_a_fused_map_maps_the_embedding_and_lomo_at_its_size(tmp_path):
    loaded = linear_map.load(save_fused(tmp_path / "m.npz", {"weight": 1.0,
                                                             "lomo": CFG.to_dict()}))
    assert loaded.input_dim(32) == 32 + lomo.feature_dim(CFG)
    assert linear_map.lomo_config(loaded.fusion) == CFG
    linear_map.check_applies(loaded, "m.npz", 32, False, input_size=(64, 32))
    with pytest.raises(ValueError, match="--linear_map=m.npz: fitted on LOMO of 64x32 images, "
                                         "the model takes 128x48"):
        linear_map.check_applies(loaded, "m.npz", 32, False, input_size=(128, 48))
    with pytest.raises(ValueError, match="maps .*-d vectors, the model has 16-d embeddings and"):
        linear_map.check_applies(loaded, "m.npz", 16, False, input_size=(64, 32))


@pytest.mark.parametrize("fusion,message", [
    ({"weight": 1.0, "lomo": {**CFG.to_dict(), "retinex": "msr"}},
     "Retinex 'msr'.*fit it with --fuse_lomo=none"),
    ({"weight": 1.0}, "is not one `evaluate --fuse_lomo --save_linear_map` writes"),
    ({"weight": 1.0, "lomo": {"size": 3}}, "is not one `evaluate --fuse_lomo"),
    ({"lomo": CFG.to_dict()}, "is not one `evaluate --fuse_lomo"),
    ({"weight": 0.0, "lomo": CFG.to_dict()}, "fusion weight 0.0"),
])
def test_a_fused_map_the_export_cannot_build_is_refused_naming_the_file(tmp_path, fusion,
                                                                        message):
    path = save_fused(tmp_path / "bad.npz", fusion)
    with pytest.raises(ValueError, match=f"bad.npz: .*{message}"):
        linear_map.load(path)
