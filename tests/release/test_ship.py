"""The shipped-model pipeline (`python -m maskx ship`) at the tiny size, and name resolution."""
from __future__ import annotations

import json

import pytest

import maskx
from maskx.checkpoint import CheckpointError
from maskx_release.ship import build_shipped, compare_shipped

TINY = ("image_size=128", "box_head_dim=64", "mask_dim=32", "mlp_hidden=32", "num_workers=0")


@pytest.mark.slow
def test_ship_pipeline_exports_a_loadable_model(tmp_path, monkeypatch):
    from maskx_release import ship

    monkeypatch.setattr(ship, "FP16_CHECK_IMAGES", 3)  # fewer than the val split: its check is a subset
    projected = []  # the projections' own tests are tests/app/test_projection.py (3000 UMAPs take minutes)
    monkeypatch.setattr(ship, "write_projections", projected.append)
    summary = build_shipped(out=tmp_path / "out", data=tmp_path / "data", runs=tmp_path / "run", iters=2,
                            progress=False, log=lambda m: None, size="tiny", overrides=TINY)
    assert summary["dtype"] in ("float16", "float32") and summary["megabytes"] > 0
    ev = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert set(ev["A"]) >= {"segm_AP", "bbox_AP"} and len(ev["per_class"]) == 3000
    assert "torch" in ev["trained_on_cpu"]  # bit for bit holds per kind of CPU: the one it trained on
    gt = ev["masks_on_gt_boxes"]
    assert gt["A"]["instances"] + gt["B"]["instances"] > 0 and gt["images"] > 0
    assert gt["baseline"]["A"]["instances"] == gt["A"]["instances"]  # the baseline, on the same boxes
    for stage in ("run/detector", "run/box", "run", "run-baseline"):  # stage-wise: each run kept
        assert (tmp_path / stage / "done.json").is_file()
    assert json.loads((tmp_path / "run" / "box" / "run.json").read_text())["config"]["stage"] == "box"
    roi_cache = json.loads((tmp_path / "run" / "box" / "roi_cache" / "meta.json").read_text())
    assert roi_cache["staged_from_sha256"]  # the mask runs' RoI cache came from the box cache's pass
    assert roi_cache["detector_sha256"] == maskx.checkpoint.find_checkpoint(tmp_path / "run" / "box")[0]["sha256"]
    naming = ev["naming_on_gt_boxes"]
    assert naming["A"]["instances"] + naming["B"]["instances"] >= gt["A"]["instances"] + gt["B"]["instances"]
    assert set(ev["ap_by_frequency"]["B"]) == {"rare", "common", "frequent"}
    assert sum(g["instances"] for g in naming["by_frequency"]["B"].values()) == naming["B"]["instances"]
    assert -1.0 <= ev["similarity"]["similarity"]["rho"] <= 1.0 and ev["similarity"]["input"] == "cls+box"
    apps = ev["app_samples"]
    assert apps["samples"]["images"] == 8 and 0 <= apps["samples"]["with_named_B"] <= 8
    assert apps["first_100"]["images"] == 16  # the tiny val split has 16 images
    predictor = maskx.load(tmp_path / "out")
    assert len(predictor.class_names) == 3000 and len(predictor.set_a) == 80
    meta = json.loads(next((tmp_path / "out").glob("ckpt_*.json")).read_text())
    assert "optim." not in " ".join(meta.get("tensors", [])) and meta["exported_from"]["iteration"] == 2
    with pytest.raises(CheckpointError, match="classes"):
        maskx.load(tmp_path / "out", class_names=predictor.class_names[:-1])
    from maskx.instances import read_saved

    examples = tmp_path / "out" / "examples.json"  # the app's sample images, for these weights
    assert len(read_saved(json.loads(examples.read_text()), str(examples), meta["sha256"])) == 8
    assert json.loads(examples.read_text())["made_with"]["image_ids"] == apps["samples"]["ids"]
    assert projected == [tmp_path / "out"]  # and the Embeddings page's projections, for these weights
    # one prediction pass gave both the fp16 check (first 3 images) and the shipped model's evaluation:
    # each equals an evaluation of its own
    alone = ship.evaluate_on_val(tmp_path / "out", tmp_path / "data", progress=False, images=3)
    assert ev["fp16_check"]["fp16"] == ship._headline(alone) and ev["fp16_check"]["images"] == 3
    whole = ship.evaluate_on_val(tmp_path / "out", tmp_path / "data", progress=False)
    assert (ev["A"], ev["B"], ev["per_class"]) == (whole["A"], whole["B"], whole["per_class"])
    assert alone["num_images"] == 3 < whole["num_images"]


@pytest.mark.slow
def test_ship_reproduces_the_same_weights_from_scratch(tmp_path, monkeypatch):
    """Issue 5: one command reproduces the shipped model bit for bit. Twice from nothing (data
    generated, trained, exported, at the tiny size): the same data, the same exported weights."""
    import hashlib

    from maskx_release import ship as ship_module

    monkeypatch.setattr(ship_module, "write_projections", lambda out: None)  # minutes each; same bytes: test_projection.py

    def ship(name: str) -> tuple[str, str]:
        root = tmp_path / name
        summary = build_shipped(out=root / "out", data=root / "data", runs=root / "run", iters=3, progress=False,
                                log=lambda m: None, size="tiny", overrides=TINY)
        data = hashlib.sha256((root / "data" / "train" / "annotations.json").read_bytes()).hexdigest()
        return data, summary["sha256"]

    first, second = ship("a"), ship("b")
    assert first == second
    # every file the command writes, not only the weights (times and the folders it was given aside)
    same = compare_shipped(tmp_path / "a" / "out", tmp_path / "b" / "out")
    assert same["identical"], same["files"]


def _fake_shipped(root, weights=b"w" * 8, ap=1.0, seconds=5.0, run="runs/a"):
    root.mkdir(parents=True)
    (root / "ckpt_0000004.safetensors").write_bytes(weights)
    (root / "ckpt_0000004.json").write_text(json.dumps({"sha256": "s", "data": f"{run}/data.json",
                                                        "exported_from": {"run": run, "sha256": "t"}}))
    (root / "eval.json").write_text(json.dumps({"A": {"segm_AP": ap}, "eval_seconds": seconds,
                                                "seconds_this_call": {"train": seconds}, "checkpoint": str(root)}))
    return root


def test_compare_shipped_tells_a_reproduction_from_another_model(tmp_path):
    ref = _fake_shipped(tmp_path / "ref")
    same = _fake_shipped(tmp_path / "same", seconds=9.0, run="runs/b")  # other times and folders only
    assert compare_shipped(same, ref) == {"identical": True, "files": {
        "ckpt_0000004.json": "same", "ckpt_0000004.safetensors": "same", "eval.json": "same"}}
    other = compare_shipped(_fake_shipped(tmp_path / "w", weights=b"x" * 8, ap=0.5), ref)
    assert not other["identical"] and other["files"]["ckpt_0000004.safetensors"] == "differs"
    assert other["files"]["eval.json"] == "differs in A"
    (tmp_path / "same" / "examples.json").write_text("{}")
    assert compare_shipped(same, ref)["files"]["examples.json"] == f"only in {same}"
    assert not compare_shipped(tmp_path / "empty", tmp_path / "none")["identical"]  # nothing is not a match


def test_compare_shipped_reads_a_config_field_added_since_at_its_default_as_the_same(tmp_path):
    from maskx.config import get_preset

    config = get_preset("maskx_3k").to_json()
    older = {k: v for k, v in config.items() if k != "box_cache_mask_rois"}  # written before the field existed
    for name, cfg in (("ref", older), ("new", config), ("other", {**config, "box_cache_mask_rois": 16})):
        _fake_shipped(tmp_path / name)
        (tmp_path / name / "eval.json").write_text(json.dumps({"config": {**cfg, "detector": f"/{name}/box"}}))
    assert compare_shipped(tmp_path / "new", tmp_path / "ref")["identical"]
    assert compare_shipped(tmp_path / "other", tmp_path / "ref")["files"]["eval.json"] == "differs in config"


def test_ship_compare_refuses_to_compare_a_folder_with_itself(tmp_path, capsys):
    from maskx.__main__ import main

    assert main(["ship", "--out", str(tmp_path), "--compare", str(tmp_path), "--quiet"]) == 2
    assert "--compare needs another --out" in capsys.readouterr().err
