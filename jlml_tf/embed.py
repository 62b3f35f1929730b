"""python -m jlml_tf.embed: embeddings of image files with an exported model (SavedModel or TFLite).

    python -m jlml_tf.embed --model=export_out/jlml/1 --images=photos/ --output=embeddings.npz
    python -m jlml_tf.embed --model=export_out/jlml_v1/tflite/int8.tflite \
        --images=a.jpg,b.png,more/ --output=embeddings.npz

--model is a SavedModel version folder (or a base path: its newest version) or a .tflite file.
--images are files and folders (searched recursively for .jpg/.jpeg/.png/.bmp/.gif). Images
are decoded and resized as in training (`jlml_tf.export.preprocessing`). Files that cannot
be read or decoded are listed on stderr and skipped.

The .npz holds `embeddings` float32 [N, D] (L2-normalised), `paths` [N] (the files embedded,
in order), `skipped` [M] (unreadable files) and `model` (the --model path).
"""
from __future__ import annotations

import os
import pathlib
import sys

from absl import app, flags

FLAGS = flags.FLAGS
def define_flags() -> None:
    """CLI flags, defined only when run as a program (importing this module defines none)."""
    flags.DEFINE_string("model", None, "SavedModel folder or .tflite file.")
    flags.DEFINE_list("images", None, "Image files and/or folders.")
    flags.DEFINE_string("output", "embeddings.npz", "Where to write the .npz.")
    flags.DEFINE_integer("batch_size", 32, "Images per model call.")
    flags.DEFINE_integer("num_threads", 2, "CPU threads (TFLite interpreter).")
    flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")


def embed_files(embedder, files: list[str], batch_size: int = 32, progress: bool = True,
                report=lambda msg: print(msg, file=sys.stderr)):
    """-> (embeddings [N, D], embedded paths, skipped paths). Unreadable files are skipped."""
    import numpy as np
    from tqdm import tqdm

    from jlml_tf.export import preprocessing

    done, skipped, chunks, batch, names = [], [], [], [], []

    def flush():
        if batch:
            chunks.append(embedder.embed(np.stack(batch), batch_size))
            done.extend(names)
            batch.clear()
            names.clear()

    for path in tqdm(files, unit="img", disable=not progress, file=sys.stderr):
        try:
            batch.append(preprocessing.load_image(path, embedder.height, embedder.width))
            names.append(path)
        except preprocessing.UnreadableImageError as e:
            skipped.append(path)
            report(f"skipped {e}")
        if len(batch) == batch_size:
            flush()
    flush()
    dim = chunks[0].shape[1] if chunks else embedder.dim
    features = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    return features, done, skipped


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    if not FLAGS.model:
        raise app.UsageError("--model is required (a SavedModel folder or a .tflite file)")
    if not FLAGS.images:
        raise app.UsageError("--images is required (image files and/or folders)")
    if FLAGS.batch_size < 1:
        raise app.UsageError(f"--batch_size={FLAGS.batch_size}: expected at least 1")
    import numpy as np

    from jlml_tf import inference
    from jlml_tf.export import preprocessing

    try:
        files = preprocessing.list_images(FLAGS.images)
    except FileNotFoundError as e:
        raise app.UsageError(f"--images: {e}")
    if not files:
        raise app.UsageError(f"--images={','.join(FLAGS.images)}: no image files found")
    try:
        embedder = inference.load_embedder(FLAGS.model, num_threads=FLAGS.num_threads)
    except (ValueError, FileNotFoundError) as e:
        raise app.UsageError(str(e))
    features, done, skipped = embed_files(embedder, files, FLAGS.batch_size, FLAGS.progress)
    out = pathlib.Path(FLAGS.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, embeddings=features, paths=np.array(done, dtype=str),
             skipped=np.array(skipped, dtype=str), model=np.array(os.fspath(FLAGS.model)))
    print(f"{len(done)} embeddings ({features.shape[1]}-d) -> {out}"
          + (f"; {len(skipped)} unreadable files skipped" if skipped else ""))


def run():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)


if __name__ == "__main__":
    define_flags()
    run()
