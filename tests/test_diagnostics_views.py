"""The diagnostics' embedding views: nearest set-A classes by centred cosine, the views of a model's
class weights, and ``scripts/diagnostics.py --embeddings-only`` adding them to a record made before."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from maskx import diagnostics as dg
from maskx.config import Config
from maskx.models.maskx_rcnn import build_model

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("diag_script", ROOT / "scripts" / "diagnostics.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def pca2(x: np.ndarray) -> np.ndarray:
    """A cheap stand-in for UMAP: the first two principal components."""
    x = np.asarray(x, np.float64) - np.mean(x, 0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    out = np.zeros((len(x), 2))
    out[:, :min(2, len(s))] = (u * s)[:, :2]
    return out


def test_nearest_a_ranks_set_a_by_centred_cosine():
    # a shared offset (as every row of w_cls may carry) makes every raw cosine near 1; centring removes it
    offset = np.array([100.0, 100.0, 100.0])
    emb = offset + np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0.9, 0.1, 0], [-1, 0, 0.2]])
    in_a = np.array([True, True, True, False, False])
    rows, cos = dg.nearest_a_classes(emb, in_a, k=3)
    assert rows.shape == (5, 3) and cos.shape == (5, 3)
    assert rows[3, 0] == 0 and cos[3, 0] > 0.9  # B row 3 looks like A row 0
    assert rows[4].tolist() == [2, 1, 0] and cos[4, 2] < -0.5  # B row 4 points away from A row 0: last, negative
    assert np.all(np.diff(cos[3:], axis=1) <= 0)  # most similar first
    assert rows[0].tolist() == [1, 2, -1] and np.isnan(cos[0, 2])  # never its own neighbour: 2 candidates left
    raw = dg.cosine_matrix(emb)[3, :3]
    assert raw.min() > 0.99  # uncentred, every A row would look alike


def test_nearest_a_pads_when_set_a_is_small_and_checks_shapes():
    emb = np.array([[1.0, 0], [0, 1], [1, 1]])
    rows, cos = dg.nearest_a_classes(emb, np.array([True, False, False]), k=3)
    assert rows[1].tolist() == [0, -1, -1] and np.isnan(cos[1, 1:]).all()
    assert rows[0].tolist() == [-1, -1, -1]  # the only A class is itself
    with pytest.raises(ValueError, match="set flags"):
        dg.nearest_a_classes(emb, np.array([True, False]))


TINY = Config(mask_dim=16, box_head_dim=32, mlp_hidden=16, image_size=64, pretrained_backbone=False)


def test_embedding_views_of_a_model():
    cats = [{"id": i + 1, "name": f"{h} {b}", "supercategory": b, "attributes": [f"body:{b}", f"hue:{h}"]}
            for i, (h, b) in enumerate([("red", "disc"), ("blue", "disc"), ("red", "star"), ("blue", "star"),
                                        ("green", "disc"), ("green", "star")])]
    model = build_model(TINY, [c["name"] for c in cats])
    in_a = np.array([True, True, True, True, False, False])
    out = dg.embedding_views(model, cats, in_a, kinds=("cls", "cls+box", "randn"), project=pca2, k=2)
    assert [c["set"] for c in out["class_list"]] == ["A"] * 4 + ["B"] * 2
    assert out["class_list"][4] == {"id": 5, "name": "green disc", "set": "B", "attributes": ["body:disc", "hue:green"]}
    assert set(out["nearest_A"]) == {"cls", "cls+box", "randn", "attributes"}
    for near in out["nearest_A"].values():
        assert set(near) == {"5", "6"}  # set-B classes only
        assert all(len(v) == 2 and all(a in (1, 2, 3, 4) for a, _ in v) for v in near.values())
    # by the attributes alone, green disc's nearest A classes are the two discs
    assert {a for a, _ in out["nearest_A"]["attributes"]["5"]} == {1, 2}
    assert all(np.asarray(xy).shape == (6, 2) for xy in out["projection"].values())
    assert "projection" not in dg.embedding_views(model, cats, in_a, kinds=("cls",))  # no projector: no layout
    with pytest.raises(ValueError, match="set flags"):
        dg.embedding_views(model, cats, in_a[:3])


def test_embeddings_only_adds_the_views_to_a_record_and_keeps_the_rest(trained_run, data64, tmp_path):
    """--embeddings-only on a record written before: the class list, layouts and nearest A classes
    come from the detector's class weights (its training data found from its checkpoint); the
    record's own fields stay; --per-class-iou adds the heads' per-class IoU; a wrong split is refused."""
    script = _script()
    record = {"detector": str(trained_run), "split": "voc2nonvoc", "seed": 0, "split_seed": 0, "A_classes": 20,
              "images": 2, "runs": {"oracle": str(trained_run), "agnostic": str(trained_run)},
              "embeddings": {"cls": {"similarity": {"rho": 0.5}}}}
    out = tmp_path / "rec.json"
    out.write_text(json.dumps(record))
    got = script.embeddings_only(out, project=pca2)
    saved = json.loads(out.read_text())
    assert saved == got and saved["embeddings"] == record["embeddings"] and saved["runs"] == record["runs"]
    assert len(saved["class_list"]) == 80 and sum(c["set"] == "A" for c in saved["class_list"]) == 20
    assert {"cls", "box", "cls+box", "randn", "attributes"} <= set(saved["nearest_A"]) | set(saved["view_errors"])
    assert all(len(xy) == 80 for xy in saved["projection"].values())
    assert len(saved["nearest_A"]["cls"]) == 60 and saved["projection_method"] == "pca2"
    assert "per_class_iou_on_gt_boxes" not in saved

    script.embeddings_only(out, data=data64, per_class_iou=True, project=pca2)
    per = json.loads(out.read_text())["per_class_iou_on_gt_boxes"]
    assert set(per) == {"oracle", "agnostic"} and per["oracle"] and per["oracle"] == per["agnostic"]

    out.write_text(json.dumps({**record, "A_classes": 60}))
    with pytest.raises(SystemExit, match="not the record's split"):
        script.embeddings_only(out, project=pca2)
