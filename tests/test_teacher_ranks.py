"""benchmarks/teacher_ranks.py: the distillation teacher's ranks on its own training images."""
import numpy as np
import pytest

from conftest import load_benchmark
from jlml_tf.data.types import ImageTable, ReidData, Trial
from test_trainer import colour_table

teacher_ranks = load_benchmark("teacher_ranks")


def _two_camera_data(identities=6):
    """Each identity one image in camera 1 and one in camera 2, as in VIPeR."""
    table = colour_table(identities, per_identity=2)
    cams = np.tile([1, 2], identities)
    table = ImageTable(table.images, table.pids, cams, table.filenames)
    n = len(cams)
    return ReidData("d", "p", table, [Trial("t0", np.arange(n), np.arange(0), np.arange(0))])


def test_first_camera_queries_the_others_and_a_fitted_teacher_ranks_its_pairs_first():
    result = teacher_ranks.teacher_ranks(_two_camera_data(), 0, folds=1, height=64, width=32,
                                         seed=0)
    assert result["num_queries"] == 6 and result["rank1"] == 1.0


def test_rows_of_the_first_camera_against_the_second_are_ranked(monkeypatch):
    """A stand-in teacher whose distances put camera 1's image of identity 0 nearest to camera
    2's image of identity 1: 5 of the 6 queries match first."""
    from jlml_tf.training import distill

    class Teacher:
        def distances(self, images, labels):
            d = np.ones((12, 12), np.float32) - 0.5 * np.equal.outer(np.repeat(range(6), 2),
                                                                      np.repeat(range(6), 2))
            d[0, 3] = 0.1  # image 0 (identity 0, camera 1) against image 3 (identity 1, camera 2)
            return tf.constant(d)

    import tensorflow as tf
    monkeypatch.setattr(distill, "fit", lambda *args, **kwargs: Teacher())
    result = teacher_ranks.teacher_ranks(_two_camera_data(), 0, folds=2, height=64, width=32,
                                         seed=0)
    assert result["num_queries"] == 6 and result["rank1"] == pytest.approx(5 / 6)


def test_a_bad_input_size_is_refused_naming_the_flags(capsys):
    with pytest.raises(SystemExit):
        teacher_ranks.main(["--input_size=128"])
    assert "--input_size" in capsys.readouterr().err


def test_another_data_set_needs_its_manual_dir(capsys):
    """The default folder is VIPeR's: another --dataset without --manual_dir is refused."""
    with pytest.raises(SystemExit):
        teacher_ranks.main(["--dataset=grid"])
    error = capsys.readouterr().err
    assert "--manual_dir" in error and "--dataset=grid" in error
