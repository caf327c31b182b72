"""The app's sample rule (annotations only) and the check that a sample shows a named set-B mask."""
from __future__ import annotations

import numpy as np

from maskx.instances import Instance
from maskx_app.samples import pick_sample_ids, training_counts
from maskx_release.ship import shows_named_b


def test_samples_are_the_first_images_with_a_b_object_of_a_class_seen_often_enough():
    val = {"annotations": [
        {"image_id": 1, "category_id": 1},  # set A only
        {"image_id": 2, "category_id": 200},  # B, seen 3 times
        {"image_id": 3, "category_id": 300}, {"image_id": 3, "category_id": 1},  # B, seen 10 times
        {"image_id": 5, "category_id": 300},
        {"image_id": 4, "category_id": 1}, {"image_id": 4, "category_id": 400},  # B, never seen
        {"image_id": 6, "category_id": 300},
    ]}
    counts = training_counts([{"category_id": 200}] * 3 + [{"category_id": 300}] * 10 + [{"category_id": 1}] * 50)
    assert pick_sample_ids(val, counts, [1], n=8) == [3, 5, 6]
    assert pick_sample_ids(val, counts, [1], n=2) == [3, 5]
    assert pick_sample_ids(val, counts, [1], n=8, min_train=3) == [2, 3, 5, 6]
    assert pick_sample_ids(val, counts, [1, 300], n=8) == []  # a set-A class never qualifies an image
    val["images"] = [{"id": i} for i in range(1, 8)]
    assert pick_sample_ids(val, counts, [1], n=5) == [3, 5, 6, 1, 2]  # too few qualify: the first others follow


def _inst(cid, score, mask, in_a=False):
    return Instance([0.0, 0.0, 4.0, 4.0], score, 1, cid, f"c{cid}", in_a, mask)


def test_a_named_b_instance_counts_only_with_its_name_score_and_mask():
    gt_mask = np.zeros((8, 8), bool)
    gt_mask[:4, :4] = True
    half = np.zeros((8, 8), bool)
    half[:4, :2] = True  # IoU 0.5 with the ground truth
    less = np.zeros((8, 8), bool)
    less[:3, :2] = True  # IoU 0.375
    gt = [(300, gt_mask)]
    assert shows_named_b([_inst(300, 0.6, gt_mask)], gt, [1], score=0.5)
    assert shows_named_b([_inst(300, 0.6, half)], gt, [1], score=0.5)
    assert not shows_named_b([_inst(300, 0.6, less)], gt, [1], score=0.5)  # mask too poor
    assert not shows_named_b([_inst(301, 0.9, gt_mask)], gt, [1], score=0.5)  # wrong name
    assert not shows_named_b([_inst(300, 0.4, gt_mask)], gt, [1], score=0.5)  # below the threshold
    assert not shows_named_b([_inst(1, 0.9, gt_mask, in_a=True)], [(1, gt_mask)], [1], score=0.5)  # set A
    assert not shows_named_b([_inst(300, 0.9, None)], gt, [1], score=0.5)  # a detector without masks
