"""Design pilot for T's training settings: the stage-wise T(cls+box) run of the diagnostics retrained
with config overrides on a DESIGN detector, data and split (never the study's), and its mask IoU on
the design val's ground-truth boxes beside the class-agnostic head and the oracle of the same record.

    python scripts/transfer_pilot.py --record results/diagnostics/design_v4b_det4500_rand20_t0_splitseed4242.json \\
        --data data/design-v4b --set transfer_init=msra

The run goes beside the record's own heads (its folder name carries the overrides); the line printed
is what docs/world-design.md quotes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--record", type=Path, required=True, help="a design diagnostics record (scripts/diagnostics.py)")
    p.add_argument("--data", type=Path, required=True, help="its design data (train/ and val/)")
    p.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    p.add_argument("--images", type=int, default=100)
    args = p.parse_args(argv)

    import maskx
    from maskx.checkpoint import list_checkpoints
    from maskx.data.coco import CocoDataset
    from maskx.data.splits import resolve_split
    from maskx.gt_box_eval import mask_iou_on_gt_boxes
    from maskx.train import run_training
    from maskx_study.plan import SCALES, Run

    rec = json.loads(args.record.read_text())
    if "design" not in args.record.name:
        raise SystemExit(f"{args.record}: not a design record; T's settings are chosen on design data only")
    base = Path(rec["runs"]["transfer_clsbox_2lrelu"])
    split_file = base.parent / f"{base.name}.split.json"
    tag = "__".join(s.replace("=", "-") for s in args.set) or "as-study"
    folder = base.parent / f"{base.name}__pilot__{tag}"
    scale = SCALES["study"]
    cfg = Run("transfer_clsbox_2lrelu", rec["split"], rec["seed"], scale.backbone).config(scale, Path(rec["detector"]))
    cfg = cfg.replace(split=str(split_file)).with_overrides(args.set)
    if not (folder / "done.json").is_file():
        run_training(cfg, args.data / "train", folder, resume=bool(list_checkpoints(folder)), progress=False)
    val = CocoDataset.from_dir(args.data / "val")
    split = resolve_split(str(split_file), val.data["categories"])
    got = mask_iou_on_gt_boxes(maskx.load(folder), val, split, images=args.images)
    iou = rec["iou_on_gt_boxes"]
    print(json.dumps({"overrides": args.set, "run": str(folder),
                      "T_iou": {s: round(got[s]["mean_iou"], 3) for s in ("A", "B")},
                      "record": {k: iou[k] for k in ("agnostic", "transfer", "oracle")}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
