"""Report files: results.json values, results.md rows, cmc.png size."""
import json

import matplotlib.image
import numpy as np
import pytest

from jlml_tf.evaluation import report


def _trial(rank1, m, cmc):
    return {"cmc": np.array(cmc), "rank1": rank1, "rank5": 0.9, "rank10": 0.95, "rank20": 1.0,
            "map_official": m - 0.01, "map": m, "minp": 0.2, "num_queries": 10,
            "num_skipped_queries": 1}


@pytest.fixture
def written(tmp_path):
    results = {"JLML l2": [_trial(0.8, 0.6, [0.8, 0.9, 1.0]), _trial(0.6, 0.4, [0.6, 1.0])],
               "JLML xqda": [_trial(0.5, 0.3, [0.5] + [1.0] * 60)]}
    paper = {"rank1": 85.1, "map_official": 65.5}
    paths = report.write_report(tmp_path / "eval", results, paper=paper, paper_label="JLML paper",
                                title="Market-1501 single query")
    return results, paths


def test_paths_returned_and_files_exist(written, tmp_path):
    _, paths = written
    assert set(paths) == {"json", "markdown", "cmc"}
    assert [paths[k].name for k in ("json", "markdown", "cmc")] == \
        ["results.json", "results.md", "cmc.png"]
    assert all(p.is_file() and p.parent == tmp_path / "eval" for p in paths.values())


def test_json_holds_trials_and_aggregates(written):
    results, paths = written
    doc = json.loads(paths["json"].read_text())
    assert set(doc) == {"title", "paper", "extra", "results"}
    assert doc["paper"] == {"rank1": 85.1, "map_official": 65.5}
    l2 = doc["results"]["JLML l2"]
    assert set(l2) == {"trials", "num_trials", "mean", "std"} and l2["num_trials"] == 2
    for got, given in zip(l2["trials"], results["JLML l2"]):
        assert set(got) == set(given)
        for key, value in given.items():
            np.testing.assert_allclose(got[key], value)
    assert l2["mean"]["rank1"] == pytest.approx(0.7) and l2["std"]["rank1"] == pytest.approx(0.1)
    np.testing.assert_allclose(l2["mean"]["cmc"], [0.7, 0.95, 1.0])
    assert doc["results"]["JLML xqda"]["std"]["map"] == 0.0


def test_markdown_table_rows(written):
    _, paths = written
    text = paths["markdown"].read_text()
    assert text.startswith("# Market-1501 single query\n")
    assert "| Method | R1 | R5 | R10 | R20 | mAP (official) | mAP | mINP |" in text
    # Two trials: mean ± std in percent; rank5..20 and mINP identical across trials.
    assert ("| JLML l2 | 70.0 ± 10.0 | 90.0 ± 0.0 | 95.0 ± 0.0 | 100.0 ± 0.0 | 49.0 ± 10.0 | "
            "50.0 ± 10.0 | 20.0 ± 0.0 |") in text
    assert "| JLML xqda | 50.0 | 90.0 | 95.0 | 100.0 | 29.0 | 30.0 | 20.0 |" in text
    assert "| JLML paper | 85.1 | - | - | - | 65.5 | - | - |" in text


def test_cmc_png_has_the_expected_size(written):
    _, paths = written
    image = matplotlib.image.imread(paths["cmc"])
    width, height = (int(round(s * report.FIGURE_DPI)) for s in report.FIGURE_SIZE)
    assert image.shape[:2] == (height, width) == (480, 640)
    assert image[..., :3].std() > 0.01  # not a blank canvas


def test_single_result_dict_is_one_trial(tmp_path):
    paths = report.write_report(tmp_path, {"l2": _trial(0.25, 0.5, [0.25, 1.0])},
                                extra={"dataset": "cuhk03"})
    doc = json.loads(paths["json"].read_text())
    assert doc["results"]["l2"]["num_trials"] == 1 and doc["extra"] == {"dataset": "cuhk03"}
    assert "| l2 | 25.0 | 90.0 |" in paths["markdown"].read_text()


def test_empty_results_rejected(tmp_path):
    with pytest.raises(ValueError):
        report.write_report(tmp_path, {})
