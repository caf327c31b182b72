"""Cached detections (maskx_study/detection_cache.py): the mask head evaluated on a detector's cached
detections gives the full model's predictions, refuses other detector weights, and may skip the masks of
classes absent from an image without changing AP. On the tiny study's runs (``tiny_study``; slow)."""
from __future__ import annotations

import pytest
import torch
from pycocotools import mask as mask_utils

from maskx.data.coco import CocoDataset
from maskx.data.splits import resolve_split
from maskx.engine import evaluate_model
from maskx.predictor import load
from maskx_study.detection_cache import CacheMismatch, DetectionCache
from maskx_study.runner import Run


@pytest.mark.slow  # trains 4 tiny runs (about a minute)
def test_cached_evaluation_equals_the_full_model(tiny_study):
    study, runs, _ = tiny_study
    val = CocoDataset.from_dir(f"{study.scale.data}/val")
    split = resolve_split("voc2nonvoc", val.data["categories"], voc_like_ids=val.data["info"]["voc_like_category_ids"])
    detector = load(study.run_dir(runs[0])).model
    predictor = load(study.run_dir(Run("agnostic", "voc2nonvoc", 0, study.scale.backbone)))
    for m in (detector, predictor.model):  # an untrained detector scores below the default threshold
        m.roi_heads.score_thresh = 0.0
    cache = DetectionCache(detector, val, progress=False)
    cached = cache.predict_masks(predictor)
    _, full = evaluate_model(predictor, val, split, progress=False)
    assert len(full) > 0
    assert cached == full
    with torch.no_grad():
        next(predictor.model.backbone.parameters()).add_(1.0)
    with pytest.raises(CacheMismatch, match="detector weights differ"):
        cache.predict_masks(predictor)


@pytest.mark.slow  # trains 4 tiny runs (about a minute; shared with the tests above)
def test_skipping_masks_of_absent_classes_keeps_ap_and_per_class_ap(tiny_study):
    """A detection of a class with no ground truth in its image is a false positive whatever its mask:
    evaluating without those masks gives the same segm AP, AP50, AP75 and per-class AP."""
    from maskx.evaluate import evaluate_predictions

    study, runs, _ = tiny_study
    val = CocoDataset.from_dir(f"{study.scale.data}/val")
    split = resolve_split("voc2nonvoc", val.data["categories"], voc_like_ids=val.data["info"]["voc_like_category_ids"])
    detector = load(study.run_dir(runs[0])).model
    predictor = load(study.run_dir(Run("agnostic", "voc2nonvoc", 0, study.scale.backbone)))
    for m in (detector, predictor.model):
        m.roi_heads.score_thresh = 0.0
    present: dict = {}
    for a in val.data["annotations"]:
        present.setdefault(a["image_id"], set()).add(a["category_id"])
    cache = DetectionCache(detector, val, progress=False)
    full = cache.predict_masks(predictor)
    # an untrained detector names no class of its image: count half of its detected classes as present
    # too (a superset of the ground truth's classes keeps the result), so both branches run
    for p in full[::2]:
        present.setdefault(p["image_id"], set()).add(p["category_id"])
    skipped = cache.predict_masks(predictor, present=present)
    assert [(p["image_id"], p["category_id"], p["score"]) for p in full] == \
        [(p["image_id"], p["category_id"], p["score"]) for p in skipped]
    absent = [k for k, p in enumerate(full) if p["category_id"] not in present.get(p["image_id"], set())]
    assert 0 < len(absent) < len(full)  # both kinds occur, so the comparison means something
    for k, (f, s) in enumerate(zip(full, skipped)):
        if k in set(absent):
            assert mask_utils.area(s["segmentation"]) == 0
        else:
            assert s["segmentation"] == f["segmentation"]
    a, b = evaluate_predictions(val.data, full, split), evaluate_predictions(val.data, skipped, split)
    for s in ("A", "B"):
        for k in ("segm_AP", "segm_AP50", "segm_AP75", "bbox_AP"):
            assert a[s][k] == b[s][k], (s, k)
    assert {n: v["segm_AP"] for n, v in a["per_class"].items()} == {n: v["segm_AP"] for n, v in b["per_class"].items()}
