"""Pictures: ranked lists (a query and its top-k), worst/best queries, training curves.

    python -m jlml_tf.visualize --run_dir=runs/market      # writes RUN/training_curves.png

Ranked lists are drawn as one pixel canvas (every image resized to 128 x 64 and framed by a
4-pixel border) placed 1:1 into a matplotlib (Agg) figure with `figimage`, and the labels are
drawn as figure text. Nothing is resampled, so the border colours in the PNG are exact:

    QUERY (blue)      the query image, always the first panel of a row
    MATCH (green)     a gallery image of the query's identity
    NON_MATCH (red)   a gallery image of another identity (distractors included)
    UNKNOWN (grey)    identities not known (file names without a person id)
    NO_MATCH (orange) the query's border when its best distance is beyond the threshold

The pixel size of a figure follows from its rows and columns (`canvas_size`), so a file can be
checked by its size and by counting its coloured borders.

Training curves read the scalars that training writes to RUN/tensorboard (or to each
RUN/trial_NN/tensorboard): loss and its parts, per-head accuracy, learning rate, and the
evaluation scalars when there are any.
"""
from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import re
import sys
from typing import Sequence

import numpy as np

CELL_HEIGHT, CELL_WIDTH = 128, 64  # every image is shown at this size
BORDER = 4  # frame width in pixels
GAP = 8  # between panels
QUERY_GAP = 24  # between the query and its ranked list
LABEL_TOP = 14  # text band above each panel (rank)
LABEL_BOTTOM = 26  # text band below each panel (distance, identity)
HEADER = 18  # text band above each row (the query's name, "no match")
SECTION = 24  # a section title (e.g. "Worst queries") above a group of rows
TITLE = 22  # the figure title band, when there is a title
MARGIN = 8
DPI = 100
FONT_SIZE = 7

QUERY = (0, 90, 255)
MATCH = (0, 200, 0)
NON_MATCH = (230, 0, 0)
UNKNOWN = (150, 150, 150)
NO_MATCH = (255, 140, 0)
BACKGROUND = (255, 255, 255)

TRAINING_CURVES_FILE = "training_curves.png"


# ----------------------------------------------------------------------------------------------
# Identities from file names


_MARKET = re.compile(r"^(-?\d+)_c(\d+)")
_PID_ONLY = re.compile(r"^(-?\d+)_")


def parse_identity(path: str | os.PathLike) -> tuple[int | None, int | None]:
    """(pid, camera) from a Market-style name `<pid>_c<cam>...` (e.g. 0002_c1s1_000451_03.jpg),
    (pid, None) from `<pid>_...`, (None, None) when the name carries no identity."""
    name = pathlib.Path(path).name
    m = _MARKET.match(name)
    if m:
        return int(m.group(1)), int(m.group(2))
    m = _PID_ONLY.match(name)
    if m:
        return int(m.group(1)), None
    return None, None


def match_colour(query_pid: int | None, gallery_pid: int | None) -> tuple[int, int, int]:
    """Green for the same person (pid > 0), red for another one, grey when either is unknown
    or junk (pid -1). Distractors (pid 0) are nobody's match."""
    if query_pid is None or gallery_pid is None or query_pid < 0 or gallery_pid < 0:
        return UNKNOWN
    return MATCH if query_pid > 0 and query_pid == gallery_pid else NON_MATCH


# ----------------------------------------------------------------------------------------------
# Panels and canvases


@dataclasses.dataclass
class Panel:
    image: object  # uint8 [H, W, 3], encoded bytes, or a file path
    colour: tuple[int, int, int]
    top: str = ""  # e.g. "query", "#3"
    bottom: str = ""  # e.g. "0.734\nid 2"


@dataclasses.dataclass
class Row:
    panels: list[Panel]  # the first is the query (a wider gap follows it)
    header: str = ""
    header_colour: str = "black"
    section: str = ""  # a section title drawn above this row


def load_cell(image) -> np.ndarray:
    """Any image source -> uint8 [CELL_HEIGHT, CELL_WIDTH, 3]; unreadable -> a grey cell."""
    from PIL import Image

    try:
        if isinstance(image, np.ndarray):
            pil = Image.fromarray(np.asarray(image, np.uint8))
        elif isinstance(image, (bytes, np.bytes_)):
            pil = Image.open(io.BytesIO(bytes(image)))
        else:
            pil = Image.open(image)
        pil = pil.convert("RGB").resize((CELL_WIDTH, CELL_HEIGHT), Image.BILINEAR)
        return np.asarray(pil, np.uint8)
    except Exception:  # noqa: BLE001 - a picture must not fail on one bad image
        return np.full((CELL_HEIGHT, CELL_WIDTH, 3), 200, np.uint8)


def panel_height() -> int:
    return LABEL_TOP + CELL_HEIGHT + 2 * BORDER + LABEL_BOTTOM


def row_width(num_panels: int) -> int:
    """Width of a row of panels: the query, a wider gap, then the list."""
    box = CELL_WIDTH + 2 * BORDER
    return num_panels * box + max(num_panels - 2, 0) * GAP + (QUERY_GAP if num_panels > 1 else 0)


def canvas_size(rows: Sequence[Row], title: bool = False) -> tuple[int, int]:
    """(height, width) in pixels of the figure of these rows (with a title band if `title`)."""
    height = 2 * MARGIN + (TITLE if title else 0) + sum(
        (SECTION if r.section else 0) + HEADER + panel_height() + GAP for r in rows) \
        - (GAP if rows else 0)
    width = 2 * MARGIN + max((row_width(len(r.panels)) for r in rows), default=0)
    return height, max(width, 2 * MARGIN + CELL_WIDTH + 2 * BORDER)


def _layout(rows: Sequence[Row], title: str | None = None):
    """Canvas pixels and text items (x, y, text, kwargs) in pixel coordinates (y down)."""
    height, width = canvas_size(rows, bool(title))
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    texts = []
    y = MARGIN
    if title:
        texts.append((width / 2, y, title, dict(ha="center", fontsize=FONT_SIZE + 3)))
        y += TITLE
    box = CELL_WIDTH + 2 * BORDER
    for row in rows:
        if row.section:
            texts.append((MARGIN, y + 4, row.section, dict(fontsize=FONT_SIZE + 3, weight="bold")))
            y += SECTION
        if row.header:
            texts.append((MARGIN, y + 3, row.header, dict(fontsize=FONT_SIZE + 1,
                                                           color=row.header_colour)))
        y += HEADER
        x = MARGIN
        for i, panel in enumerate(row.panels):
            top = y + LABEL_TOP
            canvas[top:top + CELL_HEIGHT + 2 * BORDER, x:x + box] = panel.colour
            canvas[top + BORDER:top + BORDER + CELL_HEIGHT, x + BORDER:x + BORDER + CELL_WIDTH] = \
                load_cell(panel.image)
            centre = x + box / 2
            if panel.top:
                texts.append((centre, y + 1, panel.top, dict(ha="center", fontsize=FONT_SIZE)))
            if panel.bottom:
                texts.append((centre, top + CELL_HEIGHT + 2 * BORDER + 2, panel.bottom,
                              dict(ha="center", fontsize=FONT_SIZE, linespacing=1.0)))
            x += box + (QUERY_GAP if i == 0 else GAP)
        y += panel_height() + GAP
    return canvas, texts


def draw_rows(path: str | os.PathLike, rows: Sequence[Row], title: str | None = None
              ) -> pathlib.Path:
    """Writes the rows as a PNG of exactly canvas_size(rows, bool(title)) pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("nothing to draw: no rows")
    canvas, texts = _layout(rows, title)
    height, width = canvas.shape[:2]
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    try:
        fig.figimage(canvas, xo=0, yo=0, origin="upper", resize=False)
        for x, y, text, kwargs in texts:
            fig.text(x / width, 1.0 - y / height, text, va="top", **kwargs)
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)  # no bbox_inches: the pixel size stays canvas_size
    finally:
        plt.close(fig)
    return path


def _identity_text(pid: int | None, cam: int | None) -> str:
    if pid is None:
        return ""
    return f"id {pid}" + (f" c{cam}" if cam is not None else "")


def ranked_list_row(query_image, gallery_images: Sequence, distances: Sequence[float],
                    colours: Sequence[tuple[int, int, int]] | None = None,
                    query_text: str = "query", header: str = "",
                    identities: Sequence[tuple[int | None, int | None]] | None = None,
                    query_identity: tuple[int | None, int | None] = (None, None),
                    no_match: bool = False) -> Row:
    """One row: the query, then the ranked gallery images with rank, distance and identity.

    colours: one border colour per gallery image (default: from the identities, grey when
    unknown). no_match: the query's border is orange and the header says so.
    """
    if identities is None:
        identities = [(None, None)] * len(gallery_images)
    if colours is None:
        colours = [match_colour(query_identity[0], pid) for pid, _ in identities]
    panels = [Panel(query_image, NO_MATCH if no_match else QUERY,
                    "NO MATCH" if no_match else query_text, _identity_text(*query_identity))]
    for rank, (image, d, colour, ident) in enumerate(zip(gallery_images, distances, colours,
                                                         identities), start=1):
        label = f"{d:.3f}"
        ident_text = _identity_text(*ident)
        bottom = label + ("\n" + ident_text if ident_text else "")
        panels.append(Panel(image, colour, f"#{rank}", bottom))
    return Row(panels, header=header, header_colour="darkorange" if no_match else "black")


def plot_ranked_list(path, query_image, gallery_images, distances, colours=None, title=None,
                     **row_options) -> pathlib.Path:
    """A PNG of one query's ranked list (see ranked_list_row)."""
    return draw_rows(path, [ranked_list_row(query_image, gallery_images, distances, colours,
                                            **row_options)], title)


def plot_worst_best(path, worst: Sequence[Row], best: Sequence[Row], title: str | None = None,
                    worst_title: str = "Worst queries", best_title: str = "Best queries"
                    ) -> pathlib.Path:
    """Rows of the worst queries, then of the best, each group under its section title."""
    rows = []
    for group, name in ((list(worst), worst_title), (list(best), best_title)):
        if group:
            group[0] = dataclasses.replace(group[0], section=name)
            rows += group
    return draw_rows(path, rows, title)


# ----------------------------------------------------------------------------------------------
# Training curves


def event_dirs(run_dir: str | os.PathLike) -> dict[str, pathlib.Path]:
    """{label: tensorboard folder}: RUN/tensorboard, or one per RUN/trial_NN."""
    run = pathlib.Path(run_dir)
    from jlml_tf.inference import run_dir as run_dir_lib

    if (run / run_dir_lib.TENSORBOARD_DIR).is_dir():
        return {"": run / run_dir_lib.TENSORBOARD_DIR}
    return {t.name: t / run_dir_lib.TENSORBOARD_DIR
            for t in sorted(run.glob("trial_*")) if (t / run_dir_lib.TENSORBOARD_DIR).is_dir()}


def read_scalars(event_dir: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tag: (steps, values)} from every event file in a folder, sorted by step; a step logged
    twice (a resumed run) keeps its latest value."""
    import tensorflow as tf

    points: dict[str, dict[int, tuple[float, float]]] = {}
    for f in sorted(pathlib.Path(event_dir).glob("events.out.tfevents.*")):
        try:
            for record in tf.data.TFRecordDataset(os.fspath(f)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for v in event.summary.value:
                    if v.HasField("simple_value"):
                        value = float(v.simple_value)
                    elif v.HasField("tensor"):
                        array = tf.make_ndarray(v.tensor)
                        if array.size != 1 or not np.issubdtype(array.dtype, np.number):
                            continue
                        value = float(array.reshape(-1)[0])
                    else:
                        continue
                    old = points.setdefault(v.tag, {}).get(event.step)
                    if old is None or event.wall_time >= old[0]:
                        points[v.tag][event.step] = (event.wall_time, value)
        except tf.errors.DataLossError:  # a file cut short by a killed run: keep what was read
            continue
    out = {}
    for tag, by_step in points.items():
        steps = np.array(sorted(by_step), np.int64)
        out[tag] = (steps, np.array([by_step[s][1] for s in steps], np.float64))
    return out


CURVE_PANELS = (
    ("Loss", lambda t: t == "train/loss" or t.startswith("train/ce_")),
    ("Accuracy (training batches)", lambda t: t.startswith("train/acc_")),
    ("Learning rate", lambda t: t == "train/learning_rate"),
    ("Evaluation", lambda t: t.startswith("eval/") and t.split("/", 1)[1] in
     ("rank1", "rank5", "map", "map_official")),
)


def plot_training_curves(run_dir: str | os.PathLike, path: str | os.PathLike | None = None
                         ) -> pathlib.Path:
    """RUN/training_curves.png: loss (total and per head), per-head accuracy, learning rate
    and, when training evaluated on the way, rank-1/mAP; one line per trial and tag."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = pathlib.Path(run_dir)
    dirs = event_dirs(run)
    if not dirs:
        raise FileNotFoundError(f"--run_dir={run}: no tensorboard folder (RUN/tensorboard or "
                                "RUN/trial_NN/tensorboard); is it a training run directory?")
    scalars = {label: read_scalars(d) for label, d in dirs.items()}
    if not any(scalars.values()):
        raise ValueError(f"--run_dir={run}: the tensorboard event files hold no scalars yet")
    panels = [(name, test) for name, test in CURVE_PANELS
              if any(test(tag) for s in scalars.values() for tag in s)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.4 * len(panels)), dpi=DPI,
                             sharex=True, squeeze=False)
    try:
        for ax, (name, test) in zip(axes[:, 0], panels):
            for label, tags in scalars.items():
                for tag in sorted(t for t in tags if test(t)):
                    steps, values = tags[tag]
                    short = tag.split("/", 1)[1]
                    ax.plot(steps, values, label=f"{label} {short}".strip(),
                            marker="o" if len(steps) < 3 else None, linewidth=1.2)
            ax.set_title(name, fontsize=10)
            ax.grid(True, alpha=0.3)
            if name == "Loss" and all(v > 0 for t in scalars.values() for tag, (_, vs) in t.items()
                                      if test(tag) for v in vs):
                ax.set_yscale("log")
            ax.legend(fontsize=7, loc="best", ncol=2)
        axes[-1, 0].set_xlabel("step")
        fig.suptitle(f"Training curves: {run.resolve().name}", fontsize=11)
        fig.tight_layout()
        path = pathlib.Path(path) if path else run / TRAINING_CURVES_FILE
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# CLI


def _define_flags():
    from absl import flags

    fv = flags.FlagValues()
    flags.DEFINE_string("run_dir", None, "Training run directory (holding tensorboard/ or "
                        "trial_NN/tensorboard/).", flag_values=fv)
    flags.DEFINE_string("output", None, "PNG to write (default RUN/training_curves.png).",
                        flag_values=fv)
    return fv


def main(argv: Sequence[str] | None = None) -> int:
    """python -m jlml_tf.visualize --run_dir=RUN [--output=PNG]; returns the exit status."""
    from absl import flags

    argv = list(sys.argv if argv is None else argv)
    fv = _define_flags()
    if any(a in ("--help", "-h", "--helpshort") for a in argv[1:]):
        print(__doc__.split("\n\n")[0] + "\n\n" + fv.get_help())
        return 0
    try:
        rest = fv(argv)
        if len(rest) > 1:
            raise flags.Error(f"unexpected arguments {rest[1:]}")
        if not fv.run_dir:
            raise flags.Error("--run_dir is required")
        path = plot_training_curves(fv.run_dir, fv.output)
    except (flags.Error, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
