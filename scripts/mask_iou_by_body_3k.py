"""Where a 3000-class mask head's IoU on set B comes from: B's objects whose body (their silhouette,
the mask) set A has, against bodies A never shows, each split by whether another object's box overlaps
theirs (box IoU > 0.1). A data-design check of the mask target (docs/model-3k-design.md §15).

Every model is given the ground-truth boxes and classes of the first ``--images`` val images; the
RoI features come from the first model's detector (all models must share it: stage-mask runs on one
frozen detector).

    python scripts/mask_iou_by_body_3k.py --data data/design3k-v2b RUN [RUN ...]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch
from torchvision.ops import box_iou

from maskx.gt_box_eval import gt_box_inputs, instance_ious
from maskx.predictor import load
from maskx_release.ship import val_split

OVERLAP = 0.1  # box IoU with another ground-truth box above which an object counts as overlapped


def body_of(category: dict) -> str:
    return next(a for a in category["attributes"] if a.startswith("body:"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="stage-mask run folders (or shipped model folders) on one detector")
    p.add_argument("--data", default="data/synth3k", help="3000-class dataset folder with val/")
    p.add_argument("--images", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    val, split = val_split(args.data, args.images)
    body = {c["id"]: body_of(c) for c in val.data["categories"]}
    a_bodies = {body[c] for c in split.a_ids}
    inputs = gt_box_inputs(load(args.runs[0]).model, val, args.images)
    overlapped = []
    for x in inputs:
        iou = box_iou(x.boxes, x.boxes).fill_diagonal_(0)
        overlapped += (iou.max(1).values > OVERLAP).tolist() if len(x.boxes) > 1 else [False] * len(x.boxes)
    print(f"set A has {len(a_bodies)} of {len(set(body.values()))} bodies")
    for run in args.runs:
        groups = defaultdict(list)
        for (cid, iou, _), ov in zip(instance_ious(load(run).model, inputs), overlapped):
            s = split.set_of(cid)
            kind = "A's body" if body[cid] in a_bodies else "new body"
            for key in (f"{s}", f"{s} {kind}", f"{s} {kind} {'overlapped' if ov else 'apart'}"):
                groups[key].append(iou)
        print(run, json.dumps({k: [round(sum(v) / len(v), 3), len(v)] for k, v in sorted(groups.items())}))


if __name__ == "__main__":
    main()
