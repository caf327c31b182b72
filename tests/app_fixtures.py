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
    from maskx.data.synthetic import generate

    out = tmp_path_factory.mktemp("app_val") / "val"
    generate(out, 8, seed=1, image_size=128)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A transfer model trained for 4 iterations on 8 images (its scores are ~0.02: score_thresh=0
    keeps them, so the app has instances to show)."""
    from maskx.data.synthetic import generate

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

    from maskx.data.synthetic import COCO_CATEGORY_IDS, render

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


def write_fake_results(results_dir: Path, directions=(DIRECTION,), presets=PRESETS) -> None:
    """``results/<run key>.json`` records with metrics (A, B, per class) and saved examples."""
    from maskx.data.splits import resolve_split
    from maskx.data.synthetic import categories, voc_like_category_ids
    from maskx_study.runner import SCALES, Run

    results_dir.mkdir(parents=True, exist_ok=True)
    cats = categories()
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
            ids = list(range(1, 9))
            record = {"run": run.key, "preset": preset, "split": run.split, "seed": 0, "backbone": run.backbone,
                      "metrics": metrics, "examples": {"image_ids": ids, "min_score": 0.3,
                                                       "predictions": _example_predictions(ids, rng)}}
            (results_dir / f"{run.key}.json").write_text(json.dumps(record))


@pytest.fixture(scope="session")
def fake_results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("app_results") / "results"
    write_fake_results(out)
    return out
