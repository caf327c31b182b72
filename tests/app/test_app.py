"""The Streamlit app (app/) through Streamlit's AppTest: every page renders without a traceback,
widgets change what is shown, and bad inputs (missing or mismatched model, bad uploads, a folder
that is not a dataset, missing or corrupt results) end in a clear message.

Fast tests need no model; the slow ones train a tiny one once per session (tests/app_fixtures.py).
"""
from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_fixtures import write_fake_results  # the fixtures themselves are in conftest.py
from helpers import ROOT
from conftest import vg_fixture

st_testing = pytest.importorskip("streamlit.testing.v1", reason="the app extra (streamlit) is not installed")
AppTest = st_testing.AppTest
APP = Path(__file__).resolve().parents[2] / "app"
sys.path.insert(0, str(APP))


@pytest.fixture
def env(tmp_path, monkeypatch, app_val):
    """App settings in tmp folders: no model, empty results, the 8-image val set."""
    values = {"MASKX_MODEL": str(tmp_path / "no-model"), "MASKX_RESULTS": str(tmp_path / "results"),
              "MASKX_RUNS": str(tmp_path / "runs"), "MASKX_DATA": str(app_val),
              "MASKX_APP_CACHE": str(tmp_path / "cache"), "MASKX_SCORE": "0.5"}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return values


def open_page(page: str, timeout: float = 120) -> AppTest:
    at = AppTest.from_file(str(APP / "streamlit_app.py"), default_timeout=timeout).run()
    if page != "segment":
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ fast: no model needed

def test_settings_precedence(monkeypatch, tmp_path):
    import common

    monkeypatch.setenv("MASKX_MODEL", str(tmp_path / "from-env"))
    monkeypatch.setenv("MASKX_SCORE", "not a number")
    s = common.settings(["--model", str(tmp_path / "from-cli"), "--results", "/x/results"])
    assert s.model == tmp_path / "from-cli" and s.results == Path("/x/results") and s.score == common.DEFAULT_SCORE
    assert common.settings([]).model == tmp_path / "from-env"
    monkeypatch.delenv("MASKX_MODEL")
    assert common.settings(["--model"]).model == common.ROOT / "models/maskx-3k"  # bad flag: defaults
    assert common.settings(["--score", "3"]).score == 1.0


def test_picture_enlarges_small_images_and_labels_ground_truth_by_name():
    import common
    from maskx_app.visualize import GREEN, Drawn

    rgb = np.zeros((64, 48, 3), np.uint8)
    mask = np.zeros((64, 48), bool)
    mask[10:20, 10:30] = True
    out = common.picture(rgb, [Drawn([10, 10, 30, 20], mask, "star", None, True)])  # None: ground truth
    assert out.shape == (704, 528, 3)  # x11: the short side reaches 512
    inside = out[11 * 15, 11 * 20].astype(int)
    assert inside[1] > inside[0] and inside[1] > 0.4 * GREEN[1]  # masked in set A's green


@pytest.mark.parametrize("page", ["segment", "browse", "embeddings"])
def test_missing_model_is_a_message(env, page):
    at = open_page(page)
    assert "No model at" in texts(at.error) and "--model" in texts(at.error)
    if page == "segment":  # AppTest drops the entrypoint's sidebar after switch_page (the browser test sees it)
        assert "No usable model" in texts(at.sidebar.warning)


def test_unusable_checkpoint_is_a_message(env, tmp_path, monkeypatch):
    bad = tmp_path / "bad-run"
    bad.mkdir()
    (bad / "ckpt_0000001.json").write_text("{not json")
    monkeypatch.setenv("MASKX_MODEL", str(bad))
    at = open_page("segment")
    assert "cannot be used" in texts(at.error) and "corrupt checkpoint metadata" in texts(at.error)
    at.sidebar.text_input(key="model_path").set_value(str(tmp_path / "typed")).run()  # the sidebar's field
    assert f"No model at `{tmp_path / 'typed'}`" in texts(at.error)


def frame(at, column: str):
    """The page's first table with ``column`` (AppTest's tables carry no key)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def drawn_counts(at) -> list[int]:
    """The three model columns' instance counts, from their image captions ("N instances drawn")."""
    return [int(c.split()[0]) for img in at.get("image") for c in img.captions if c and c.endswith("instances drawn")]


def test_compare_pending_without_results(env):
    at = open_page("compare")
    assert texts(at.title) == "Compare"
    # the three models, the sentence and the per-class chart
    assert sum(i.value.startswith("Pending") for i in at.info) == 5
    assert not at.error and len(at.get("image")) == 4  # the image and its ground truth all the same


def test_compare_first_view_of_the_committed_results(env, monkeypatch, tmp_path):
    """On a fresh clone (the study's data not generated: its val images are drawn again) and at its
    default settings, the page draws instances in every column, says what the numbers mean and sorts
    set B's classes by what transfer gained."""
    import dataclasses

    from maskx_study.plan import SCALES

    monkeypatch.setitem(SCALES, "study", dataclasses.replace(SCALES["study"], data=str(tmp_path / "absent")))
    monkeypatch.setenv("MASKX_RESULTS", str(ROOT / "results"))
    at = open_page("compare")
    assert not at.error and not at.warning
    assert "drawn again" in texts(at.caption)
    counts = drawn_counts(at)
    assert len(counts) == 3 and min(counts) >= 1, counts
    said = texts(at.markdown)
    assert "What the numbers mean" in said and "class-agnostic head" in said and "gap" in said
    gains = frame(at, "gain")
    assert len(gains) > 1 and list(gains["gain"]) == sorted(gains["gain"], reverse=True)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert chart["layout"]["xaxis"]["categoryarray"] == list(gains["class"])


def test_compare_from_saved_examples_shows_iou_with_the_ground_truth(env, fake_results, monkeypatch):
    monkeypatch.setenv("MASKX_RESULTS", str(fake_results))
    at = open_page("compare")
    assert not at.error and not at.warning
    counts = drawn_counts(at)
    assert len(counts) == 3 and min(counts) >= 1
    assert at.slider(key="compare_thresh").value == 0.3  # the kept predictions' score floor
    # the fake predictions are the ground truth itself: every object found, mask IoU 1
    objects = frame(at, "set")
    ious = objects[[c for c in objects.columns if c not in ("class", "set")]]
    assert len(objects) >= 1 and (ious == "1.00").any().all()
    at.slider(key="compare_thresh").set_value(0.9).run()  # fewer instances above a higher threshold
    assert sum(drawn_counts(at)) < sum(counts)
    assert "The results keep no predictions" not in texts(at.caption)
    at.slider(key="compare_thresh").set_value(0.1).run()
    assert "The results keep no predictions scoring under 0.30" in texts(at.caption)
    at.selectbox(key="compare_direction").set_value("nonvoc2voc").run()  # only the oracle covers it
    assert sum(i.value.startswith("Pending") for i in at.info) == 4  # two models, the sentence, the chart
    assert not at.exception


def test_compare_sentence_and_gains_follow_the_results(env, fake_results, monkeypatch):
    from maskx_app import compare

    monkeypatch.setenv("MASKX_RESULTS", str(fake_results))
    at = open_page("compare")
    records = {p: json.loads(f.read_text()) for f in fake_results.glob("*.json")
               for p in [json.loads(f.read_text())["preset"]]}
    b = [compare.ap(records[p], "voc2nonvoc", "B") for _, p in compare.MODELS]
    assert compare.headline(*b, "voc→non-voc, seed 0") in texts(at.markdown)
    gains = frame(at, "gain")
    assert list(gains["class"]) == [r["class"] for r in compare.b_gains(records, "voc2nonvoc")]


def test_compare_a_missing_result_is_pending_and_the_rest_is_drawn(env, tmp_path, monkeypatch):
    results = tmp_path / "results"
    write_fake_results(results, presets=("agnostic_e2e", "oracle_e2e"))
    monkeypatch.setenv("MASKX_RESULTS", str(results))
    at = open_page("compare")
    assert not at.exception and not at.error
    pending = [i.value for i in at.info if i.value.startswith("Pending")]
    assert any("transfer_clsbox_2lrelu_mlp_e2e__voc2nonvoc__s0.json" in v for v in pending)
    assert any("Mask^X R-CNN missing" in v for v in pending)  # the sentence says what it waits for
    assert len(drawn_counts(at)) == 2 and min(drawn_counts(at)) >= 1


def test_compare_masks_on_ground_truth_boxes(env, tmp_path, monkeypatch):
    results = tmp_path / "results"
    write_fake_results(results, gt_box_masks=True)
    monkeypatch.setenv("MASKX_RESULTS", str(results))
    at = open_page("compare")
    assert not at.exception and not at.error
    assert at.radio(key="compare_masks").value == "the models' detections"
    at.radio(key="compare_masks").set_value("the ground-truth boxes and classes").run()  # detection taken out
    assert at.slider(key="compare_thresh").disabled
    objects = frame(at, "set")
    # every object gets each model's mask, with the IoU its result recorded
    assert list(objects.iloc[0, 2:]) == ["0.50", "0.60", "0.70"]
    counts = drawn_counts(at)
    assert len(counts) == 3 and min(counts) == len(objects)
    at.radio(key="compare_masks").set_value("the models' detections").run()
    assert not at.exception and at.slider(key="compare_thresh").disabled is False


def test_compare_reads_an_older_study_kept_in_a_subfolder(env, tmp_path, monkeypatch):
    results = tmp_path / "results"
    write_fake_results(results)
    write_fake_results(results / "v3", presets=("agnostic_e2e",))
    monkeypatch.setenv("MASKX_RESULTS", str(results))
    at = open_page("compare")
    assert at.selectbox(key="compare_results").options == ["results", "results/v3"]
    assert len(drawn_counts(at)) == 3
    at.selectbox(key="compare_results").set_value(results / "v3").run()
    assert not at.exception and not at.error
    assert len(drawn_counts(at)) == 1 and sum(i.value.startswith("Pending") for i in at.info) == 4


def test_compare_corrupt_result_is_a_warning(env, tmp_path, monkeypatch):
    results = tmp_path / "results"
    write_fake_results(results, presets=("agnostic_e2e",))
    bad = next(results.glob("*.json"))
    bad.write_text(bad.read_text()[:100])
    monkeypatch.setenv("MASKX_RESULTS", str(results))
    at = open_page("compare")
    assert "unreadable" in texts(at.warning)
    assert not at.exception


def test_warm_up_without_a_model_leaves_the_page_its_message(env):
    import common

    common.warm_up()  # app/serve.py's start-up work: no model here, so nothing to load, and no error
    at = open_page("segment")
    assert "No model at" in texts(at.error)


def test_samples_are_listed_without_pixels_and_read_one_at_a_time(tmp_path, monkeypatch):
    import common

    monkeypatch.setattr(common, "sample_ids", lambda n=3: tuple(range(1, n + 1)))  # not the shipped model's

    folder = tmp_path / "val"
    (folder / "images").mkdir(parents=True)
    images = [{"id": i, "file_name": f"{i}.png", "height": 8, "width": 8} for i in (3, 1, 2)]
    (folder / "annotations.json").write_text(json.dumps({"images": images}))
    for i in (1, 2):
        (folder / "images" / f"{i}.png").write_bytes(png(np.full((8, 8, 3), 40 * i, np.uint8)))
    # a listed file is missing: every sample is rendered instead (the 80-class world's, 256 px)
    listed = common.sample_list(str(folder), 3)
    assert [s[1] for s in listed] == [1, 2, 3] and all(s[2] == "" for s in listed)
    assert common.sample_image(str(folder), 0, 3)[2].shape == (256, 256, 3)
    (folder / "images" / "3.png").write_bytes(b"not a png")
    common._sample_list.clear()  # cached per folder, as in the app
    common._sample_image.clear()
    listed = common.sample_list(str(folder), 3)
    assert [Path(s[2]).name for s in listed] == ["1.png", "2.png", "3.png"]
    label, image_id, rgb = common.sample_image(str(folder), 1, 3)
    assert image_id == 2 and rgb.shape == (8, 8, 3) and rgb[0, 0, 0] == 80
    label, image_id, rgb = common.sample_image(str(folder), 2, 3)  # unreadable: rendered, and said so
    assert "3.png is unreadable" in label and rgb.shape == (256, 256, 3)


def test_samples_are_the_ones_the_models_examples_name(tmp_path, monkeypatch):
    import common

    model = tmp_path / "model"
    model.mkdir()
    (model / "ckpt_0000001.json").write_text("{}")
    monkeypatch.setenv("MASKX_MODEL", str(model))
    assert common.sample_ids(3) == (1, 2, 3)  # no examples.json: the first val images
    (model / "examples.json").write_text(json.dumps({"made_with": {"image_ids": [7, 4]}}))
    assert common.sample_ids(3) == (7, 4)  # written by `maskx ship` (pick_sample_ids): read again
    assert [s[1] for s in common.sample_list(str(tmp_path / "absent"), 3)] == [7, 4]
    assert common.sample_image(str(tmp_path / "absent"), 1, 3)[1] == 4


def test_preload_model_loads_each_model_once_in_the_background(env, monkeypatch, tmp_path):
    import threading

    import common

    seen, done = [], threading.Event()
    monkeypatch.setattr(common, "load_model", lambda path: seen.append(path) or done.set())
    monkeypatch.setattr(common, "_preloading", set())
    for _ in range(3):
        common.preload_model(tmp_path / "a", delay=0.0)
    assert done.wait(30)
    common.preload_model(tmp_path / "b", delay=0.0)
    for t in [t for t in threading.enumerate() if t.name == "maskx-preload"]:
        t.join(30)
    assert sorted(seen) == [tmp_path / "a", tmp_path / "b"]


def eval_json_model(folder: Path) -> Path:
    """A model folder holding only an ``eval.json`` with per-class AP (what the Browse page reads)."""
    folder.mkdir(parents=True)
    per_class = {"fat star": {"set": "A", "segm_AP": 40.0, "bbox_AP": 50.0},
                 "striped hollow fine gear": {"set": "B", "segm_AP": 4.5, "bbox_AP": 20.0},
                 "thin star": {"set": "B", "segm_AP": None, "bbox_AP": None}}  # no ground truth: no row
    (folder / "eval.json").write_text(json.dumps({"A": {"segm_AP": 40.0}, "B": {"segm_AP": 4.5},
                                                  "per_class": per_class}))
    return folder


def test_browse_missing_val_folder_explains_and_offers_to_generate_it(env, tmp_path, monkeypatch):
    """A fresh clone: the default val folder of the 3000-class world is absent. The page says what it is,
    shows the command that makes it and a button, and still shows the model's per-class AP."""
    data = tmp_path / "data" / "synth3k" / "val"
    monkeypatch.setenv("MASKX_DATA", str(data))
    monkeypatch.setenv("MASKX_MODEL", str(eval_json_model(tmp_path / "model")))
    at = open_page("browse")
    assert not at.error and "does not exist yet" in texts(at.warning) and "3000-class" in texts(at.warning)
    assert "python -m maskx data synth3k --out" in texts(at.code)
    assert at.button(key="browse_generate").label.startswith("Generate `val` now (1000 images)")
    assert [m.value for m in at.metric] == ["40.0", "4.5"] and "eval.json" in texts(at.caption)
    assert list(at.dataframe[0].value["class"]) == ["fat star", "striped hollow fine gear"]
    assert not data.exists()  # nothing is generated unasked
    at.text_input(key="browse_path").set_value(str(tmp_path / "other")).run()  # nothing the app can make
    assert "no such file or folder" in texts(at.error) and not at.button


def test_browse_generates_the_missing_val_folder_on_request(env, tmp_path, monkeypatch):
    data = tmp_path / "synth3k" / "val"
    monkeypatch.setenv("MASKX_DATA", str(data))
    at = open_page("browse")
    assert "No `eval.json` with per-class AP" in texts(at.info)
    at.number_input(key="browse_generate_n").set_value(3).run()
    at.button(key="browse_generate").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(list((data / "images").iterdir())) == 3
    assert json.loads((data / "annotations.json").read_text())["info"]["num_images"] == 3
    assert "does not exist yet" not in texts(at.warning)
    assert "No model at" in texts(at.error)  # the page opened the new folder and asks for the model next


def test_class_filter_enter_adds_the_first_match_only_and_chips_wrap():
    """Streamlit's multiselect puts "Select N matches" first while one types, so Enter added every match:
    every page's class filter (common.class_filter) turns that row off and lets chips wrap; the page
    CSS (common.page_style) lets a long class name wrap inside its chip instead of being cut."""
    def script():
        import common

        common.page_style()
        common.class_filter("Classes", ["five star", "four star", "striped hollow fine gear"], key="classes")

    at = AppTest.from_function(script).run()
    assert not at.exception
    box = at.multiselect(key="classes")
    assert box.proto.select_all == 0 and box.proto.wrap is True
    import common

    assert "[data-tag]" in common.CHIP_CSS and "text-overflow: clip" in common.CHIP_CSS
    assert any(common.CHIP_CSS in str(getattr(e.proto, "body", "")) for e in at.get("html"))


# ------------------------------------------------------------------ slow: a tiny trained model

@pytest.fixture
def model_env(env, tiny_model, monkeypatch):
    monkeypatch.setenv("MASKX_MODEL", str(tiny_model))
    return env


@pytest.mark.slow
def test_segment_widgets_change_what_is_shown(model_env):
    at = open_page("segment")
    assert not at.error and "No instance scores 0.50" in texts(at.info)  # the tiny model scores ~0.02
    at.slider(key="seg_thresh").set_value(0.0).run()
    table = at.dataframe[0].value
    assert len(table) > 0 and set(table.columns) >= {"class", "set", "score", "mask area (px)"}
    n, sets = len(table), set(table["set"])
    if "B" in sets:
        at.toggle(key="seg_show_b").set_value(False).run()
        if sets == {"B"}:  # nothing of set A left: a message, no table
            assert not at.dataframe and "hidden by the set or class filters" in texts(at.info)
        else:
            assert set(at.dataframe[0].value["set"]) <= {"A"} and len(at.dataframe[0].value) < n
        at.toggle(key="seg_show_b").set_value(True).run()
    name = table["class"][0]
    assert at.multiselect(key="seg_classes").proto.select_all == 0  # Enter adds one match (common.class_filter)
    at.multiselect(key="seg_classes").set_value([name]).run()
    assert set(at.dataframe[0].value["class"]) == {name}
    at.slider(key="seg_thresh").set_value(1.0).run()  # past every instance: the chosen class stays chosen
    assert at.multiselect(key="seg_classes").value == [name]
    assert f"No instance of {name} scores 1.00" in texts(at.caption)
    at.slider(key="seg_thresh").set_value(0.0).run()
    assert set(at.dataframe[0].value["class"]) == {name}
    at.toggle(key="seg_show_a").set_value(False).run()
    at.toggle(key="seg_show_b").set_value(False).run()
    assert "hidden by the set or class filters" in texts(at.info)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download overlay (PNG)", "Download results (COCO JSON)"]
    at.selectbox(key="seg_sample").set_value(3).run()
    assert not at.exception and at.get("image")[0].captions[0].startswith("val-4.png:")


@pytest.mark.slow
def test_warm_up_fills_the_caches_the_first_page_reads(model_env, monkeypatch):
    """app/serve.py runs ``common.warm_up`` as the server starts: the first page then finds the model
    loaded and the first sample segmented, and neither is computed again."""
    import common
    import maskx
    from maskx.predictor import Predictor

    calls = {"load": 0, "predict": 0}
    load, predict = maskx.load, Predictor.predict

    def counted_load(*a, **k):
        calls["load"] += 1
        return load(*a, **k)

    def counted_predict(self, *a, **k):
        calls["predict"] += 1
        return predict(self, *a, **k)

    monkeypatch.setattr(maskx, "load", counted_load)
    monkeypatch.setattr(Predictor, "predict", counted_predict)
    common._load_model.clear()
    common._predict.clear()
    common.warm_up()
    assert calls == {"load": 1, "predict": 1}
    at = open_page("segment")
    assert not at.error and at.get("image")[0].captions[0].startswith("val-1.png:")
    assert calls == {"load": 1, "predict": 1}
    at.selectbox(key="seg_sample").set_value(1).run()  # another image: segmented now
    assert calls == {"load": 1, "predict": 2}


@pytest.mark.slow
def test_segment_draws_saved_masks_without_loading_the_model(model_env, tiny_model, tmp_path, monkeypatch):
    """A sample image whose masks were saved beside the model for its weights (examples.json, as
    `maskx ship` writes for the shipped model) is drawn without loading the model; another runs it."""
    import shutil

    import common
    import maskx
    from maskx.instances import Instance, write_saved

    run = tmp_path / "run-with-examples"
    shutil.copytree(tiny_model, run)
    sha = json.loads(sorted(run.glob("ckpt_*.json"))[-1].read_text())["sha256"]
    _, image_id, rgb = common.sample_images(model_env["MASKX_DATA"])[0]
    mask = np.zeros(rgb.shape[:2], bool)
    mask[10:30, 10:40] = True
    write_saved(run / "examples.json", sha, [(image_id, rgb, [Instance([10.0, 10.0, 40.0, 30.0], 0.9, 1, 7,
                                                                      "saved thing", True, mask)])], {})
    monkeypatch.setenv("MASKX_MODEL", str(run))
    calls = []
    load = maskx.load
    monkeypatch.setattr(maskx, "load", lambda *a, **k: calls.append(a) or load(*a, **k))
    preloads = []
    monkeypatch.setattr(common, "preload_model", lambda *a: preloads.append(a))
    common._load_model.clear()
    common.warm_up()  # app/serve.py at start: the samples only, no model
    assert calls == []
    at = open_page("segment")
    assert not at.error and calls == [] and len(preloads) == 1  # drawn first, the model loads after
    assert "Masks saved with this model's weights" in texts(at.caption)
    assert list(at.dataframe[0].value["class"]) == ["saved thing"]
    at.selectbox(key="seg_sample").set_value(1).run()  # not saved: the model runs
    assert not at.exception and not at.error and len(calls) == 1
    assert "Masks saved" not in texts(at.caption)


def test_only_the_shipped_model_is_called_shipped(env, monkeypatch):
    import common
    from maskx.hub import shipped_dir

    assert not common.is_shipped_model()  # env: a folder with no model
    monkeypatch.setenv("MASKX_MODEL", str(shipped_dir("maskx-3k")))
    assert common.is_shipped_model()
    ckpt = next(shipped_dir("maskx-3k").glob("ckpt_*.json"))
    monkeypatch.setenv("MASKX_MODEL", str(ckpt))
    assert common.is_shipped_model()


@pytest.mark.slow
def test_an_upload_to_the_shipped_model_says_what_it_knows(env, monkeypatch):
    from maskx.hub import shipped_dir

    monkeypatch.setenv("MASKX_MODEL", str(shipped_dir("maskx-3k")))
    at = open_page("segment", timeout=300)
    at.radio(key="seg_source").set_value("Upload").run()
    photo = png(np.random.default_rng(1).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    at.file_uploader(key="seg_upload").set_value(("photo.png", photo, "image/png")).run()
    assert not at.exception and "knows only the embedded 3000-class world" in texts(at.info)
    assert "train on COCO or Visual Genome" in texts(at.info)


@pytest.mark.slow
def test_segment_uploads(model_env):
    at = open_page("segment")
    at.radio(key="seg_source").set_value("Upload").run()
    assert "Choose an image file" in texts(at.info)
    rng = np.random.default_rng(0)
    good = png(rng.integers(0, 255, (100, 120, 4), dtype=np.uint8), "RGBA")
    cases = [("rgba.png", good, None, "transparent areas"),
             ("gray.png", png(rng.integers(0, 255, (90, 90), dtype=np.uint8), "L"), None, "grayscale"),
             ("huge.png", png(np.zeros((200, 5000, 3), np.uint8)), None, "downscaled from 5000 x 200"),
             ("notes.png", b"this is not an image", "not an image file", None),
             ("cut.png", good[: len(good) // 2], "truncated or corrupt", None),
             ("empty.jpg", b"", "the file is empty", None)]
    for name, data, error, note in cases:
        at.file_uploader(key="seg_upload").set_value((name, data, "image/png")).run()
        assert not at.exception, name
        assert "knows only the embedded" not in texts(at.info)  # a model of the user's own: no such note
        if error:
            assert error in texts(at.error) and name in texts(at.error), name
        else:
            assert not at.error and note in texts(at.caption), name
            at.slider(key="seg_thresh").set_value(1.0).run()
            assert "lower the score threshold" in texts(at.info) or "found nothing" in texts(at.info)


@pytest.mark.slow
def test_mismatched_checkpoint_is_a_message(model_env, tiny_model, tmp_path, monkeypatch):
    ckpt = sorted(tiny_model.glob("ckpt_*.json"))[-1]
    meta = json.loads(ckpt.read_text())
    meta["config"]["mask_dim"] = 16  # the weights were trained with 32
    other = tmp_path / "other"
    other.mkdir()
    (other / ckpt.name).write_text(json.dumps(meta))
    os.symlink(tiny_model / meta["weights"], other / meta["weights"])
    monkeypatch.setenv("MASKX_MODEL", str(other))
    for page in ("segment", "browse", "embeddings"):
        at = open_page(page)
        assert "does not fit this model" in texts(at.error), page


@pytest.mark.slow
def test_browse(model_env, tiny_model, tmp_path, monkeypatch):
    at = open_page("browse")
    assert not at.error and texts(at.title) == "Browse"
    assert [c for img in at.get("image") for c in img.captions][0].startswith("ground truth:")
    at.slider(key="browse_thresh").set_value(0.0).run()
    assert "No prediction passes" not in texts(at.info)
    at.number_input(key="browse_eval_n").set_value(3).run()
    at.button(key="browse_eval_button").click().run()
    assert "on the first 3 images" in texts(at.caption) and len(at.metric) == 2
    table = at.dataframe[0].value
    assert len(table) > 0 and set(table["set"]) <= {"A", "B"}
    at.toggle(key="browse_show_a").set_value(False).run()
    assert set(at.dataframe[0].value["set"]) <= {"B"}
    name = table["class"][0]
    at.multiselect(key="browse_classes").set_value([name]).run()
    assert name in texts(at.caption)  # the image shown holds the class
    at.text_input(key="browse_path").set_value(str(tmp_path)).run()
    assert "not a dataset folder" in texts(at.error) and not at.exception
    vg_fixture(tmp_path / "vg")  # Visual Genome: boxes only, no AP
    at.text_input(key="browse_path").set_value(str(tmp_path / "vg")).run()
    assert not at.error and "no masks" in texts(at.info)


@pytest.mark.slow
def test_browse_reads_eval_json_beside_the_model(model_env, tiny_model, tmp_path, monkeypatch):
    from maskx.data.splits import resolve_split
    from maskx.data.embedded import categories, voc_like_category_ids

    model = tmp_path / "model"
    model.mkdir()
    for f in tiny_model.glob("ckpt_*"):
        os.symlink(f, model / f.name)
    split = resolve_split("voc2nonvoc", categories(), voc_like_ids=voc_like_category_ids())
    per_class = {c["name"]: {"category_id": c["id"], "set": split.set_of(c["id"]), "bbox_AP": 1.0, "segm_AP": 2.0}
                 for c in categories()}
    (model / "eval.json").write_text(json.dumps({"A": {"segm_AP": 12.5}, "B": {"segm_AP": 3.25},
                                                 "per_class": per_class}))
    monkeypatch.setenv("MASKX_MODEL", str(model))
    at = open_page("browse")
    assert "eval.json" in texts(at.caption) and [m.value for m in at.metric] == ["12.5", "3.2"]
    assert len(at.dataframe[0].value) == 80 and not at.button


@pytest.mark.slow
def test_browse_keeps_a_chosen_class_when_the_threshold_rises(model_env):
    """The filter offers the dataset's classes whatever the threshold, so a chosen class stays chosen;
    the page says when none of its predictions passes."""
    a_name, _ = classes_in_ground_truth(Path(model_env["MASKX_DATA"]))
    at = open_page("browse")
    box = at.multiselect(key="browse_classes")
    assert box.proto.select_all == 0 and a_name in box.options
    box.set_value([a_name]).run()
    at.slider(key="browse_thresh").set_value(1.0).run()
    assert at.multiselect(key="browse_classes").value == [a_name]
    assert f"No prediction of {a_name} scores 1.00 or more on this image" in texts(at.caption)
    at.slider(key="browse_thresh").set_value(0.0).run()
    assert at.multiselect(key="browse_classes").value == [a_name] and not at.exception


def classes_in_ground_truth(data: Path) -> tuple[str, str]:
    """One set-A and one set-B class (voc2nonvoc) with ground truth in ``data`` (the generator decides which)."""
    from maskx.data.splits import resolve_split
    from maskx.data.embedded import categories, voc_like_category_ids

    split = resolve_split("voc2nonvoc", categories(), voc_like_ids=voc_like_category_ids())
    coco = json.loads((data / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    present = sorted({a["category_id"] for a in coco["annotations"]})
    a_id = next(c for c in present if split.set_of(c) == "A")
    b_id = next(c for c in present if split.set_of(c) == "B")
    return names[a_id], names[b_id]


@pytest.mark.slow
def test_embeddings(model_env, tiny_model):
    """A model with no projections.npz beside it: computed on this visit (with a note saying how to
    write them ahead), then the same page as from the file (tests/app/test_embeddings_page.py)."""
    at = open_page("embeddings", timeout=300)
    assert not at.error and texts(at.title) == "Embeddings"
    assert "Computed on this visit" in texts(at.info) and "no precomputed projections" in texts(at.info)
    assert len(at.get("plotly_chart")) == 1  # the chosen embedding; every one side by side on request
    kinds = at.radio(key="emb_kind")
    assert kinds.value == "w_cls+box" and len(kinds.options) >= 5  # (GloVe, text: extras)
    assert "Select points" in texts(at.info)
    a_name, b_name = classes_in_ground_truth(Path(model_env["MASKX_DATA"]))
    names = json.loads(sorted(tiny_model.glob("ckpt_*.json"))[-1].read_text())["class_names"]
    at.selectbox(key="emb_b_class").set_value(names.index(b_name)).run()
    assert len(at.dataframe[0].value) == 5 and f"Nearest set-A classes of {b_name}" in texts(at.markdown)
    assert f"**{b_name}** (set B)" in texts(at.markdown)  # its examples, from the val data
    assert at.multiselect(key="emb_classes").proto.select_all == 0
    at.multiselect(key="emb_classes").set_value([a_name]).run()
    assert f"**{a_name}** (set A)" in texts(at.markdown)
    assert at.get("image") and not at.exception
    assert list(Path(model_env["MASKX_APP_CACHE"]).glob("umap-*.npy"))  # cached on disk
