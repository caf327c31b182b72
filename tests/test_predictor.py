"""The predictor (maskx/predictor.py): ``maskx.load`` of a run folder or checkpoint with its overrides and
class list, and ``predict`` / ``predict_coco`` on every kind of input, on a tiny trained run."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import maskx
from maskx.checkpoint import CheckpointError, list_checkpoints
from maskx.config import Config, ConfigError
from maskx.predictor import Instance

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ loading

def test_load_with_other_class_list_refused(trained_run):
    with pytest.raises(CheckpointError, match="checkpoint has 80 classes, 3 were asked for"):
        maskx.load(trained_run, class_names=["a", "b", "c"])
    meta = json.loads(list_checkpoints(trained_run)[-1].read_text())
    maskx.load(trained_run, class_names=meta["class_names"])  # the same list is fine


def test_load_overrides_show_in_the_predictor_config_and_model(trained_run):
    p = maskx.load(trained_run, inference=Config(detections_per_img=7, score_thresh=0.2), roi_align_forward="sparse")
    assert (p.config.detections_per_img, p.config.score_thresh, p.config.roi_align_forward) == (7, 0.2, "sparse")
    assert p.model.roi_heads.detections_per_img == 7 and p.model.roi_heads.mask_roi_pool.sparse_forward
    assert maskx.load(trained_run).config.roi_align_forward == "torchvision"
    with pytest.raises(ConfigError, match="roi_align_forward"):
        maskx.load(trained_run, roi_align_forward="dense")


# ------------------------------------------------------------------ predicting

def test_predict_instances_for_every_input_kind(trained_run, data64):
    predictor = maskx.load(trained_run)
    gt = json.loads((data64 / "annotations.json").read_text())
    set_a = set(gt["info"]["voc_like_category_ids"])
    names = {c["id"]: c["name"] for c in gt["categories"]}
    assert predictor.set_a == set_a
    path = data64 / "images" / gt["images"][0]["file_name"]
    rgb = Image.open(path).convert("RGB")
    arr = np.asarray(rgb)
    wide = np.concatenate([arr, arr[:, :16]], axis=1)  # 64 x 80: masks follow the input's size
    inputs = {"path": (path, (64, 64)), "str": (str(path), (64, 64)), "pil_rgb": (rgb, (64, 64)),
              "pil_rgba": (rgb.convert("RGBA"), (64, 64)), "pil_l": (rgb.convert("L"), (64, 64)),
              "array_rgb": (arr, (64, 64)), "array_gray": (arr[..., 0], (64, 64)),
              "array_rgba": (np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)]), (64, 64)),
              "array_wide": (wide, (64, 80))}
    results = {}
    for kind, (image, hw) in inputs.items():
        inst = predictor.predict(image)
        assert inst, f"{kind}: no detections at score_thresh=0"
        assert len(inst) <= 20
        for i in inst:
            assert isinstance(i, Instance)
            assert i.class_name == names[i.category_id]
            assert i.in_A is (i.category_id in set_a)
            assert predictor.class_names[i.label - 1] == i.class_name
            assert i.mask.dtype == np.bool_ and i.mask.shape == hw
            x0, y0, x1, y1 = i.box
            assert 0 <= x0 <= x1 <= hw[1] and 0 <= y0 <= y1 <= hw[0]
            assert 0 <= i.score <= 1
        results[kind] = inst
    # a path, a PIL image and an array of the same pixels give the same answer
    for kind in ("str", "pil_rgb", "pil_rgba", "array_rgb", "array_rgba"):
        assert [i.box for i in results[kind]] == [i.box for i in results["path"]]
        assert all((x.mask == y.mask).all() for x, y in zip(results[kind], results["path"]))
    # set A and set B both occur among 20 detections of an untrained model over 80 classes
    kinds = {i.in_A for r in results.values() for i in r}
    assert kinds == {True, False}
    assert predictor.predict(path, score_thresh=1.1) == []


def test_predict_coco_entries(trained_run, data64):
    predictor = maskx.load(list_checkpoints(trained_run)[-1])  # a ckpt_*.json works too
    gt = json.loads((data64 / "annotations.json").read_text())
    image = data64 / "images" / gt["images"][1]["file_name"]
    entries = predictor.predict_coco(image, image_id=gt["images"][1]["id"])
    assert entries
    from maskx.evaluate import check_predictions
    check_predictions(entries, gt)
    for e in entries:
        assert e["segmentation"]["size"] == [64, 64]
        assert e["bbox"][2] >= 0 and e["bbox"][3] >= 0


def test_predict_bad_inputs(trained_run, tmp_path):
    predictor = maskx.load(trained_run)
    with pytest.raises(ValueError, match="image file not found"):
        predictor.predict(tmp_path / "nope.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot decode image"):
        predictor.predict(tmp_path / "bad.jpg")
    with pytest.raises(ValueError, match="must be"):
        predictor.predict(np.zeros((2, 8, 8, 3), np.uint8))
