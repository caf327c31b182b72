"""Fixtures of the app's tests (tests/app/test_app.py, tests/app/test_app_browser.py): a tiny trained
model, a small val set, and fake study results in the format ``maskx_study.runner`` writes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, subprocess_env

DIRECTION = "voc2nonvoc"
PRESETS = ("agnostic_e2e", "transfer_clsbox_2lrelu_mlp_e2e", "oracle_e2e")


@pytest.fixture(scope="session")
def app_val(tmp_path_factory) -> Path:
    """8 embedded val images (seed 1, as the study's val set) at 128 px."""
    from maskx.data.embedded import generate

    out = tmp_path_factory.mktemp("app_val") / "val"
    generate(out, 8, seed=1, image_size=128)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A transfer model trained for 4 iterations on 8 images (its scores are ~0.02: score_thresh=0
    keeps them, so the app has instances to show)."""
    from maskx.data.embedded import generate

    root = tmp_path_factory.mktemp("app_model")
    generate(root / "train", 8, seed=0, image_size=128)
    cmd = [sys.executable, "-m", "maskx", "train", "--preset", "transfer_clsbox_2lrelu_mlp_e2e",
           "--data", str(root / "train"), "--out", str(root / "run"), "--iters", "4", "--quiet"]
    for s in ("image_size=128", "box_head_dim=64", "mask_dim=32", "num_workers=0", "score_thresh=0.0",
              "detections_per_img=10", "rois_per_image=64", "warmup_iters=1"):
        cmd += ["--set", s]
    done = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "run"


def _example_predictions(image_ids, rng) -> list[dict]:
    """COCO results entries made from the ground truth of the study's val images (perturbed scores)."""
    from pycocotools import mask as mask_utils

    from maskx.data.embedded import render
    from maskx.data.synthetic import COCO_CATEGORY_IDS

    out = []
    for iid in image_ids:
        _, instances = render(1, iid - 1, 256)
        for cls, mask in instances:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            out.append({"image_id": iid, "category_id": COCO_CATEGORY_IDS[cls],
                        "score": round(float(rng.uniform(0.3, 1.0)), 3),
                        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                        "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}})
    return out


def _gt_box_masks(image_ids) -> dict:
    """``gt_box_masks`` as the study keeps them: every ground-truth instance of the images, its box and the
    ground truth's own mask squeezed to 28 x 28 (IoU 1.0; a caller sets its own)."""
    import torch
    from PIL import Image

    from maskx.data.embedded import render
    from maskx.data.synthetic import COCO_CATEGORY_IDS
    from maskx.gt_box_eval import encode_mask

    out = []
    for iid in image_ids:
        for cls, mask in render(1, iid - 1, 256)[1]:
            ys, xs = np.nonzero(mask)
            box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
            crop = mask[int(box[1]):int(box[3]), int(box[0]):int(box[2])].astype(np.uint8) * 255
            small = torch.from_numpy(np.asarray(Image.fromarray(crop).resize((28, 28), Image.BILINEAR)) >= 128)
            out.append({"image": iid - 1, "category_id": COCO_CATEGORY_IDS[cls], "box": box, "iou": 1.0,
                        "mask": encode_mask(small)})
    return {"images": max(image_ids), "instances": out}


def write_fake_results(results_dir: Path, directions=(DIRECTION,), presets=PRESETS, gt_box_masks: bool = False) -> None:
    """``results/<run key>.json`` records with metrics (A, B, per class) and saved examples (the current
    generator version's val images); with ``gt_box_masks``, masks on the ground-truth boxes too (IoU
    0.5 + 0.1 x the preset's place in ``presets``)."""
    from maskx.data.splits import resolve_split
    from maskx.data.embedded import GENERATOR_VERSION, categories, voc_like_category_ids
    from maskx_study.runner import SCALES, Run

    results_dir.mkdir(parents=True, exist_ok=True)
    cats = categories()
    ids = list(range(1, 9))
    on_gt_boxes = _gt_box_masks(ids) if gt_box_masks else None
    for p, preset in enumerate(presets):
        split_name = "all" if preset.startswith("oracle") else None
        for direction in (directions if split_name is None else directions[:1]):
            rng = np.random.default_rng(p)
            metrics = {}
            for d in (directions if split_name else (direction,)):
                split = resolve_split(d, cats, voc_like_ids=voc_like_category_ids())
                per_class = {c["name"]: {"category_id": c["id"], "set": split.set_of(c["id"]),
                                         "bbox_AP": round(float(rng.uniform(10, 60)), 3),
                                         "segm_AP": round(float(rng.uniform(5, 50)) + 5 * p, 3)} for c in cats}
                metrics[d] = {"split": split.to_json(), "A": {"segm_AP": 30.0 + p, "bbox_AP": 40.0},
                              "B": {"segm_AP": 10.0 + 5 * p, "bbox_AP": 35.0}, "per_class": per_class}
            run = Run(preset, split_name or direction, 0, SCALES["study"].backbone)
            record = {"run": run.key, "preset": preset, "split": run.split, "seed": 0, "backbone": run.backbone,
                      "generator_version": GENERATOR_VERSION, "metrics": metrics,
                      "examples": {"image_ids": ids, "min_score": 0.3, "predictions": _example_predictions(ids, rng)}}
            if on_gt_boxes:
                record["gt_box_masks"] = {**on_gt_boxes, "instances": [{**x, "iou": round(0.5 + 0.1 * p, 2)}
                                                                       for x in on_gt_boxes["instances"]]}
            (results_dir / f"{run.key}.json").write_text(json.dumps(record))


@pytest.fixture(scope="session")
def fake_results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("app_results") / "results"
    write_fake_results(out)
    return out
