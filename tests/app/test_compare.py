"""The Compare page's logic (maskx_app/compare.py): which masks are drawn, how each is matched to the
ground truth, the per-class gains and the sentence on what the numbers mean."""
from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from maskx_app import compare
from maskx_study.plan import SCALES, Run


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def _square(shape, x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_headline_says_what_transfer_closed_and_is_honest_when_it_closed_nothing():
    assert compare.headline(4.0, 6.0, 8.0, "voc→non-voc, seed 0") == (
        "On set B (voc→non-voc, seed 0), Mask^X's masks are 2.0 AP above the class-agnostic head's (6.0 vs 4.0 "
        "mask AP); the oracle, trained with B's masks, is 4.0 AP above it (8.0): transfer closes 50 % of that gap.")
    worse = compare.headline(5.0, 2.7, 6.1, "x")
    assert "2.3 AP below" in worse and "transfer closes none of that gap" in worse and "%" not in worse
    level = compare.headline(5.0, 5.0, 6.0, "x")
    assert "are level with the class-agnostic head's" in level and "none of that gap" in level
    no_gap = compare.headline(5.0, 6.0, 4.5, "x")
    assert "is 0.5 AP below the class-agnostic head" in no_gap and "no gap for transfer to close" in no_gap
    assert "within seed-to-seed noise" in compare.headline(5.0, 5.2, 5.5, "x")


def test_seed_summary_uses_the_seed_means_and_the_paired_spread():
    bb = SCALES["study"].backbone
    results = {}
    for seed, (a, t, o) in enumerate([(4.0, 5.0, 8.0), (6.0, 6.0, 10.0)]):
        for preset, value in zip((compare.AGNOSTIC, compare.TRANSFER, compare.ORACLE), (a, t, o)):
            run = Run(preset, "all" if preset == compare.ORACLE else "voc2nonvoc", seed, bb)
            results[run.key] = {"metrics": {"voc2nonvoc": {"A": {"segm_AP": 30.0}, "B": {"segm_AP": value}}}}
    text = compare.seed_summary(results, "voc2nonvoc", "w")
    assert text.startswith(compare.headline(5.0, 5.5, 9.0, "w"))  # means over the two seeds
    assert "Per seed, Mask^X − class-agnostic on B is +0.5 ± 0.7 AP (n=2)." in text
    one_seed = {k: v for k, v in results.items() if k.endswith("s0")}
    assert compare.seed_summary(one_seed, "voc2nonvoc", "w") is None


def test_b_gains_sorts_set_b_classes_by_what_transfer_gained():
    def record(values):
        return {"metrics": {"d": {"per_class": {n: {"category_id": i, "set": s, "segm_AP": v}
                                                for i, (n, s, v) in enumerate(values)}}}}

    records = {compare.AGNOSTIC: record([("a1", "A", 1.0), ("b1", "B", 5.0), ("b2", "B", 2.0), ("b3", "B", None)]),
               compare.TRANSFER: record([("a1", "A", 9.0), ("b1", "B", 4.0), ("b2", "B", 6.0), ("b3", "B", 3.0)])}
    rows = compare.b_gains(records, "d")
    assert [(r["class"], r["gain"], r["oracle"]) for r in rows] == [("b2", 4.0, None), ("b1", -1.0, None)]
    assert compare.b_gains({compare.AGNOSTIC: records[compare.AGNOSTIC]}, "d") is None


def test_match_to_gt_pairs_same_class_boxes_one_to_one():
    shape = (64, 64)
    gt = [compare.Instance(1, [0, 0, 20, 20], _square(shape, 0, 0, 20, 20), None),
          compare.Instance(2, [30, 30, 60, 60], _square(shape, 30, 30, 60, 60), None)]
    found = [compare.Instance(1, [0, 0, 20, 22], _square(shape, 0, 0, 10, 20), 0.9),  # half the mask
             compare.Instance(1, [0, 0, 21, 20], _square(shape, 0, 0, 20, 20), 0.8),  # the best box: it wins
             compare.Instance(1, [30, 30, 60, 60], _square(shape, 30, 30, 60, 60), 0.7),  # another class's object
             compare.Instance(2, [40, 40, 64, 64], _square(shape, 40, 40, 64, 64), 0.6)]  # box IoU 0.44 < 0.5
    pairs = compare.match_to_gt(found, gt)
    assert pairs == [(None, None), (0, 1.0), (None, None), (None, None)]
    found[3].box = [32, 32, 60, 60]
    assert compare.match_to_gt(found, gt)[3] == (1, pytest.approx(400 / (900 + 576 - 400)))  # its mask is unchanged
    assert compare.match_to_gt(found, []) == [(None, None)] * 4


def test_saved_instances_skip_empty_masks_and_count_them():
    shape = (32, 32)
    full, empty = _square(shape, 2, 2, 12, 12), np.zeros(shape, bool)
    preds = [{"image_id": 1, "category_id": 3, "score": 0.9, "bbox": [2, 2, 10, 10], "segmentation": _rle(full)},
             {"image_id": 1, "category_id": 4, "score": 0.8, "bbox": [5, 5, 10, 10], "segmentation": _rle(empty)},
             {"image_id": 1, "category_id": 5, "score": 0.2, "bbox": [5, 5, 10, 10], "segmentation": _rle(full)},
             {"image_id": 2, "category_id": 3, "score": 0.9, "bbox": [2, 2, 10, 10], "segmentation": _rle(full)}]
    record = {"examples": {"image_ids": [1, 2], "min_score": 0.3, "predictions": preds}}
    shown, n_empty = compare.saved_instances(record, 1, 0.3, shape)
    assert [(i.category_id, i.box, i.score) for i in shown] == [(3, [2, 2, 12, 12], 0.9)] and n_empty == 1
    assert shown[0].mask.sum() == 100
    with pytest.raises(ValueError, match="64 x 64"):
        compare.saved_instances(record, 1, 0.3, (64, 64))
    assert compare.default_threshold([record, {"examples": {"min_score": 0.5}}]) == 0.5
    assert compare.default_threshold([]) == compare.EXAMPLE_MIN_SCORE


def test_default_image_is_the_one_whose_sparsest_column_draws_most():
    assert compare.default_image({1: [0, 3, 4], 2: [1, 1, 1], 3: [2, 5, 2], 4: [2, 2, 9]}) == 3  # ties: the first
    assert compare.default_image({}) is None


def test_masks_on_ground_truth_boxes_are_pasted_with_their_recorded_iou():
    import torch

    from maskx.gt_box_eval import encode_mask
    from maskx_study.grids import paste_box_mask

    ones, zeros = torch.ones(28, 28, dtype=torch.bool), torch.zeros(28, 28, dtype=torch.bool)
    record = {"gt_box_masks": {"images": 2, "instances": [
        {"image": 0, "category_id": 3, "box": [10.0, 10.0, 30.0, 40.0], "iou": 0.75, "mask": encode_mask(ones)},
        {"image": 0, "category_id": 4, "box": [0.0, 0.0, 5.0, 5.0], "iou": 0.0, "mask": encode_mask(zeros)},
        {"image": 1, "category_id": 3, "box": [0.0, 0.0, 5.0, 5.0], "iou": 0.5, "mask": encode_mask(ones)}]}}
    shown, empty = compare.gt_box_instances(record, 1, (64, 64))
    assert len(shown) == 1 and empty == 1 and shown[0].iou == 0.75 and shown[0].score is None
    assert shown[0].mask.sum() == 20 * 30 and shown[0].mask[10:40, 10:30].all()
    assert compare.gt_box_instances(record, 3, (64, 64)) is None  # beyond the images it keeps
    assert compare.gt_box_instances({}, 1, (64, 64)) is None
    assert compare.has_gt_box_masks([record]) and not compare.has_gt_box_masks([record, {}])
    # a box partly outside the image keeps its inside part
    assert paste_box_mask(np.ones((28, 28), bool), [-5, 50, 10, 70], (64, 64)).sum() == 10 * 14


def test_val_example_reads_the_data_folder_of_its_version_else_draws_it_again(tmp_path):
    from maskx.data.embedded import GENERATOR_VERSION, generate

    data = tmp_path / "val"
    generate(data, 2, seed=compare.VAL_SEED, image_size=64)
    rgb, gt, where = compare.val_example(data, 2, GENERATOR_VERSION, 64)
    drawn, gt_drawn, where_drawn = compare.val_example(tmp_path / "absent", 2, GENERATOR_VERSION, 64)
    assert "000002.jpg" in where and "drawn again" in where_drawn
    assert np.array_equal(rgb, drawn)  # the file's pixels are the rendered image as stored
    assert [(g.category_id, g.box) for g in gt] == [(g.category_id, g.box) for g in gt_drawn]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(gt, gt_drawn))
    other = min(v for v in (3, 4) if v != GENERATOR_VERSION)  # another version's image: not this folder's
    assert "drawn again" in compare.val_example(data, 2, other, 64)[2]
    with pytest.raises(ValueError):
        compare.val_example(tmp_path / "absent", 1, 99, 64)


def test_result_folders_open_on_a_complete_comparison_before_a_study_in_progress(tmp_path):
    bb = SCALES["study"].backbone
    results, old = tmp_path / "results", tmp_path / "results" / "v3"
    old.mkdir(parents=True)

    def write(folder, direction, seed, models):
        for _, run in compare.study_runs(direction, seed, bb):
            if run.preset in models:
                (folder / f"{bb}__{run.preset}__{run.split}__s{seed}.json").write_text("{}")

    every = {p for _, p in compare.MODELS}
    assert compare.result_folders(results) == [results]  # nothing anywhere: the current one, pending
    for d in compare.DIRECTIONS:
        write(old, d, 0, every)
    assert compare.complete(old) and compare.result_folders(results) == [old]
    write(results, compare.DIRECTIONS[0], 0, {compare.AGNOSTIC})  # the v4 study has begun
    assert not compare.complete(results) and compare.result_folders(results) == [old, results]
    for d in compare.DIRECTIONS:  # seed 1 complete in both directions: the current study comes first
        write(results, d, 1, every)
    assert compare.complete(results) and compare.result_folders(results) == [results, old]
