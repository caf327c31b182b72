"""Naming on ground-truth boxes (top-1 / top-5 on A and B) and, with ``--ap``, bbox / segm AP on A and B of
a 3000-class checkpoint on the first images of a design val split (docs/model-3k-design.md):

    python scripts/eval_3k_design.py RUN/ckpt_0002250.json [--images 300] [--data data/design3k-v2b] [--ap]
        [--train DIR]   # naming by LVIS frequency group too, counting DIR/annotations.json's instances

One thread (as the design runs were measured beside the study); prints one JSON line.
"""
from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", default="data/design3k-v2b", help="a folder with val/ (generate3k's layout)")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--ap", action="store_true", help="also COCO AP on A and B (about 7 minutes for 300 images)")
    ap.add_argument("--train", help="the training part the checkpoint learned from: naming by frequency group too")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import maskx
    from maskx.gt_box_eval import naming_on_gt_boxes
    from maskx_release.ship import evaluate_on_val, val_split

    counts = None
    if args.train:
        from maskx.data.coco import read_json
        from maskx_app.samples import training_counts

        counts = training_counts(read_json(f"{args.train}/annotations.json")["annotations"])
    val, split = val_split(args.data, args.images)
    out = {"checkpoint": args.checkpoint,
           "naming_on_gt_boxes": naming_on_gt_boxes(maskx.load(args.checkpoint), val, split, train_counts=counts)}
    if args.ap:
        m = evaluate_on_val(args.checkpoint, args.data, progress=False, images=args.images)
        out["ap"] = {s: {k: m[s][k] for k in ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP")} for s in ("A", "B")}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
