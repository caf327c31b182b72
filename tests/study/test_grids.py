"""Mask grids (maskx_study.grids): the instance rule picks the set-B instances where the oracle and the
class-agnostic head differ most, and the grid draws one row per instance and one column per method."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from maskx.gt_box_eval import encode_mask
from maskx_study import grids
from study_records import SCALE, record
from maskx_study.runner import Run

A_IDS, B_IDS = [1, 2], [3, 4]


def _with_masks(run: Run, ious: dict) -> dict:
    """A record whose kept masks are instances {key: iou} on val image 0 (a full square mask each)."""
    rec = record(run, 1.0)
    for d in rec["metrics"]:
        rec["metrics"][d] = {**rec["metrics"][d], "split": {"A": A_IDS, "B": B_IDS}}
    rec["generator_version"] = 3
    rec["gt_box_masks"] = {"images": 16, "instances": [
        {"image": image, "category_id": cid, "box": list(box), "iou": iou, "mask": encode_mask(torch.ones(28, 28, dtype=torch.bool))}
        for (image, cid, box), iou in ious.items()]}
    return rec


def test_the_rule_picks_the_b_instances_where_oracle_and_agnostic_differ_most(tmp_path):
    scale = dataclasses.replace(SCALE, data=str(tmp_path / "absent"))  # images drawn again, not read
    keys = [(0, 3, (10.0, 10.0, 60.0, 60.0)), (0, 4, (70.0, 20.0, 120.0, 90.0)), (1, 3, (5.0, 5.0, 40.0, 50.0)),
            (1, 1, (50.0, 50.0, 100.0, 110.0))]
    agn = Run("agnostic", "voc2nonvoc", 0, scale.backbone)
    ora = Run("oracle", "all", 0, scale.backbone)
    results = {agn.key: _with_masks(agn, dict(zip(keys, [0.5, 0.5, 0.5, 0.5]))),
               ora.key: _with_masks(ora, dict(zip(keys, [0.6, 0.9, 0.4, 0.8])))}
    picked = grids.pick_instances(results, "t1a", scale, "voc2nonvoc", n_b=2, n_a=1)
    assert picked == [keys[1], keys[0], keys[3]]  # B by |difference| (0.4, then 0.1 before 0.1 by key), then A
    image = grids.mask_grid(results, "t1a", scale, "voc2nonvoc", n_b=2, n_a=1, names={3: "three", 4: "four", 1: "one"})
    cols = len(grids.TABLES["t1a"].rows)
    assert image.size == (150 + grids.CELL * cols, 34 + grids.CELL * 3)
    pixels = np.asarray(image)
    # the agnostic column's first cell is tinted red (set B), the A row's green
    cell = pixels[34:34 + grids.CELL, 150 + grids.CELL * [p for _, p in grids.TABLES["t1a"].rows].index("agnostic"):][:, :grids.CELL]
    assert ((cell[..., 0] > 150) & (cell[..., 1] < 120)).mean() > 0.1
    empty = grids.mask_grid({}, "t1a", scale, "voc2nonvoc")
    assert empty.size[1] == 34 + grids.CELL  # one row saying there are no kept masks
