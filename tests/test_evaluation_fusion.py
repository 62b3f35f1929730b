"""Feature-level fusion: [w * embedding, hand-crafted] (jlml_tf/evaluation/fusion.py)."""
import numpy as np
import pytest

from jlml_tf.evaluation import fusion, protocol


def test_concatenate_weighs_the_embedding_block_only():
    embedding = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    handcrafted = np.array([[3.0], [4.0]])
    fused = fusion.concatenate(embedding, handcrafted, 0.5)
    np.testing.assert_array_equal(fused, [[0.5, 0.0, 3.0], [0.0, 0.5, 4.0]])
    assert fused.dtype == np.float64
    np.testing.assert_array_equal(fusion.concatenate(embedding, handcrafted)[:, :2], embedding)


def test_concatenate_rejects_rows_that_do_not_pair_up_and_bad_weights():
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 1\)"):
        fusion.concatenate(np.zeros((3, 2)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="must be > 0"):
        fusion.concatenate(np.zeros((2, 2)), np.zeros((2, 1)), 0.0)


def test_fused_features_tell_apart_people_each_part_alone_confuses():
    # Four people seen by two cameras. The embedding cannot tell 1 from 2 (same vector), the
    # hand-crafted features cannot tell 3 from 4; each alone ranks one wrong person first for
    # one query of the confused pair (ties go to the first gallery image), together none.
    embedding = np.array([[0, 0], [0, 0], [1, 0], [0, 1]], np.float64)
    handcrafted = np.array([[1, 0], [0, 1], [0, 0], [0, 0]], np.float64)
    pids = np.arange(1, 5)
    query_cams, gallery_cams = np.zeros(4, int), np.ones(4, int)

    def rank1(features):
        return protocol.evaluate(features, pids, query_cams, features, pids,
                                 gallery_cams)["rank1"]

    assert rank1(embedding) == 0.75
    assert rank1(handcrafted) == 0.75
    assert rank1(fusion.concatenate(embedding, handcrafted)) == 1.0
