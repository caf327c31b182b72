"""Why a study's stage-wise head does what it does, after the fact: one head (a study preset) on one
study detector, retrained with config overrides into ``runs/explain/`` (no overrides: the study's own
run is read), then its mask IoU on the ground-truth boxes of the first val images, on A and on B, its
mask weights' spread (``maskx.diagnostics.transfer_spread``: all classes, and set A's rows) and, for
T, the IoU with T's rows calibrated as the diagnostics' probe reads its rows.

This explains a committed result; it chooses nothing. The study's presets, schedule and world stay as
frozen (a change they suggest is tried on design data first: scripts/transfer_pilot.py).

    python scripts/transfer_posthoc.py transfer_clsbox_2lrelu --seed 0 --split voc2nonvoc --set iters=4000
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset", help="a stage-wise study preset (agnostic, transfer_clsbox_2lrelu, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="voc2nonvoc", help="the direction the run is named by and measured on")
    p.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    p.add_argument("--images", type=int, default=100, help="val images whose ground-truth boxes are measured")
    p.add_argument("--runs", type=Path, default=Path("runs/study"), help="the study's runs (its detectors)")
    args = p.parse_args(argv)

    import numpy as np
    from transfer_pilot import calibrated  # scripts/, beside this one

    import maskx
    from maskx.checkpoint import list_checkpoints
    from maskx.data.coco import CocoDataset
    from maskx.diagnostics import mask_weight_rows, transfer_spread
    from maskx.gt_box_eval import gt_box_inputs, instance_ious, summarize
    from maskx.train import run_training
    from maskx_study.evaluation import _val_split
    from maskx_study.plan import SCALES, Run

    scale = SCALES["study"]
    det = args.runs / Run("detector", "all", args.seed, scale.backbone).key
    run = Run(args.preset, args.split, args.seed, scale.backbone)
    if args.set:
        folder = Path("runs/explain") / (run.key + "__" + "__".join(s.replace("=", "-") for s in args.set))
        if not (folder / "done.json").is_file():
            cfg = run.config(scale, det).with_overrides(args.set)
            run_training(cfg, Path(scale.data) / "train", folder, resume=bool(list_checkpoints(folder)), progress=False)
    else:
        folder = args.runs / run.key
    val = CocoDataset.from_dir(Path(scale.data) / "val")
    split = _val_split(val, args.split, args.seed)
    predictor = maskx.load(folder)
    inputs = gt_box_inputs(predictor.model, val, args.images)

    def ious() -> dict:
        s = summarize(instance_ious(predictor.model, inputs), split)
        return {k: round(s[k]["mean_iou"], 3) for k in ("A", "B")}

    in_a = np.array([c in set(split.a_ids) for c in val.categories.ids])
    rows = mask_weight_rows(predictor.model)[:, :-1]
    out = {"run": str(folder), "overrides": args.set, "iou": ious(),
           "spread": round(transfer_spread(rows)["spread"], 3), "spread_A": round(transfer_spread(rows[in_a])["spread"], 3)}
    if predictor.model.roi_heads.mask_predictor.kind == "transfer":
        calibrated(predictor, val, split)  # the design pilot's reading of T's rows, in place
        out["iou_calibrated"] = ious()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
