"""python -m jlml_tf.search end to end on a tiny gallery folder, and the search function."""
import json
import shutil
import types

import matplotlib.image as mpimg
import numpy as np
import pytest
from PIL import Image

from jlml_tf.inference import gallery_index as gi
from jlml_tf import search as se
from jlml_tf.inference import threshold as th
from jlml_tf import visualize as vis
import run_fixtures as fixtures

# Identity -> two colours (upper, lower body): far apart between identities.
LOOKS = {1: ((220, 30, 30), (30, 30, 220)), 2: ((30, 200, 30), (240, 240, 240)),
         3: ((20, 20, 20), (230, 200, 0)), 4: ((250, 120, 200), (60, 120, 60))}


def person(pid: int, seed: int) -> Image.Image:
    """A 64 x 32 'person': two colour blocks with a little noise (different per image)."""
    upper, lower = LOOKS[pid]
    img = np.zeros((64, 32, 3), np.float64)
    img[:32], img[32:] = upper, lower
    img += np.random.default_rng(seed).normal(0, 4, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny untrained JLML run directory, a gallery of Market-named PNGs and two queries."""
    import keras
    import tensorflow as tf

    from jlml_tf.inference import run_dir
    from jlml_tf.modeling import jlml

    root = tmp_path_factory.mktemp("search")
    cfg = fixtures.tiny_config()
    keras.utils.set_random_seed(0)
    training_model, _ = jlml.build_jlml(cfg)
    run = root / "run"
    run_dir.write_config(run, cfg, train={}, data={"dataset": "synthetic"})
    tf.train.Checkpoint(model=training_model).save(str(run / "checkpoints" / "ckpt"))
    gallery = root / "gallery"
    gallery.mkdir()
    seed = 0
    for pid in LOOKS:
        for cam in (2, 3):
            seed += 1
            person(pid, seed).save(gallery / f"{pid:04d}_c{cam}s1_{seed:06d}_00.png")
    (gallery / "broken.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    queries = root / "queries"
    queries.mkdir()
    person(2, 100).save(queries / "0002_c1s1_000100_00.png")
    person(4, 101).save(queries / "0004_c1s1_000101_00.png")
    return types.SimpleNamespace(root=root, run=run, gallery=gallery, queries=queries)


def frames(png, colour):
    from test_visualize import count_frames

    return count_frames(png, colour)


def test_search_cli_end_to_end(world, capsys):
    out = world.root / "out"
    q1, q2 = world.queries / "0002_c1s1_000100_00.png", world.queries / "0004_c1s1_000101_00.png"
    rc = se.main(["search", f"--model={world.run}", f"--gallery_dir={world.gallery}",
                  f"--query={q1}", f"--query={q2}", "--top_k=3", f"--output_dir={out}",
                  "--noprogress"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "skipped gallery image broken.jpg: not an image (expected JPEG" in captured.err
    assert "function_node" not in captured.err and "[Op:" not in captured.err
    assert "0 reused, 8 embedded" in captured.err
    assert (world.gallery / gi.INDEX_FILE).is_file()
    lines = captured.out.splitlines()
    for query, pid in ((q1, 2), (q2, 4)):
        start = lines.index(f"Query {query} (id {pid}, camera 1)")
        ranks = lines[start + 2:start + 5]
        assert [r.split()[0] for r in ranks] == ["1", "2", "3"]
        # Both images of the query's person come first, marked as matches.
        assert all(r.split()[-1].startswith(f"{pid:04d}_") and r.split()[3] == "yes"
                   for r in ranks[:2])
        assert ranks[2].split()[3] == "no"
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert pictures == ["00_0002_c1s1_000100_00.png", "01_0004_c1s1_000101_00.png"]
    row = vis.ranked_list_row(None, [None] * 3, [0.0] * 3)
    for name in pictures:
        png = out / name
        assert mpimg.imread(png).shape[:2] == vis.canvas_size([row])
        assert (frames(png, vis.QUERY), frames(png, vis.MATCH), frames(png, vis.NON_MATCH)) \
            == (1, 2, 1)
    saved = json.loads((out / se.RESULTS_FILE).read_text())
    assert [len(r["hits"]) for r in saved["results"]] == [3, 3]
    assert saved["skipped_gallery"][0][0] == "broken.jpg" and saved["threshold"] is None


def test_search_cli_reuses_the_index_reranks_and_skips_bad_queries(world, capsys):
    out = world.root / "out_rerank"
    q1 = world.queries / "0002_c1s1_000100_00.png"
    se.main(["search", f"--model={world.run}", f"--gallery_dir={world.gallery}", f"--query={q1}",
             "--output_dir=" + str(world.root / "warmup"), "--noprogress"])
    capsys.readouterr()
    broken = world.root / "broken_query.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rc = se.main(["search", f"--model={world.run}", f"--gallery_dir={world.gallery}",
                  f"--query={world.queries}", f"--query={broken}",
                  "--top_k=8", "--rerank", "--k1=3", "--k2=2", f"--output_dir={out}",
                  "--noprogress"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "8 reused, 0 embedded" in captured.err  # the index of the first search
    assert f"skipped query {broken}: corrupt or truncated JPEG data" in captured.err
    saved = json.loads((out / se.RESULTS_FILE).read_text())
    assert saved["rerank"] == {"k1": 3, "k2": 2, "lambda_value": 0.3}
    assert len(saved["results"]) == 2 and len(list(out.glob("*.png"))) == 2
    hits = saved["results"][0]["hits"]
    assert len(hits) == 8
    assert any(abs(h["distance"] - h["l2"]) > 1e-4 for h in hits)  # re-ranked distances
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    assert "re-ranked" in captured.out


def test_no_match_threshold_stored_with_the_model(world, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(world.run, run)
    # A threshold below every distance: each query is reported as "no match".
    th.save(th.Calibration(threshold=1e-6, target_false_match_rate=0.01, false_match_rate=0.0,
                           true_match_rate=0.0, num_true_pairs=1, num_false_pairs=1,
                           source={"dataset": "hand-made"}), run)
    out = tmp_path / "out"
    q1 = world.queries / "0002_c1s1_000100_00.png"
    rc = se.main(["search", f"--model={run}", f"--gallery_dir={world.gallery}", f"--query={q1}",
                  "--top_k=2", f"--output_dir={out}", f"--index_path={tmp_path / 'index.npz'}",
                  "--noprogress"])
    assert rc == 0
    captured = capsys.readouterr()
    assert f"No-match threshold 0.0000 from {run / th.FILE_NAME}" in captured.err
    # a file that does not say it was calibrated on held-out people gets a warning
    assert "warning: this threshold was calibrated on people the model was trained on" \
        in captured.err
    assert "NO MATCH: the nearest gallery image is at L2 distance" in captured.out
    (png,) = out.glob("*.png")
    assert frames(png, vis.NO_MATCH) == 1 and frames(png, vis.QUERY) == 0
    assert json.loads((out / se.RESULTS_FILE).read_text())["results"][0]["no_match"] is True
    assert (tmp_path / "index.npz").is_file()
    # An explicit --threshold wins over the stored one.
    rc = se.main(["search", f"--model={run}", f"--gallery_dir={world.gallery}", f"--query={q1}",
                  "--top_k=2", f"--output_dir={out}", f"--index_path={tmp_path / 'index.npz'}",
                  "--threshold=100", "--noprogress"])
    assert rc == 0 and "NO MATCH" not in capsys.readouterr().out


def test_bad_input_names_the_flag(world, tmp_path, capsys):
    q1 = world.queries / "0002_c1s1_000100_00.png"
    assert se.main(["search", f"--model={tmp_path / 'nope'}", f"--gallery_dir={world.gallery}",
                    f"--query={q1}"]) == 2
    assert "--model=" in capsys.readouterr().err
    fake = tmp_path / "m.tflite"
    fake.write_bytes(b"not a flatbuffer")
    assert se.main(["search", f"--model={fake}", f"--gallery_dir={world.gallery}",
                    f"--query={q1}"]) == 2
    assert "m.tflite" in capsys.readouterr().err
    assert se.main(["search", f"--model={world.run}", f"--gallery_dir={tmp_path / 'nogallery'}",
                    f"--query={q1}"]) == 2
    assert "nogallery" in capsys.readouterr().err
    assert se.main(["search", f"--model={world.run}", f"--gallery_dir={world.gallery}"]) == 2
    assert "--query" in capsys.readouterr().err
    assert se.main(["search", f"--model={world.run}", f"--gallery_dir={world.gallery}",
                    "--top_k=0", f"--query={q1}"]) == 2
    assert "top_k" in capsys.readouterr().err


def test_missing_queries_are_reported_before_the_gallery_is_embedded(world, tmp_path, capsys):
    """Issue 13 item 7: a mistyped --query used to cost a whole gallery embedding first."""
    index = tmp_path / "index.npz"
    (tmp_path / "no_images").mkdir()
    for query, text in ((world.root / "missing.png", "no such file or folder"),
                        (tmp_path / "no_images", "no images")):
        rc = se.main(["search", f"--model={world.run}", f"--gallery_dir={world.gallery}",
                      f"--query={world.queries}", f"--query={query}", f"--index_path={index}",
                      f"--output_dir={tmp_path / 'out'}", "--noprogress"])
        assert rc == 2
        err = capsys.readouterr().err
        assert f"--query: {text}" in err and str(query) in err
        assert "Gallery" not in err and not index.exists()  # nothing embedded


def test_errors_name_the_flag_once(world, tmp_path, capsys):
    """Issue 13 item 8: "--model=X: --model=X: ..." printed the prefix twice."""
    q1 = world.queries / "0002_c1s1_000100_00.png"
    (tmp_path / "empty_export").mkdir()
    (tmp_path / "empty_export" / "notes.txt").write_text("x")
    for model in (tmp_path / "empty_export", tmp_path / "m.onnx"):
        if model.suffix:
            model.write_bytes(b"0")
        assert se.main(["search", f"--model={model}", f"--gallery_dir={world.gallery}",
                        f"--query={q1}"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: --model={model}: ") and err.count(str(model)) == 1, err


def test_odd_images_are_marked_or_refused(world, tmp_path, capsys):
    """Issue 13 item 9: a 1x1 PNG and a big square noise image were searched silently (and the
    noise image ranked first for a real query)."""
    gallery = tmp_path / "gallery"
    shutil.copytree(world.gallery, gallery)
    Image.new("RGB", (1, 1), (120, 30, 30)).save(gallery / "one_pixel.png")
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(gallery / "noise.png")
    q1 = world.queries / "0002_c1s1_000100_00.png"
    args = ["search", f"--model={world.run}", f"--gallery_dir={gallery}", f"--query={q1}",
            "--top_k=10", "--noprogress"]
    assert se.main(args + [f"--output_dir={tmp_path / 'warn'}"]) == 0
    captured = capsys.readouterr()
    assert "warning: gallery image one_pixel.png looks odd for a person crop: 1x1 px" \
        in captured.err
    assert "warning: gallery image noise.png looks odd" in captured.err
    hits = {line.split()[4]: line for line in captured.out.splitlines()
            if line.strip()[:1].isdigit()}
    assert "[odd image: 1x1 px" in hits["one_pixel.png"] and "[odd image:" in hits["noise.png"]
    assert "[odd image" not in hits["0002_c2s1_000003_00.png"]
    saved = json.loads((tmp_path / "warn" / se.RESULTS_FILE).read_text())
    assert {p for p, _ in saved["odd_gallery"]} == {"one_pixel.png", "noise.png"}
    assert se.main(args + ["--odd_images=refuse", f"--output_dir={tmp_path / 'refuse'}"]) == 0
    captured = capsys.readouterr()
    assert "skipped gallery image noise.png: refused as an odd image" in captured.err
    saved = json.loads((tmp_path / "refuse" / se.RESULTS_FILE).read_text())
    assert {h["path"] for h in saved["results"][0]["hits"]}.isdisjoint(
        {"one_pixel.png", "noise.png"})
    assert len(saved["results"][0]["hits"]) == 8


def test_search_function_ranks_and_flags_no_match():
    index = gi.GalleryIndex(root=None, model_fingerprint="x",
                            paths=["0001_c2_a.png", "0002_c2_b.png", "0001_c3_c.png", "misc.png"],
                            keys=np.zeros((4, 2), np.int64),
                            embeddings=np.array([[1, 0], [0, 1], [0.8, 0.6], [-1, 0]], np.float32))
    q = np.array([[0.96, 0.28], [-0.6, -0.8]], np.float32)
    results = se.search(q, ["q/0001_c1_q.png", "other.png"], index, top_k=3, threshold=0.5)
    first, second = results
    assert [h.path for h in first.hits] == ["0001_c2_a.png", "0001_c3_c.png", "0002_c2_b.png"]
    assert first.hits[0].l2 == pytest.approx(np.hypot(0.04, 0.28), rel=1e-5)
    assert [first.status(h) for h in first.hits] == ["yes", "yes", "no"]
    assert not first.no_match and (first.pid, first.camera) == (1, 1)
    # The second query is far from everything: nearest is misc.png at ~0.89 > 0.5.
    assert second.hits[0].path == "misc.png" and second.no_match
    assert second.status(second.hits[0]) == "?"
    assert se.search(q, ["a", "b"], index, top_k=10)[0].hits.__len__() == 4


def test_picture_names_are_distinct():
    names = se.picture_names(["a/x.png", "b/x.png", "y.jpg"])
    assert names == ["00_x.png", "01_x.png", "02_y.png"]


@pytest.mark.slow
def test_an_exported_saved_model_finds_the_same_ranking(world, tmp_path, capsys):
    from jlml_tf.inference import run_dir
    from jlml_tf.export import saved_model

    embedding_model = run_dir.load_run(world.run).embedding_model
    export = saved_model.write_saved_model(embedding_model, tmp_path / "export" / "1")
    q1 = world.queries / "0002_c1s1_000100_00.png"
    results = {}
    for name, model in (("run", world.run), ("export", export)):
        out = tmp_path / name
        rc = se.main(["search", f"--model={model}", f"--gallery_dir={world.gallery}",
                      f"--query={q1}", "--top_k=8", f"--output_dir={out}", "--noprogress",
                      f"--index_path={tmp_path / (name + '.npz')}"])
        assert rc == 0
        results[name] = json.loads((out / se.RESULTS_FILE).read_text())["results"][0]["hits"]
    capsys.readouterr()
    assert [h["path"] for h in results["run"]] == [h["path"] for h in results["export"]]
    np.testing.assert_allclose([h["l2"] for h in results["run"]],
                               [h["l2"] for h in results["export"]], atol=1e-4)
    assert gi.model_fingerprint(export) != gi.model_fingerprint(world.run)


@pytest.mark.slow  # writes a SavedModel
def test_a_tf_serving_base_path_uses_the_exported_threshold(world, tmp_path, capsys):
    """Issue 13 item 2: --model=EXPORT/jlml ignored jlml/1/assets.extra/threshold.json (never
    "no match"), and switching to --model=EXPORT/jlml/1 rebuilt the gallery index."""
    from jlml_tf.inference import run_dir
    from jlml_tf.export import saved_model

    embedding_model = run_dir.load_run(world.run).embedding_model
    calibration = th.Calibration(threshold=1e-6, target_false_match_rate=0.01,
                                 false_match_rate=0.0, true_match_rate=0.0, num_true_pairs=1,
                                 num_false_pairs=1, source={"dataset": "hand-made",
                                                             "split": "test", "held_out": True})
    base = tmp_path / "export" / "jlml"
    version = saved_model.export_saved_model(
        embedding_model, base, extra_files={th.FILE_NAME: json.dumps(calibration.to_dict())})
    q1 = world.queries / "0002_c1s1_000100_00.png"
    index = tmp_path / "index.npz"
    for model, summary in ((base, "0 reused, 8 embedded"), (version, "8 reused, 0 embedded"),
                           (str(base) + "/", "8 reused, 0 embedded")):
        rc = se.main(["search", f"--model={model}", f"--gallery_dir={world.gallery}",
                      f"--query={q1}", "--top_k=2", f"--output_dir={tmp_path / 'out'}",
                      f"--index_path={index}", "--noprogress"])
        assert rc == 0
        captured = capsys.readouterr()
        assert f"from {version / 'assets.extra' / th.FILE_NAME}: calibrated on the " \
            "identities of the test trial (unseen in training) of hand-made" in captured.err
        assert "warning: this threshold" not in captured.err
        assert "NO MATCH" in captured.out, model
        assert summary in captured.err and "full rebuild: the model changed" not in captured.err


@pytest.mark.slow  # a subprocess
def test_search_command_shows_no_tensorflow_log_lines(world, tmp_path):
    """Issue 13 item 8: jpeg_mem.cc / local_rendezvous.cc lines and {{function_node ...}}
    reached the user of `python -m jlml_tf.search`."""
    import os
    import subprocess
    import sys

    from test_embed import assert_no_tf_noise

    gallery = tmp_path / "gallery"
    shutil.copytree(world.gallery, gallery)
    person(3, 7).save(tmp_path / "q.jpg")
    (gallery / "cut.jpg").write_bytes((tmp_path / "q.jpg").read_bytes()[:200])
    (gallery / "garbled.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    res = subprocess.run([sys.executable, "-m", "jlml_tf.search", f"--model={world.run}",
                          f"--gallery_dir={gallery}", f"--query={tmp_path / 'q.jpg'}",
                          f"--output_dir={tmp_path / 'out'}", "--top_k=3", "--noprogress"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "skipped gallery image cut.jpg: corrupt or truncated JPEG data" in res.stderr
    assert "skipped gallery image garbled.jpg: corrupt or truncated JPEG data" in res.stderr
    assert_no_tf_noise(res.stdout + res.stderr)
