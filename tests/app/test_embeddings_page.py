"""The Embeddings page (app/pages/embeddings.py) through Streamlit's AppTest, on a tiny fixture: six
classes in three families, a checkpoint JSON without weights and a projection file beside it.

The first view draws from the file with no UMAP and no model; the embedding selector switches the
chart; colour by family; the nearest set-A classes of a chosen set-B class; a stale or missing file
gives a note and the page computes instead.
"""
from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

st_testing = pytest.importorskip("streamlit.testing.v1", reason="the app extra (streamlit) is not installed")
AppTest = st_testing.AppTest
APP = Path(__file__).resolve().parents[2] / "app"
sys.path.insert(0, str(APP))

from maskx_app import projection  # noqa: E402

NAMES = ["red star", "blue star", "green gear", "big gear", "small tile", "odd tile"]
IDS = [1, 2, 3, 4, 5, 6]
SET_A = [1, 3, 5]  # red star, green gear, small tile; B: blue star, big gear, odd tile
SHA = "0" * 64
# Rows chosen so the nearest set-A classes are known: in "w_cls" each B class lies beside its own
# family's A class; in "glove" beside the next family's (blue star → green gear, big gear → small
# tile, odd tile → red star). Both are centred on the mean row first (nearest_a), which these
# symmetric rows keep.
W_CLS = np.array([[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 1, 0, 0], [0, 0.9, 0.1, 0], [0, 0, 1, 0], [0.1, 0, 0.9, 0]])
GLOVE = np.array([[1, 0, 0, 0], [0, 0.9, 0.1, 0], [0, 1, 0, 0], [0, 0, 0.9, 0.1], [0, 0, 1, 0], [0.9, 0, 0.1, 0]])


def fixture_projections(sha: str = SHA):
    mats = {"w_cls": W_CLS, "glove": GLOVE, "w_seg": np.ones((6, 3))}
    in_a = np.array([c in SET_A for c in IDS])
    fams, source = projection.class_families(NAMES, IDS)
    proj = projection.compute_projections(mats, in_a, fams, source, project=lambda m: np.asarray(m, float)[:, :2] + 0.0)
    proj.meta.update(weights_sha256=sha, classes_sha256=projection.classes_digest(NAMES, IDS, SET_A))
    return proj


class FakePredictor:
    """What the page asks of a model when it draws masks: no class of the 3000-class world, so it
    falls back to examples from the val data or predictions (here none)."""
    class_names, category_ids, set_a = NAMES, IDS, set(SET_A)
    meta = {"sha256": SHA, "iteration": 1, "config": {"mask_head": "transfer", "transfer_input": "cls"}}
    mask_threshold = 0.5

    def predict(self, image, score_thresh=0.0):
        return []


@pytest.fixture
def model_dir(tmp_path, monkeypatch, app_val):
    """A checkpoint JSON (no weights) with its projection file; UMAP and model loads refused."""
    import common

    d = tmp_path / "model"
    d.mkdir()
    (d / "ckpt_0000001.json").write_text(json.dumps({
        "format": "maskx-checkpoint-1", "iteration": 1, "weights": "ckpt_0000001.safetensors", "sha256": SHA,
        "class_names": NAMES, "category_ids": IDS, "set_A": SET_A, "split": {"name": "fixture", "A": SET_A},
        "config": {"mask_head": "transfer", "transfer_input": "cls"}}))
    projection.save_projections(d / projection.PROJECTIONS_FILE, fixture_projections())
    for k, v in {"MASKX_MODEL": str(d), "MASKX_RESULTS": str(tmp_path / "results"),
                 "MASKX_RUNS": str(tmp_path / "runs"), "MASKX_DATA": str(app_val),
                 "MASKX_APP_CACHE": str(tmp_path / "cache"), "MASKX_SCORE": "0.5"}.items():
        monkeypatch.setenv(k, v)

    def no_umap(*a, **k):
        raise AssertionError("UMAP was called")

    monkeypatch.setattr(projection, "umap_2d", no_umap)
    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=no_umap))
    monkeypatch.setattr(common, "load_model", lambda path=None: (FakePredictor(), None))
    return d


def open_embeddings(timeout: float = 60) -> AppTest:
    at = AppTest.from_file(str(APP / "streamlit_app.py"), default_timeout=timeout).run()
    at.switch_page("pages/embeddings.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def chart(at) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def nearest_table(at) -> list[str]:
    return list(at.dataframe[0].value["set-A class"])


def test_first_view_draws_from_the_file_without_computing(model_dir, monkeypatch):
    def no_compute(*a, **k):
        raise AssertionError("the projections were computed")

    monkeypatch.setattr(projection, "projections_of", no_compute)
    t0 = time.perf_counter()
    at = open_embeddings()
    assert time.perf_counter() - t0 < 60  # two script runs (Segment, then Embeddings) with no UMAP
    assert not at.error and texts(at.title) == "Embeddings"
    assert "Computed on this visit" not in texts(at.info)
    assert len(at.get("plotly_chart")) == 1  # one chart; the side-by-side grid is off by default
    assert at.radio(key="emb_kind").value == "w_cls"  # T's own input (the checkpoint's transfer_input)
    assert at.radio(key="emb_kind").options[:2] == ["GloVe", "w_cls ← T's input"]
    assert at.selectbox(key="emb_b_class").value == 1  # the first set-B class, blue star
    assert nearest_table(at) == ["red star", "green gear", "small tile"]


def test_kind_selector_switches_the_chart_and_the_nearest_classes(model_dir):
    at = open_embeddings()
    before = chart(at)
    at.radio(key="emb_kind").set_value("glove").run()
    after = chart(at)
    assert "GloVe" in after["layout"]["title"]["text"] and after["data"] != before["data"]
    assert nearest_table(at)[0] == "green gear"  # in GloVe blue star sits beside the gears
    at.radio(key="emb_kind").set_value("w_seg").run()
    assert "one row shared by every class" in chart(at)["layout"]["title"]["text"]
    assert "same row" in texts(at.caption) and not at.exception


def test_colour_by_family_and_by_set(model_dir):
    at = open_embeddings()
    assert at.radio(key="emb_colour").value == "family"
    legend = {t["name"] for t in chart(at)["data"] if t.get("showlegend", True)}
    assert {"star", "gear", "tile"} <= legend and "set A" not in legend
    at.radio(key="emb_colour").set_value("set").run()
    legend = {t["name"] for t in chart(at)["data"]}
    assert {"set A", "set B"} <= legend and "star" not in legend
    assert not at.exception


@pytest.mark.parametrize("b_row,expected", [(1, "red star"), (3, "green gear"), (5, "small tile")])
def test_nearest_set_a_classes_of_a_chosen_b_class(model_dir, b_row, expected):
    at = open_embeddings()
    at.selectbox(key="emb_b_class").set_value(b_row).run()
    table = at.dataframe[0].value
    assert table["set-A class"][0] == expected and len(table) == 3  # every A class, most similar first
    assert list(table["cosine"]) == sorted(table["cosine"], reverse=True)
    assert f"Nearest set-A classes of {NAMES[b_row]}" in texts(at.markdown)
    assert "1 of 3 share its family" in texts(at.caption)
    spec = chart(at)
    assert any(t["name"] == "nearest set A" for t in spec["data"])  # ringed in the chart
    assert [a["text"] for a in spec["layout"]["annotations"]] == [NAMES[b_row], "1", "2", "3"]


def test_a_selected_class_shows_its_examples(model_dir):
    at = open_embeddings()
    assert "Select points in the projection" in texts(at.info)
    at.multiselect(key="emb_classes").set_value(["odd tile"]).run()
    assert "Select points in the projection" not in texts(at.info)
    assert "No example" in texts(at.caption) and "odd tile" in texts(at.caption)  # none in the fixture's data
    assert not at.exception


@pytest.mark.parametrize("case", ["missing", "stale", "corrupt"])
def test_a_missing_or_stale_file_is_a_note_and_the_page_still_works(model_dir, monkeypatch, case):
    file = model_dir / projection.PROJECTIONS_FILE
    if case == "missing":
        file.unlink()
    elif case == "stale":
        projection.save_projections(file, fixture_projections(sha="1" * 64))
    else:
        file.write_bytes(file.read_bytes()[:200])
    calls = []
    monkeypatch.setattr(projection, "projections_of", lambda predictor, **k: calls.append(1) or fixture_projections())
    at = open_embeddings()
    note = texts(at.info)
    assert "Computed on this visit" in note and "scripts/projections.py" in note
    assert {"missing": "no precomputed projections", "stale": "stale", "corrupt": "unreadable"}[case] in note
    assert calls and len(at.get("plotly_chart")) == 1 and nearest_table(at)[0] == "red star"
    assert not at.error and not at.exception


def test_every_embedding_side_by_side(model_dir):
    at = open_embeddings()
    at.toggle(key="emb_all").set_value(True).run()
    assert len(at.get("plotly_chart")) == 1 + 3 and not at.exception


@pytest.mark.slow
def test_a_models_written_projections_open_the_page_without_umap(tiny_model, app_val, tmp_path, monkeypatch):
    """``build_projections`` (scripts/projections.py, maskx ship) on a trained model writes the file the
    page then draws from, for that model's weights, with no UMAP on the visit."""
    import os

    model = tmp_path / "model"
    model.mkdir()
    for f in tiny_model.glob("ckpt_*"):
        os.symlink(f, model / f.name)
    path = projection.build_projections(model)
    assert path == model / projection.PROJECTIONS_FILE
    proj = projection.load_projections(path)
    assert {"w_cls", "w_box", "w_cls+box", "randn", "w_seg"} <= set(proj.kinds) and len(set(proj.families)) == 10
    assert proj.xy["w_cls"].shape == (80, 2) and proj.meta["family_source"] == "the embedded world's categories"
    for k, v in {"MASKX_MODEL": str(model), "MASKX_DATA": str(app_val), "MASKX_APP_CACHE": str(tmp_path / "cache"),
                 "MASKX_RESULTS": str(tmp_path / "results"), "MASKX_RUNS": str(tmp_path / "runs")}.items():
        monkeypatch.setenv(k, v)

    def no_umap(*a, **k):
        raise AssertionError("UMAP was called")

    monkeypatch.setattr(projection, "umap_2d", no_umap)
    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=no_umap))
    at = open_embeddings(timeout=300)
    assert not at.error and "Computed on this visit" not in texts(at.info)
    assert len(at.dataframe[0].value) == 5 and len(at.get("plotly_chart")) == 1
