"""Search a folder of person images for the people in query images.

    python -m jlml_tf.search --model=runs/market --gallery_dir=photos/ --query=q1.jpg --query=q2.jpg
    python -m jlml_tf.search --model=export_out/jlml/1 --gallery_dir=photos/ --query=queries/ \
        --top_k=5 --output_dir=out/ --rerank

--model is a training run directory (or RUN/checkpoints/ckpt-N), a SavedModel folder (or a TF
Serving base path) or a .tflite file. Embeddings are L2-normalised and compared by L2 distance,
as in the paper. --query may be given several times, and may name folders.

The gallery's embeddings are kept in an index (GALLERY/.jlml_index.npz, or --index_path) and
reused while the images and the model are unchanged: new or changed images are embedded,
removed ones dropped, and a different model rebuilds it (see inference/gallery_index.py). Unreadable
gallery or query images are listed and skipped.

Output: for each query, the top-k gallery images with their distances on stdout, and a PNG of
its ranked list in --output_dir (the query first, then the top-k; borders green / red when the
file names carry identities, Market-style `<pid>_c<cam>...` or `<pid>_...`, grey otherwise),
plus search_results.json with everything printed.

"No match": with a threshold (calibrated by `python -m jlml_tf.evaluate --calibrate_threshold`
and stored with the model as threshold.json, or --threshold), a query whose nearest gallery
image is farther (plain L2, also under --rerank) is reported as "no match", and its picture
says so (orange query border).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
from typing import Sequence

import numpy as np

from jlml_tf import cli, visualize
from jlml_tf.config import IMAGE_EXTENSIONS
from jlml_tf.evaluation import distances as dist_lib
from jlml_tf.evaluation.metrics import argsort_rows
from jlml_tf.evaluation.rerank import RerankConfig, rerank_distances
from jlml_tf.inference import gallery_index
from jlml_tf.inference import threshold as threshold_lib

DEFAULT_OUTPUT_DIR = "search_results"
RESULTS_FILE = "search_results.json"
ODD_IMAGE_POLICIES = ("warn", "refuse", "accept")  # = preprocessing.ODD_IMAGE_POLICIES (no TF)


# ----------------------------------------------------------------------------------------------
# Models


def is_run_model(path: str | os.PathLike) -> bool:
    """A training run directory or a checkpoint prefix inside one (else: an export)."""
    from jlml_tf.inference import run_dir as run_dir_lib

    p = pathlib.Path(path)
    return (p / run_dir_lib.CONFIG_FILE).is_file() or p.parent.name == run_dir_lib.CHECKPOINT_DIR


def _run_embedder_class():
    from jlml_tf.inference import embedders

    class RunEmbedder(embedders.KerasEmbedder):
        """A training run's embedding model (restored from its checkpoint), L2-normalised like
        the exported models' output."""

        kind = "run"

        def __init__(self, path: str | os.PathLike):
            from jlml_tf.inference import run_dir as run_dir_lib

            loaded = run_dir_lib.load_run(path)
            self.config = loaded.model_cfg
            super().__init__(loaded.embedding_model)

    return RunEmbedder


def load_model(path: str | os.PathLike, num_threads: int = 2):
    """--model -> an embedder (uint8 pixels -> L2-normalised embeddings)."""
    from jlml_tf.inference import embedders

    if is_run_model(path):
        return _run_embedder_class()(path)
    return embedders.load_embedder(path, num_threads=num_threads)


# ----------------------------------------------------------------------------------------------
# Searching


@dataclasses.dataclass
class Hit:
    path: str  # relative to the gallery folder
    distance: float  # the ranking distance (re-ranked with --rerank)
    l2: float  # plain L2 distance
    pid: int | None
    camera: int | None
    odd: str | None = None  # why the image looks odd for a person crop (see --odd_images)


@dataclasses.dataclass
class QueryResult:
    query: str
    pid: int | None
    camera: int | None
    hits: list[Hit]
    best_l2: float  # the nearest gallery image's L2 distance
    no_match: bool  # best_l2 > threshold
    picture: str | None = None
    odd: str | None = None  # why the query image looks odd for a person crop

    def status(self, hit: Hit) -> str:
        colour = visualize.match_colour(self.pid, hit.pid)
        return {visualize.MATCH: "yes", visualize.NON_MATCH: "no"}.get(colour, "?")


def expand_queries(queries: Sequence[str]) -> list[str]:
    """Query files, and the images in query folders (recursively, sorted).

    Checked before anything is embedded: a missing path or a folder without images is a
    UsageError (the gallery is not embedded for nothing)."""
    out, missing, empty = [], [], []
    for q in queries:
        p = pathlib.Path(q)
        if p.is_dir():
            found = [str(p / rel) for rel in gallery_index.scan_gallery(p)]
            out += found
            if not found:
                empty.append(q)
        elif p.is_file():
            out.append(q)  # unreadable files are reported when they are read
        else:
            missing.append(q)
    if missing:
        raise UsageError("--query: no such file or folder: " + ", ".join(missing))
    if empty:
        raise UsageError(f"--query: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder "
                         + ", ".join(empty))
    return out


def embed_queries(embedder, queries: Sequence[str], odd_images: str = "accept"
                  ) -> tuple[list[str], np.ndarray, list[tuple[str, str]], dict[str, str]]:
    """(readable queries, their L2-normalised embeddings, skipped (path, reason), odd
    {path: why} of the queries that look odd for person crops)."""
    root = pathlib.Path(".")
    odd = []
    done, embeddings, skipped = gallery_index.embed_paths(
        embedder, root, [os.fspath(q) for q in queries], progress=False, odd_images=odd_images,
        odd=odd)
    if embeddings is None:
        embeddings = np.zeros((0, 0), np.float32)
    return done, embeddings, skipped, dict(odd)


def search(query_embeddings: np.ndarray, query_paths: Sequence[str],
           index: gallery_index.GalleryIndex, top_k: int = 10, rerank=None, threshold: float | None = None) -> list[QueryResult]:
    """Ranks the gallery for every query. rerank: a rerank.RerankConfig or None."""
    if not len(index):
        raise ValueError("the gallery has no readable images")
    q = np.asarray(query_embeddings, np.float32)
    l2 = dist_lib.pairwise_distances(q, index.embeddings, "l2")
    ranking = rerank_distances("l2", q, index.embeddings, rerank) if rerank is not None else l2
    k = min(top_k, len(index))
    order = argsort_rows(ranking, k)
    identities = [visualize.parse_identity(p) for p in index.paths]
    results = []
    for i, path in enumerate(query_paths):
        pid, cam = visualize.parse_identity(path)
        hits = [Hit(index.paths[j], float(ranking[i, j]), float(l2[i, j]), *identities[j],
                    odd=index.odd.get(index.paths[j]))
                for j in order[i]]
        best = float(l2[i].min())
        results.append(QueryResult(os.fspath(path), pid, cam, hits, best,
                                   threshold is not None and best > threshold))
    return results


def format_result(result: QueryResult, threshold: float | None, reranked: bool) -> str:
    who = ""
    if result.pid is not None:
        camera = f", camera {result.camera}" if result.camera is not None else ""
        who = f" (id {result.pid}{camera})"
    lines = [f"Query {result.query}{who}"]
    if result.odd:
        lines.append(f"  warning: the query looks odd for a person crop: {result.odd}")
    if result.no_match:
        lines.append(f"  NO MATCH: the nearest gallery image is at L2 distance "
                     f"{result.best_l2:.4f} > threshold {threshold:.4f}")
    head = "re-ranked" if reranked else "distance"
    lines.append(f"  {'rank':>4}  {head:>9}  {'L2':>7}  match  image")
    for rank, hit in enumerate(result.hits, start=1):
        lines.append(f"  {rank:>4}  {hit.distance:>9.4f}  {hit.l2:>7.4f}  {result.status(hit):>5}  "
                     f"{hit.path}" + (f"  [odd image: {hit.odd}]" if hit.odd else ""))
    return "\n".join(lines)


def draw_result(path, result: QueryResult, index: gallery_index.GalleryIndex, reranked: bool
                ) -> pathlib.Path:
    colours = [visualize.match_colour(result.pid, h.pid) for h in result.hits]
    header = pathlib.Path(result.query).name + ("   NO MATCH (nearest L2 "
                                                f"{result.best_l2:.3f} > threshold)"
                                                if result.no_match else "") \
        + ("   re-ranked" if reranked else "")
    row = visualize.ranked_list_row(
        result.query, [index.root / h.path for h in result.hits], [h.distance for h in result.hits],
        colours, header=header, identities=[(h.pid, h.camera) for h in result.hits],
        query_identity=(result.pid, result.camera), no_match=result.no_match)
    return visualize.draw_rows(path, [row])


def picture_names(queries: Sequence[str]) -> list[str]:
    """One distinct PNG name per query: NN_<file stem>.png."""
    return [f"{i:02d}_{pathlib.Path(q).stem}.png" for i, q in enumerate(queries)]


def resolve_threshold(model: str, value: float | None, file: str | None, fingerprint: str,
                      log) -> float | None:
    """--threshold, else --threshold_file, else the threshold.json stored with the model."""
    if value is not None:
        return value
    path = pathlib.Path(file) if file else threshold_lib.find(model)
    if path is None:
        return None
    calibration = threshold_lib.load(path)
    calibrated_for = calibration.source.get("model_fingerprint")
    # Only a run's own checkpoint can be compared: an export of it has other files.
    if calibrated_for and calibrated_for != fingerprint and is_run_model(model):
        log(f"warning: {path} was calibrated for another model file (checkpoint "
            f"{calibration.source.get('checkpoint')}); recalibrate with `python -m "
            "jlml_tf.evaluate --calibrate_threshold`")
    log(f"No-match threshold {calibration.threshold:.4f} from {path}: "
        f"{threshold_lib.describe(calibration)}")
    if not calibration.held_out:  # False, or None for files older than the split record
        log("warning: this threshold was calibrated on people the model was trained on, so "
            "unseen people are called a match more often than its target rate; recalibrate "
            "with `python -m jlml_tf.evaluate --calibrate_threshold` (identities held out from "
            "training, or --calibration_split=test)")
    return calibration.threshold


# ----------------------------------------------------------------------------------------------
# The command line


def define_flags():
    from absl import flags

    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_string("model", None, "Run directory, checkpoint, SavedModel folder or "
                        ".tflite.", **d)
    flags.DEFINE_string("gallery_dir", None, "Folder of gallery images (searched "
                        "recursively).", **d)
    flags.DEFINE_multi_string("query", [], "Query image or folder (repeatable).", **d)
    flags.DEFINE_integer("top_k", 10, "Gallery images listed per query.", lower_bound=1, **d)
    flags.DEFINE_string("output_dir", DEFAULT_OUTPUT_DIR, "Where the ranked-list PNGs go.", **d)
    flags.DEFINE_bool("rerank", False, "k-reciprocal re-ranking over queries and gallery.", **d)
    flags.DEFINE_integer("k1", 20, "Re-ranking k1.", lower_bound=1, **d)
    flags.DEFINE_integer("k2", 6, "Re-ranking k2.", lower_bound=1, **d)
    flags.DEFINE_float("lambda_value", 0.3, "Re-ranking weight of the original distance.",
                       lower_bound=0.0, upper_bound=1.0, **d)
    flags.DEFINE_string("index_path", None, "Gallery index file (default "
                        f"GALLERY/{gallery_index.INDEX_FILE}).", **d)
    flags.DEFINE_bool("reindex", False, "Embed the whole gallery afresh.", **d)
    flags.DEFINE_float("threshold", None, "No-match L2 distance threshold (default: the "
                       "model's threshold.json, if any).", **d)
    flags.DEFINE_string("threshold_file", None, "A threshold.json to use.", **d)
    flags.DEFINE_integer("batch_size", 32, "Images per model call.", lower_bound=1, **d)
    flags.DEFINE_integer("num_threads", 2, "CPU threads of a TFLite model.", lower_bound=1, **d)
    flags.DEFINE_bool("progress", True, "Progress bar while embedding the gallery.", **d)
    flags.DEFINE_enum("odd_images", "warn", ODD_IMAGE_POLICIES, "Images that look odd for a "
                      "person crop (tiny, or square/wide like a whole frame): warn and search "
                      "them, refuse them (listed as skipped), or accept them silently.", **d)
    return fv


UsageError = cli.UsageError


def run(fv, log=lambda msg: print(msg, file=sys.stderr)) -> list[QueryResult]:
    from jlml_tf.inference.embedders import flag_error  # loads TensorFlow

    if not fv.model:
        raise UsageError("--model is required (a run directory, SavedModel or .tflite)")
    if not fv.gallery_dir:
        raise UsageError("--gallery_dir is required")
    if not fv.query:
        raise UsageError("--query is required (an image or folder; repeat for several)")
    gallery = pathlib.Path(fv.gallery_dir)
    if not gallery.is_dir():
        raise UsageError(f"--gallery_dir={gallery}: no such folder")
    if not pathlib.Path(fv.model).exists() and not is_run_model(fv.model):
        raise UsageError(f"--model={fv.model}: no such file or folder")
    query_files = expand_queries(fv.query)  # before anything is loaded or embedded
    try:
        fingerprint = gallery_index.model_fingerprint(fv.model)
        embedder = load_model(fv.model, fv.num_threads)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise UsageError(flag_error("model", fv.model, e)) from e
    threshold = resolve_threshold(fv.model, fv.threshold, fv.threshold_file, fingerprint, log)
    # The queries are read before the gallery: a search with no readable query stops here.
    queries, embeddings, skipped, odd_queries = embed_queries(embedder, query_files, fv.odd_images)
    for path, reason in skipped:
        log(f"skipped query {path}: {reason}")
    if not queries:
        raise UsageError("no readable query image among --query " + " ".join(fv.query))
    for path, why in odd_queries.items():
        if fv.odd_images == "warn":
            log(f"warning: query {path} looks odd for a person crop: {why}")
    out = pathlib.Path(fv.output_dir)
    index_path = pathlib.Path(fv.index_path) if fv.index_path else None
    if fv.reindex:
        target = index_path or gallery_index.default_index_path(gallery)
        if target.is_file():
            target.unlink()
    index, report = gallery_index.update_index(gallery, embedder, fingerprint, index_path,
                                               fv.batch_size, fv.progress, exclude=[out], log=log,
                                               odd_images=fv.odd_images)
    log(f"Gallery {gallery}: {len(index)} images ({report.summary()})")
    for path, reason in report.skipped:
        log(f"  skipped gallery image {path}: {reason}")
    if fv.odd_images == "warn":
        for path, why in report.odd:
            log(f"  warning: gallery image {path} looks odd for a person crop: {why}")
        if index.odd:
            log(f"  {len(index.odd)} gallery image(s) look odd for person crops and are searched "
                "anyway (marked [odd image] below); --odd_images=refuse leaves them out")
    if not len(index):
        raise UsageError(f"--gallery_dir={gallery}: no readable images")
    rerank = RerankConfig(fv.k1, fv.k2, fv.lambda_value) if fv.rerank else None
    results = search(embeddings, queries, index, fv.top_k, rerank, threshold)
    if fv.odd_images != "warn":  # accept: silent; refuse: none are left
        for result in results:
            for hit in result.hits:
                hit.odd = None
    else:
        for result in results:
            result.odd = odd_queries.get(result.query)
    out.mkdir(parents=True, exist_ok=True)
    for result, name in zip(results, picture_names(queries)):
        result.picture = str(draw_result(out / name, result, index, rerank is not None))
        print(format_result(result, threshold, rerank is not None))
        print(f"  -> {result.picture}\n")
    (out / RESULTS_FILE).write_text(json.dumps({
        "model": str(fv.model), "gallery_dir": str(gallery), "threshold": threshold,
        "rerank": dataclasses.asdict(rerank) if rerank else None,
        "odd_images": fv.odd_images,
        "skipped_queries": [list(s) for s in skipped],
        "skipped_gallery": [list(s) for s in report.skipped],
        "odd_gallery": [[p, why] for p, why in index.odd.items()],
        "results": [dataclasses.asdict(r) for r in results]}, indent=2) + "\n")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns the exit status (0 ok, 2 bad input)."""
    from jlml_tf import tf_quiet

    tf_quiet.quiet_tensorflow()
    return cli.run_main(define_flags, lambda fv: run(fv) and None, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
