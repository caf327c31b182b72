"""Design pilot for T's training settings: the stage-wise T(cls+box) run of the diagnostics retrained
with config overrides on a DESIGN detector, data and split (never the study's), and its mask IoU on
the design val's ground-truth boxes beside the class-agnostic head and the oracle of the same record.

    python scripts/transfer_pilot.py --record results/diagnostics/design_v4b_det4500_rand20_t0_splitseed4242.json \\
        --data data/design-v4b --set transfer_init=msra

The run goes beside the record's own heads (its folder name carries the overrides; none: the record's
own T run is measured); the line printed
is what docs/world-design.md quotes. ``--calibrate`` also measures the run with T's rows read as the
diagnostics' calibrated probe reads its rows (``maskx.diagnostics.calibrate_rows``: each class's
deviation from A's mean row rescaled to the mean size of A's deviations): whether T points the right
way and only shrinks B's rows toward A's mean.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--record", type=Path, required=True, help="a design diagnostics record (scripts/diagnostics.py)")
    p.add_argument("--data", type=Path, required=True, help="its design data (train/ and val/)")
    p.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--calibrate", action="store_true", help="also measure T's rows calibrated")
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
    # no overrides: the record's own T run (the study's settings)
    folder = base.parent / f"{base.name}__pilot__{'__'.join(s.replace('=', '-') for s in args.set)}" if args.set else base
    scale = SCALES["study"]
    cfg = Run("transfer_clsbox_2lrelu", rec["split"], rec["seed"], scale.backbone).config(scale, Path(rec["detector"]))
    cfg = cfg.replace(split=str(split_file)).with_overrides(args.set)
    if not (folder / "done.json").is_file():
        run_training(cfg, args.data / "train", folder, resume=bool(list_checkpoints(folder)), progress=False)
    val = CocoDataset.from_dir(args.data / "val")
    split = resolve_split(str(split_file), val.data["categories"])
    predictor = maskx.load(folder)
    got = mask_iou_on_gt_boxes(predictor, val, split, images=args.images)
    out = {"overrides": args.set, "run": str(folder), "T_iou": {s: round(got[s]["mean_iou"], 3) for s in ("A", "B")},
           "record": {k: rec["iou_on_gt_boxes"][k] for k in ("agnostic", "transfer", "oracle")}}
    if args.calibrate:
        calibrated(predictor, val, split)
        got = mask_iou_on_gt_boxes(predictor, val, split, images=args.images)
        out["T_calibrated_iou"] = {s: round(got[s]["mean_iou"], 3) for s in ("A", "B")}
    print(json.dumps(out))
    return 0


def calibrated(predictor, val, split) -> None:
    """Make ``predictor``'s transfer head use T's rows for every class calibrated on set A (in place)."""
    import numpy as np
    import torch

    from maskx.diagnostics import calibrate_rows

    rh = predictor.model.roi_heads
    mp = rh.mask_predictor
    with torch.no_grad():
        rows = mp.all_classes(rh.box_predictor)[0].double().numpy()  # [K+1, E], row 0 background
    a_ids = set(split.a_ids)
    in_a = np.array([False] + [cid in a_ids for cid in val.categories.ids])
    table = torch.tensor(calibrate_rows(rows, rows, in_a), dtype=torch.float32)
    mp.forward = lambda labels, box_predictor: (table[labels], None)


if __name__ == "__main__":
    raise SystemExit(main())
