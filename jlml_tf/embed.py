"""python -m jlml_tf.embed: embeddings of image files with an exported model (SavedModel or TFLite).

    python -m jlml_tf.embed --model=export_out/jlml/1 --images=photos/ --output=embeddings.npz
    python -m jlml_tf.embed --model=export_out/jlml_v1/tflite/int8.tflite \
        --images=a.jpg,b.png,more/ --output=embeddings.npz

--model is a SavedModel version folder (or a base path: its newest version) or a .tflite file.
--images are files and folders (searched recursively for .jpg/.jpeg/.png/.bmp/.gif). Images
are decoded and resized as in training (`jlml_tf.data.preprocessing`). Files that cannot
be read or decoded are listed on stderr and skipped.

The .npz holds `embeddings` float32 [N, D] (L2-normalised), `paths` [N] (the files embedded,
in order), `skipped` [M] (unreadable files) and `model` (the --model path).
"""
from __future__ import annotations

import os
import pathlib
import sys

from absl import flags

from jlml_tf import cli



ODD_IMAGE_POLICIES = ("warn", "refuse", "accept")


def define_flags() -> flags.FlagValues:
    """The command's own flags (importing the module defines none globally)."""
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_string("model", None, "SavedModel folder (version folder or TF Serving base "
                        "path) or .tflite file.", **d)
    flags.DEFINE_list("images", None, "Image files and/or folders.", **d)
    flags.DEFINE_string("output", "embeddings.npz", "Where to write the .npz.", **d)
    flags.DEFINE_integer("batch_size", 32, "Images per model call.", **d)
    flags.DEFINE_integer("num_threads", 2, "CPU threads (TFLite interpreter).", **d)
    flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.", **d)
    flags.DEFINE_enum("odd_images", "warn", ODD_IMAGE_POLICIES, "Images that look odd for a "
                      "person crop (tiny, or square/wide like a whole frame): warn and embed "
                      "them, refuse them (listed as skipped), or accept them silently.", **d)
    return fv


UsageError = cli.UsageError  # `error: ...` on stderr, exit status 2 (no help text)


def embed_files(embedder, files: list[str], batch_size: int = 32, progress: bool = True,
                report=None, odd_images: str = "accept"):
    """-> (embeddings [N, D], embedded paths, skipped paths). Unreadable files are skipped and
    reported; odd images (see `preprocessing.odd_image_reason`) are reported and embedded
    ("warn"), skipped ("refuse") or embedded silently ("accept")."""
    import numpy as np
    from tqdm import tqdm

    from jlml_tf.data import preprocessing

    done, skipped, chunks, batch, names = [], [], [], [], []
    if report is None:  # above the progress bar
        report = lambda msg: tqdm.write(msg, file=sys.stderr)  # noqa: E731

    def flush():
        if batch:
            chunks.append(embedder.embed(np.stack(batch), batch_size))
            done.extend(names)
            batch.clear()
            names.clear()

    bar = tqdm(files, unit="img", disable=not progress, file=sys.stderr)
    for path in bar:
        try:
            pixels, why = preprocessing.load_image_checked(path, embedder.height, embedder.width)
        except preprocessing.UnreadableImageError as e:
            skipped.append(path)
            report(f"skipped {e}")
            continue
        if why is not None and odd_images != "accept":
            if odd_images == "refuse":
                skipped.append(path)
                message = f"skipped {path}: refused as an odd image: {why}"
            else:
                message = f"warning: {path} looks odd for a person crop: {why}"
            report(message)
            if odd_images == "refuse":
                continue
        batch.append(pixels)
        names.append(path)
        if len(batch) == batch_size:
            flush()
    flush()
    bar.close()
    dim = chunks[0].shape[1] if chunks else embedder.dim
    features = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    return features, done, skipped


def run(fv: flags.FlagValues) -> None:
    if not fv.model:
        raise UsageError("--model is required (a SavedModel folder or a .tflite file)")
    if not fv.images:
        raise UsageError("--images is required (image files and/or folders)")
    if fv.batch_size < 1:
        raise UsageError(f"--batch_size={fv.batch_size}: expected at least 1")
    from jlml_tf import tf_quiet

    tf_quiet.quiet_tensorflow()
    import numpy as np

    from jlml_tf.inference import embedders
    from jlml_tf.data import preprocessing

    try:
        files = preprocessing.list_images(fv.images)
    except FileNotFoundError as e:
        raise UsageError(f"--images: {e}")
    if not files:
        raise UsageError(f"--images={','.join(fv.images)}: no image files found")
    try:
        embedder = embedders.load_embedder(fv.model, num_threads=fv.num_threads)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(embedders.flag_error("model", fv.model, e))
    features, done, skipped = embed_files(embedder, files, fv.batch_size, fv.progress,
                                          odd_images=fv.odd_images)
    out = pathlib.Path(fv.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, embeddings=features, paths=np.array(done, dtype=str),
             skipped=np.array(skipped, dtype=str), model=np.array(os.fspath(fv.model)))
    print(f"{len(done)} embeddings ({features.shape[1]}-d) -> {out}"
          + (f"; {len(skipped)} file{'s' if len(skipped) > 1 else ''} skipped (listed above)"
             if skipped else ""))


def main(argv=None) -> int:
    return cli.run_main(define_flags, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
