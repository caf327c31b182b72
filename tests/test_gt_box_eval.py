"""Mask IoU on ground-truth boxes and classes: sets, alignment (a mask branch that returns the
ground truth scores its ceiling), and a mismatched class list refused."""
from __future__ import annotations

import json

import pytest
import torch
from torchvision.models.detection.roi_heads import project_masks_on_boxes

import maskx
from maskx.checkpoint import CheckpointError
from maskx.config import get_preset
from maskx.data.coco import CocoDataset
from maskx.data.splits import info_split_args, resolve_split
from maskx.gt_box_eval import gt_box_features, gt_box_inputs, mask_iou_on_gt_boxes, masks_on_gt_boxes
from maskx.train import run_training


@pytest.fixture(scope="module")
def setup(tmp_path_factory, data64):
    out = tmp_path_factory.mktemp("gtbox") / "run"
    cfg = get_preset("transfer_clsbox_2lrelu_e2e").replace(
        image_size=64, rois_per_image=32, mask_rois_per_image=8, box_head_dim=64, mask_dim=32, transfer_hidden=32,
        warmup_iters=1, iters=1, checkpoint_every=1)
    run_training(cfg, data64, out, progress=False)
    val = CocoDataset.from_dir(data64)
    split = resolve_split("voc2nonvoc", val.data["categories"], **info_split_args(val.data.get("info")))
    return maskx.load(out), val, split


def test_every_masked_instance_is_scored_in_its_set(setup):
    predictor, val, split = setup
    r = mask_iou_on_gt_boxes(predictor, val, split)
    n = sum(len(a) for a in val.anns.values())
    assert r["A"]["instances"] + r["B"]["instances"] == n and r["images"] == len(val)
    for s in ("A", "B"):
        if r[s]["instances"]:
            assert 0.0 <= r[s]["mean_iou"] <= 1.0 and 0.5 < r[s]["ceiling"] <= 1.0
    assert set(r["per_class"]) == {a["ann"]["category_id"] for anns in val.anns.values() for a in anns}
    assert mask_iou_on_gt_boxes(predictor, val, split, images=1)["images"] == 1


def test_a_mask_branch_that_returns_the_ground_truth_reaches_the_ceiling(setup, monkeypatch):
    """Checks the box scaling and pasting: logits made from the GT masks must score the ceiling."""
    predictor, val, split = setup
    gts = iter([val[i][1] for i in range(len(val))])

    def oracle_logits(pooled, labels):
        t = next(gts)
        while not bool(t["has_mask"].any()):
            t = next(gts)
        m = project_masks_on_boxes(t["masks"][t["has_mask"]], t["boxes"][t["has_mask"]],
                                   torch.arange(len(labels)), 28)
        return torch.logit(m, eps=1e-6)  # sigmoid gives m back: the same map the ceiling pastes

    monkeypatch.setattr(predictor.model.roi_heads, "mask_logits_from_pooled", oracle_logits)
    r = mask_iou_on_gt_boxes(predictor, val, split)
    for s in ("A", "B"):
        if r[s]["instances"]:
            assert r[s]["mean_iou"] == pytest.approx(r[s]["ceiling"], abs=1e-3)


def test_another_class_list_is_refused(setup, tmp_path, data64):
    predictor, _, split = setup
    data = json.loads((data64 / "annotations.json").read_text())
    data["categories"][0]["name"] = "unicorn"
    other = CocoDataset(data64 / "images", data64 / "annotations.json", data=data)
    with pytest.raises(CheckpointError, match="classes"):
        mask_iou_on_gt_boxes(predictor, other, split)


def test_features_computed_once_give_the_same_ious_for_every_split(setup):
    """The study computes a frozen detector's GT-box features once for all its stage-wise runs, and
    each run's IoUs once for both directions: the numbers equal a fresh computation per split."""
    predictor, val, split = setup
    other = resolve_split("nonvoc2voc", val.data["categories"], **info_split_args(val.data.get("info")))
    inputs = gt_box_inputs(predictor.model, val, 3)
    image, t = val[0]
    keep = t["has_mask"]
    features, rois, sizes = gt_box_features(predictor.model, image, t["boxes"][keep])
    with torch.inference_mode():
        direct = predictor.model.roi_heads.mask_logits(features, rois, t["labels"][keep], sizes)
        assert torch.equal(direct, predictor.model.roi_heads.mask_logits_from_pooled(inputs[0].pooled, inputs[0].labels))
    both = {"voc2nonvoc": split, "nonvoc2voc": other}
    cached = masks_on_gt_boxes(predictor, val, both, 3, inputs=inputs)
    assert cached == masks_on_gt_boxes(predictor, val, both, 3)
    for name, sp in both.items():
        fresh = mask_iou_on_gt_boxes(predictor, val, sp, images=3)
        assert cached[name] == {s: {k: fresh[s][k] for k in ("mean_iou", "ceiling", "instances")} for s in ("A", "B")}
    assert cached["voc2nonvoc"]["A"] == cached["nonvoc2voc"]["B"]  # the sets swap, the instances do not


def test_instance_masks_keep_the_first_images_masks_with_their_iou(setup):
    """What a mask grid draws: each instance of the first images with its box, IoU and 28 x 28 mask."""
    from maskx.gt_box_eval import decode_mask, encode_mask, instance_ious, instance_masks

    predictor, val, split = setup
    inputs = gt_box_inputs(predictor.model, val, 4)
    rows = instance_masks(predictor.model, inputs, 2)
    assert rows and {r["image"] for r in rows} <= {0, 1}
    assert len(rows) == sum(len(x.category_ids) for x in inputs if x.image_index < 2)
    ious = [iou for _, iou, _ in instance_ious(predictor.model, [x for x in inputs if x.image_index < 2])]
    assert [r["iou"] for r in rows] == [round(v, 4) for v in ious]
    # the kept mask is the mask branch's output for that box and class, thresholded at 0.5
    x = next(x for x in inputs if x.image_index == rows[0]["image"])
    with torch.no_grad():
        prob = predictor.model.roi_heads.mask_logits_from_pooled(x.pooled, x.labels).sigmoid()
    assert (decode_mask(rows[0]["mask"]) == (prob[0] >= 0.5).numpy()).all()
    assert rows[0]["box"] == [round(float(v), 1) for v in x.boxes[0]]
    rng = torch.Generator().manual_seed(0)
    planted = torch.rand(28, 28, generator=rng) > 0.5
    assert (decode_mask(encode_mask(planted)) == planted.numpy()).all()
    with pytest.raises(ValueError, match="needs 784 bits"):
        decode_mask(encode_mask(planted[:10]))


def test_masks_on_boxes_of_one_image_are_the_datasets_pipelines(setup):
    """``masks_on_boxes`` (the app's masks for a box and class it is given) gives the masks and IoUs
    ``instance_ious`` scores for the same image, boxes and classes."""
    from maskx.gt_box_eval import instance_ious, masks_on_boxes

    predictor, val, _ = setup
    x = gt_box_inputs(predictor.model, val, 1)[0]
    image, _ = val[x.image_index]
    prob = masks_on_boxes(predictor, image, x.boxes, x.labels)
    assert prob.shape == x.gt.shape and 0 <= float(prob.min()) and float(prob.max()) <= 1
    pred = prob >= 0.5
    ious = [iou for _, iou, _ in instance_ious(predictor.model, [x])]
    mine = [int((p & g).sum()) / max(1, int((p | g).sum())) for p, g in zip(pred, x.gt)]
    assert mine == pytest.approx(ious, abs=1e-6)
    assert masks_on_boxes(predictor, image, torch.zeros((0, 4)), torch.zeros(0, dtype=torch.int64)).shape[0] == 0


def test_naming_counts_every_box_and_a_box_head_that_knows_the_answer_scores_100(setup, monkeypatch):
    from maskx.gt_box_eval import naming_on_gt_boxes

    predictor, val, split = setup
    r = naming_on_gt_boxes(predictor, val, split)
    n = sum(len(a) for a in val.anns.values())
    assert r["A"]["instances"] + r["B"]["instances"] == n and r["images"] == len(val)
    for s in ("A", "B"):
        if r[s]["instances"]:
            assert 0.0 <= r[s]["top1"] <= r[s]["top5"] <= 100.0
    # a box predictor whose top logit is each box's true class (background scored highest, to check it is left out)
    truth = iter([val[i][1]["labels"] for i in range(len(val)) if len(val[i][1]["boxes"])])
    real = predictor.model.roi_heads.box_predictor.forward

    def knows(x):
        logits, boxes = real(x)
        labels = next(truth)
        logits = torch.zeros_like(logits)
        logits[torch.arange(len(labels)), labels] = 5.0
        logits[:, 0] = 10.0
        return logits, boxes

    monkeypatch.setattr(predictor.model.roi_heads.box_predictor, "forward", knows)
    r = naming_on_gt_boxes(predictor, val, split)
    for s in ("A", "B"):
        if r[s]["instances"]:
            assert r[s]["top1"] == 100.0 and r[s]["top5"] == 100.0


def test_naming_by_frequency_puts_each_object_in_its_class_group(setup):
    """With training counts, every object is counted once more, in the LVIS group of its class's count
    (rare 1-10, common 11-100, frequent > 100; unseen: none), and the groups add up to the set."""
    from maskx.gt_box_eval import naming_on_gt_boxes

    predictor, val, split = setup
    ids = sorted({a["ann"]["category_id"] for anns in val.anns.values() for a in anns})
    # one class in each group, the rest unseen
    counts = {ids[0]: 10, ids[1]: 11, ids[2]: 101}
    r = naming_on_gt_boxes(predictor, val, split, train_counts=counts)
    assert naming_on_gt_boxes(predictor, val, split) == {k: v for k, v in r.items() if k != "by_frequency"}
    per_class = {}
    for anns in val.anns.values():
        for a in anns:
            cid = a["ann"]["category_id"]
            per_class[cid] = per_class.get(cid, 0) + 1
    want = {"rare": per_class[ids[0]], "common": per_class[ids[1]], "frequent": per_class[ids[2]]}
    got = {g: sum(r["by_frequency"][s][g]["instances"] for s in ("A", "B")) for g in ("rare", "common", "frequent", "unseen")}
    assert {g: got[g] for g in want} == want and sum(got.values()) == sum(per_class.values())
    for s in ("A", "B"):
        assert sum(v["instances"] for v in r["by_frequency"][s].values()) == r[s]["instances"]
