"""Pictures: identities from names, ranked-list PNGs (size, coloured panels), training curves."""
import matplotlib.image as mpimg
import numpy as np
import pytest
from scipy import ndimage

from jlml_tf import visualize as vis


def count_frames(png, colour) -> int:
    """Panels whose frame has exactly this colour: connected rings of frame size."""
    pixels = np.round(mpimg.imread(png)[..., :3] * 255).astype(int)
    mask = (pixels == colour).all(axis=-1)
    labels, n = ndimage.label(mask)
    frame_area = (vis.CELL_HEIGHT + 2 * vis.BORDER) * (vis.CELL_WIDTH + 2 * vis.BORDER) \
        - vis.CELL_HEIGHT * vis.CELL_WIDTH
    sizes = ndimage.sum(mask, labels, range(1, n + 1))
    return int(np.sum(np.abs(sizes - frame_area) <= frame_area * 0.05))


@pytest.mark.parametrize("name, expected", [
    ("0002_c1s1_000451_03.jpg", (2, 1)),
    ("dir/-1_c3s2_000001_01.jpg", (-1, 3)),
    ("0000_c6s4_0001.png", (0, 6)),
    ("0123_0456.png", (123, None)),
    ("0001001.png", (None, None)),
    ("holiday.jpg", (None, None)),
])
def test_parse_identity(name, expected):
    assert vis.parse_identity(name) == expected


def test_match_colours():
    assert vis.match_colour(2, 2) == vis.MATCH
    assert vis.match_colour(2, 3) == vis.NON_MATCH
    assert vis.match_colour(2, 0) == vis.NON_MATCH  # a distractor is nobody
    assert vis.match_colour(0, 0) == vis.NON_MATCH
    assert vis.match_colour(None, 2) == vis.UNKNOWN
    assert vis.match_colour(2, -1) == vis.UNKNOWN  # junk


def test_ranked_list_png_size_and_panels(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 20, 3), dtype=np.uint8) for _ in range(6)]
    identities = [(2, 2), (3, 1), (None, None), (0, 3), (2, 3)]
    path = vis.plot_ranked_list(tmp_path / "list.png", images[0], images[1:],
                                [0.1, 0.2, 0.3, 0.4, 0.5], header="q.jpg",
                                identities=identities, query_identity=(2, 1))
    pixels = mpimg.imread(path)
    row = vis.ranked_list_row(images[0], images[1:], [0] * 5)
    assert pixels.shape[:2] == vis.canvas_size([row]) == (
        2 * vis.MARGIN + vis.HEADER + vis.panel_height(), 2 * vis.MARGIN + vis.row_width(6))
    assert count_frames(path, vis.QUERY) == 1
    assert count_frames(path, vis.MATCH) == 2
    assert count_frames(path, vis.NON_MATCH) == 2  # pid 3 and the pid-0 distractor
    assert count_frames(path, vis.UNKNOWN) == 1
    assert count_frames(path, vis.NO_MATCH) == 0
    # The image inside the first gallery frame is the first gallery image, resized.
    top = vis.MARGIN + vis.HEADER + vis.LABEL_TOP + vis.BORDER
    left = vis.MARGIN + vis.CELL_WIDTH + 2 * vis.BORDER + vis.QUERY_GAP + vis.BORDER
    cell = np.round(pixels[top:top + vis.CELL_HEIGHT, left:left + vis.CELL_WIDTH, :3] * 255)
    np.testing.assert_array_equal(cell, vis.load_cell(images[1]))


def test_no_match_marks_the_query_and_unreadable_images_do_not_fail(tmp_path):
    path = vis.plot_ranked_list(tmp_path / "nm.png", b"not an image", [tmp_path / "missing.png"],
                                [1.5], no_match=True)
    assert count_frames(path, vis.NO_MATCH) == 1 and count_frames(path, vis.QUERY) == 0
    assert count_frames(path, vis.UNKNOWN) == 1


def test_worst_best_figure_rows_and_sections(tmp_path):
    rng = np.random.default_rng(1)
    img = lambda: rng.integers(0, 255, (30, 15, 3), dtype=np.uint8)  # noqa: E731
    make = lambda colours: vis.ranked_list_row(img(), [img() for _ in colours],  # noqa: E731
                                               np.arange(len(colours)) / 10, colours)
    worst = [make([vis.NON_MATCH] * 3), make([vis.NON_MATCH, vis.MATCH, vis.NON_MATCH])]
    best = [make([vis.MATCH, vis.MATCH, vis.NON_MATCH])]
    path = vis.plot_worst_best(tmp_path / "wb.png", worst, best, title="t")
    height, width = mpimg.imread(path).shape[:2]
    assert (height, width) == (2 * vis.MARGIN + vis.TITLE + 2 * vis.SECTION
                               + 3 * (vis.HEADER + vis.panel_height()) + 2 * vis.GAP,
                               2 * vis.MARGIN + vis.row_width(4))
    assert count_frames(path, vis.QUERY) == 3
    assert count_frames(path, vis.MATCH) == 3
    assert count_frames(path, vis.NON_MATCH) == 6
    with pytest.raises(ValueError, match="no rows"):
        vis.draw_rows(tmp_path / "empty.png", [])


def _write_events(logdir, steps, offset=0.0):
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for s in steps:
            tf.summary.scalar("train/loss", 5.0 - s / 10 + offset, step=s)
            tf.summary.scalar("train/ce_global", 2.0 - s / 20, step=s)
            tf.summary.scalar("train/acc_global", s / 100, step=s)
            tf.summary.scalar("train/acc_local", s / 200, step=s)
            tf.summary.scalar("train/learning_rate", 0.01, step=s)
            tf.summary.scalar("train/img_per_s", 100.0, step=s)
    writer.close()


def test_training_curves_from_tensorboard_events(tmp_path):
    run = tmp_path / "run"
    _write_events(run / "tensorboard", [5, 10, 15])
    _write_events(run / "tensorboard", [15, 20], offset=1.0)  # a resumed run logs step 15 again
    scalars = vis.read_scalars(run / "tensorboard")
    steps, values = scalars["train/loss"]
    np.testing.assert_array_equal(steps, [5, 10, 15, 20])
    np.testing.assert_allclose(values, [4.5, 4.0, 4.5, 4.0])  # the later write of step 15 wins
    assert vis.main(["visualize", f"--run_dir={run}"]) == 0
    png = mpimg.imread(run / vis.TRAINING_CURVES_FILE)
    assert png.shape[0] > 300 and png.shape[1] > 300
    assert png[..., :3].std() > 0.05  # not a blank image


def test_training_curves_of_a_multi_trial_run_and_bad_run_dirs(tmp_path, capsys):
    run = tmp_path / "multi"
    for trial in ("trial_00", "trial_01"):
        _write_events(run / trial / "tensorboard", [1, 2])
    assert list(vis.event_dirs(run)) == ["trial_00", "trial_01"]
    out = vis.plot_training_curves(run, tmp_path / "c.png")
    assert out.is_file()
    assert vis.main(["visualize", f"--run_dir={tmp_path / 'nothing'}"]) == 2
    assert "nothing" in capsys.readouterr().err
