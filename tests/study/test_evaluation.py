"""A study run's evaluation (maskx_study/evaluation.py): end-to-end runs through the full model, which may
skip the masks of classes absent from an image without changing AP, and what a scale that skips them
reports. On the tiny study's runs (``tiny_study``; slow)."""
from __future__ import annotations

import dataclasses

import pytest
from pycocotools import mask as mask_utils

from maskx.data.coco import CocoDataset
from maskx.data.splits import resolve_split
from maskx.engine import evaluate_model
from maskx.predictor import load
from maskx_study.runner import Run, Study


@pytest.mark.slow  # reuses the tiny study's runs: evaluation only
def test_the_full_model_skips_masks_of_absent_classes_and_keeps_ap(tiny_study):
    """End-to-end runs are evaluated with the full model: ``evaluate_model(present=)`` computes no mask for a
    detection of a class absent from its image and leaves AP, AP50, AP75 and per-class AP as they were."""
    from maskx.evaluate import evaluate_predictions

    study, _, _ = tiny_study
    val = CocoDataset.from_dir(f"{study.scale.data}/val")
    split = resolve_split("voc2nonvoc", val.data["categories"], voc_like_ids=val.data["info"]["voc_like_category_ids"])
    predictor = load(study.run_dir(Run("agnostic_e2e", "voc2nonvoc", 0, study.scale.backbone)))
    predictor.model.roi_heads.score_thresh = 0.0
    _, full = evaluate_model(predictor, val, split, progress=False)
    present: dict = {}
    for a in val.data["annotations"]:
        present.setdefault(a["image_id"], set()).add(a["category_id"])
    for p in full[::2]:  # as above: a superset of the ground truth's classes, so both branches run
        present.setdefault(p["image_id"], set()).add(p["category_id"])
    _, skipped = evaluate_model(predictor, val, split, progress=False, present=present)
    assert [(p["image_id"], p["category_id"], p["bbox"]) for p in full] == \
        [(p["image_id"], p["category_id"], p["bbox"]) for p in skipped]
    absent = {k for k, p in enumerate(full) if p["category_id"] not in present.get(p["image_id"], set())}
    assert 0 < len(absent) < len(full)
    for k, (f, s) in enumerate(zip(full, skipped)):
        if k in absent:
            assert mask_utils.area(s["segmentation"]) == 0
        else:
            assert mask_utils.area(mask_utils.merge([s["segmentation"], f["segmentation"]], intersect=True)) >= \
                0.99 * mask_utils.area(f["segmentation"])  # same mask (another batch: float rounding)
    a, b = evaluate_predictions(val.data, full, split), evaluate_predictions(val.data, skipped, split)
    for s in ("A", "B"):
        for k in ("segm_AP", "segm_AP50", "segm_AP75", "bbox_AP"):
            assert a[s][k] == pytest.approx(b[s][k], abs=1e-9), (s, k)
    assert predictor.model.roi_heads._mask_only_labels is None  # the filter ends with the image


@pytest.mark.slow  # reuses the tiny study's runs: evaluation only
def test_a_scale_that_skips_absent_class_masks_reports_no_area_stats(tiny_study, tmp_path):
    study, _, _ = tiny_study
    scale = dataclasses.replace(study.scale, eval_skip_absent_masks=True)
    other = Study(scale, results_dir=tmp_path / "results", runs_dir=study.runs_dir, progress=False, log=lambda m: None)
    run = Run("agnostic", "voc2nonvoc", 0, scale.backbone)
    det_dir = other.run_dir(run.detector())
    metrics, how, _, _, grid = other.evaluate_run(run, run.config(scale, det_dir), other.run_dir(run), det_dir)
    assert how == "mask head on cached detections of classes present in their image"
    from maskx.gt_box_eval import decode_mask
    from maskx_study.evaluation import MASK_GRID_IMAGES

    assert grid["images"] == MASK_GRID_IMAGES and grid["instances"]
    assert all(0 <= x["image"] < MASK_GRID_IMAGES and 0 <= x["iou"] <= 1 for x in grid["instances"])
    assert decode_mask(grid["instances"][0]["mask"]).shape == (28, 28)
    for s in ("A", "B"):  # masks of unmatched detections were not computed: their area ranges are unknown
        assert all(metrics["voc2nonvoc"][s][f"segm_{k}"] is None for k in ("APs", "APm", "APl"))
        assert "segm_AP" in metrics["voc2nonvoc"][s] and "bbox_APs" in metrics["voc2nonvoc"][s]
