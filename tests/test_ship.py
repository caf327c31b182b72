"""The shipped-model pipeline (`python -m maskx ship`) at the tiny size, and name resolution."""
from __future__ import annotations

import json

import pytest

import maskx
from maskx.checkpoint import CheckpointError
from maskx.ship import SHIPPED, build_shipped, resolve_shipped

TINY = ("image_size=128", "box_head_dim=64", "mask_dim=32", "mlp_hidden=32", "num_workers=0")


def test_shipped_names_resolve_to_the_models_folder(tmp_path):
    assert resolve_shipped("maskx-3k") == SHIPPED["maskx-3k"]
    assert resolve_shipped(tmp_path) == tmp_path


@pytest.mark.slow
def test_ship_pipeline_exports_a_loadable_model(tmp_path):
    summary = build_shipped(out=tmp_path / "out", data=tmp_path / "data", runs=tmp_path / "run", iters=2,
                            progress=False, log=lambda m: None, size="tiny", overrides=TINY)
    assert summary["dtype"] in ("float16", "float32") and summary["megabytes"] > 0
    ev = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert set(ev["A"]) >= {"segm_AP", "bbox_AP"} and len(ev["per_class"]) == 3000
    gt = ev["masks_on_gt_boxes"]
    assert gt["A"]["instances"] + gt["B"]["instances"] > 0 and gt["images"] > 0
    predictor = maskx.load(tmp_path / "out")
    assert len(predictor.class_names) == 3000 and len(predictor.set_a) == 80
    meta = json.loads(next((tmp_path / "out").glob("ckpt_*.json")).read_text())
    assert "optim." not in " ".join(meta.get("tensors", [])) and meta["exported_from"]["iteration"] == 2
    with pytest.raises(CheckpointError, match="classes"):
        maskx.load(tmp_path / "out", class_names=predictor.class_names[:-1])
    from maskx.instances import read_saved

    examples = tmp_path / "out" / "examples.json"  # the app's sample images, for these weights
    assert len(read_saved(json.loads(examples.read_text()), str(examples), meta["sha256"])) == 8


@pytest.mark.slow
def test_ship_reproduces_the_same_weights_from_scratch(tmp_path):
    """Issue 5: one command reproduces the shipped model bit for bit. Twice from nothing (data
    generated, trained, exported, at the tiny size): the same data, the same exported weights."""
    import hashlib

    def ship(name: str) -> tuple[str, str]:
        root = tmp_path / name
        summary = build_shipped(out=root / "out", data=root / "data", runs=root / "run", iters=3, progress=False,
                                log=lambda m: None, size="tiny", overrides=TINY)
        data = hashlib.sha256((root / "data" / "train" / "annotations.json").read_bytes()).hexdigest()
        return data, summary["sha256"]

    first, second = ship("a"), ship("b")
    assert first == second
