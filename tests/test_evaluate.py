"""Evaluation on set A and set B: sanity values, per-class AP, the results format, bad predictions."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from maskx.__main__ import main
from maskx.data.splits import resolve_split
from maskx.evaluate import (PredictionError, SparseCOCOeval, _coco, encode_masks, evaluate_files, evaluate_predictions,
                            gt_as_predictions)


@pytest.fixture(scope="module")
def gt(tiny_synth):
    return json.loads((tiny_synth / "annotations.json").read_text())


@pytest.fixture(scope="module")
def split(gt):
    return resolve_split("voc2nonvoc", gt["categories"], voc_like_ids=gt["info"]["voc_like_category_ids"])


def test_ground_truth_scores_100(gt, split):
    r = evaluate_predictions(gt, gt_as_predictions(gt), split)
    for s in ("A", "B"):
        assert r[s]["bbox_AP"] == 100 and r[s]["segm_AP"] == 100
    present = {a["category_id"] for a in gt["annotations"]}
    for name, c in r["per_class"].items():
        if c["category_id"] in present:
            assert c["bbox_AP"] == c["segm_AP"] == 100, name
        else:
            assert c["segm_AP"] is None, "a class without ground truth has no AP"
        assert c["set"] == split.set_of(c["category_id"])


def test_predictions_for_a_only(gt, split):
    preds = [p for p in gt_as_predictions(gt) if p["category_id"] in split.a_ids]
    r = evaluate_predictions(gt, preds, split)
    assert r["A"]["segm_AP"] == 100 and r["B"]["segm_AP"] == 0 and r["B"]["bbox_AP"] == 0


def test_shifted_mask_lowers_segm_not_bbox(gt, split):
    preds = gt_as_predictions(gt)
    for p in preds:
        rle = {"size": p["segmentation"]["size"], "counts": p["segmentation"]["counts"].encode()}
        m = mask_utils.decode(rle)
        p["segmentation"] = encode_masks(np.roll(m, 4, axis=1)[None])[0]
    r = evaluate_predictions(gt, preds, split)
    for s in ("A", "B"):
        assert r[s]["bbox_AP"] == 100 and r[s]["segm_AP"] < 90


def _noisy_predictions(gt: dict, seed: int) -> list[dict]:
    """Ground truth jittered, rescored, some dropped, some relabelled, plus false positives."""
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    preds = []
    for p in gt_as_predictions(gt):
        if rng.random() < 0.2:
            continue
        m = mask_utils.decode({"size": p["segmentation"]["size"], "counts": p["segmentation"]["counts"].encode()})
        shift = int(rng.integers(-3, 4))
        x, y, w, h = p["bbox"]
        preds.append({**p, "score": float(rng.random()), "bbox": [x + shift, y, w, h],
                      "category_id": int(rng.choice(cats)) if rng.random() < 0.2 else p["category_id"],
                      "segmentation": encode_masks(np.roll(m, shift, axis=1)[None])[0]})
        if rng.random() < 0.3:  # a false positive of an arbitrary class, often one absent from the image
            preds.append({**preds[-1], "category_id": int(rng.choice(cats)), "score": float(rng.random())})
    return preds


@pytest.mark.parametrize("iou", ["bbox", "segm"])
def test_sparse_cocoeval_gives_pycocotools_results_exactly(gt, split, iou):
    # pairs without ground truth or detections are skipped; everything COCOeval reports must be unchanged
    gt = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
    gt["annotations"][0]["iscrowd"] = 1  # a crowd region: ignored, its detections unmatched-but-ignored
    preds = _noisy_predictions(gt, seed=0)
    coco_gt = _coco(gt)
    coco_dt = coco_gt.loadRes(preds)
    for ids in (split.a_ids, split.b_ids, [c["id"] for c in gt["categories"]]):
        ref, new = COCOeval(coco_gt, coco_dt, iou), SparseCOCOeval(coco_gt, coco_dt, iou)
        for E in (ref, new):
            E.params.catIds = list(ids)
            E.evaluate()
            E.accumulate()
            E.summarize()
        for k in ("precision", "recall", "scores"):
            assert np.array_equal(ref.eval[k], new.eval[k]), k
        assert np.array_equal(ref.stats, new.stats) and 0 < ref.stats[0] < 1
        assert len(ref.evalImgs) == len(new.evalImgs)
        assert [e is None for e in ref.evalImgs] == [e is None for e in new.evalImgs]
        assert any(e is None for e in ref.evalImgs), "the fixture must have pairs to skip"


def test_a_b_restriction_matches_per_class_mean(gt, split):
    # a prediction set that is right on some classes only: the A and B means differ and each
    # equals the mean of its classes' AP (COCOeval restricted with params.catIds)
    preds = [p for p in gt_as_predictions(gt) if p["category_id"] % 3]
    r = evaluate_predictions(gt, preds, split)
    for s in ("A", "B"):
        aps = [c["segm_AP"] for c in r["per_class"].values() if c["set"] == s and c["segm_AP"] is not None]
        assert r[s]["segm_AP"] == pytest.approx(np.mean(aps), abs=1e-2)
    assert 0 < r["B"]["segm_AP"] < 100


def test_empty_and_box_only_predictions(gt, split):
    r = evaluate_predictions(gt, [], split)
    assert r["A"]["bbox_AP"] == 0 and r["B"]["segm_AP"] == 0
    boxes = [{k: v for k, v in p.items() if k != "segmentation"} for p in gt_as_predictions(gt)]
    r = evaluate_predictions(gt, boxes, split)
    assert r["B"]["bbox_AP"] == 100 and r["B"]["segm_AP"] is None


@pytest.mark.parametrize("mutate, match", [
    (lambda p: p.update(image_id=999999), "image_id 999999 is not in the ground truth"),
    (lambda p: p.update(category_id=12), "category_id 12 .*real category ids"),
    (lambda p: p.pop("score"), "'score' must be a finite number"),
    (lambda p: p.update(score=float("nan")), "'score'"),
    (lambda p: p.update(bbox=[1, 2]), "'bbox' must be"),
    (lambda p: p.update(segmentation=[[1, 2, 3, 4, 5, 6]]), "'segmentation' must be an RLE"),
])
def test_bad_predictions(gt, split, mutate, match):
    preds = gt_as_predictions(gt)
    mutate(preds[1])
    with pytest.raises(PredictionError, match=r"detection \[1\]: " + match):
        evaluate_predictions(gt, preds, split)


def test_mixed_fields_refused(gt, split):
    preds = gt_as_predictions(gt)
    preds[2].pop("segmentation")
    with pytest.raises(PredictionError, match="same fields"):
        evaluate_predictions(gt, preds, split)


def test_cli_eval_writes_json(tiny_synth, gt, tmp_path, capsys):
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(gt_as_predictions(gt)))
    out = tmp_path / "m" / "metrics.json"
    code = main(["eval", "--gt", str(tiny_synth / "annotations.json"), "--pred", str(pred),
                 "--split", "nonvoc2voc", "--out", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["A"]["segm_AP"] == 100 and printed["split"]["name"] == "nonvoc2voc"
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # no temp files left


def test_cli_eval_errors(tiny_synth, tmp_path, capsys):
    pred = tmp_path / "pred.json"
    pred.write_text("[{\"image_id\": 1}]")
    assert main(["eval", "--gt", str(tiny_synth / "annotations.json"), "--pred", str(pred), "--split",
                 "voc2nonvoc"]) == 2
    assert "pred.json: detection [0]: category_id None" in capsys.readouterr().err
    assert main(["eval", "--gt", str(tiny_synth / "annotations.json"), "--pred", str(pred), "--split",
                 "rand80_t0"]) == 2
    pred.write_text("[]")
    assert main(["eval", "--gt", str(tmp_path / "nope.json"), "--pred", str(pred), "--split", "voc2nonvoc"]) == 2
    assert "nope.json: file not found" in capsys.readouterr().err
    r = evaluate_files(tiny_synth / "annotations.json", pred, "rand20_t1", seed=3)
    assert len(r["split"]["A"]) == 20 and r["A"]["segm_AP"] == 0


def test_ap_by_frequency_averages_per_class_ap_in_lvis_groups():
    from maskx.evaluate import ap_by_frequency

    per_class = {
        "r": {"category_id": 1, "set": "B", "bbox_AP": 10.0, "segm_AP": 4.0},  # 3 training instances: rare
        "r2": {"category_id": 2, "set": "B", "bbox_AP": 30.0, "segm_AP": 8.0},  # 10: rare (LVIS: 1-10)
        "c": {"category_id": 3, "set": "A", "bbox_AP": 50.0, "segm_AP": 40.0},  # 11: common
        "f": {"category_id": 4, "set": "A", "bbox_AP": 70.0, "segm_AP": 60.0},  # 101: frequent
        "gone": {"category_id": 5, "set": "B", "bbox_AP": None, "segm_AP": None},  # no val ground truth
        "new": {"category_id": 6, "set": "B", "bbox_AP": 0.0, "segm_AP": 0.0},  # never in training
    }
    r = ap_by_frequency(per_class, {1: 3, 2: 10, 3: 11, 4: 101, 5: 50})
    assert r["all"]["rare"] == {"classes": 2, "bbox_AP": 20.0, "segm_AP": 6.0}
    assert r["all"]["common"]["classes"] == 1 and r["all"]["common"]["segm_AP"] == 40.0
    assert r["all"]["frequent"]["bbox_AP"] == 70.0
    assert r["B"]["common"] == {"classes": 0, "bbox_AP": None, "segm_AP": None}
    assert r["A"]["rare"]["classes"] == 0 and r["B"]["rare"]["classes"] == 2
    assert r["unseen"] == {"A": 0, "B": 1}
