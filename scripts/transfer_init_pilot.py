"""Set-A pilot for ``Config.transfer_init``: the study's stage-wise cls+box run (seed 0) retrained
with T's official MSRA init on the seed-0 study detector, printed beside the committed result with
nn.Linear's default init. Prints set-A numbers and train losses only (the choice must not look at B).

    python scripts/transfer_init_pilot.py voc2nonvoc   # ~4 min at 1 thread once the detector exists
    python scripts/transfer_init_pilot.py nonvoc2voc
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
from pathlib import Path

from maskx_study.runner import SCALES, Study
from maskx_study.plan import Run
from maskx.train import read_log

ROOT = Path("runs/pilot-init")


def mean_mask_loss(run_dir: Path, lo: int, hi: int) -> float:
    rows = read_log(run_dir / "log.jsonl")
    return statistics.mean(r["loss_mask"] for r in rows if "loss_mask" in r and lo <= r["iter"] < hi)


def main(direction: str) -> None:
    scale = dataclasses.replace(SCALES["study"], overrides=SCALES["study"].overrides + ("transfer_init=msra",))
    study = Study(scale, results_dir=ROOT / "results", runs_dir=ROOT / "runs", progress=False)
    run = Run("transfer_clsbox_2lrelu", direction, 0, scale.backbone)
    det = run.detector()
    for link, target in ((study.run_dir(det), Path("runs/study") / det.key), (study.result_path(det), Path("results") / f"{det.key}.json")):
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(target.resolve(), link.parent))
    if not study.result_path(run).is_file():
        study.run_one(run)
    study.add_gt_box_ious([run])
    for name, result, run_dir in (("torch", Path("results") / f"{run.key}.json", Path("runs/study") / run.key),
                                  ("msra", study.result_path(run), study.run_dir(run))):
        m = json.loads(result.read_text())["metrics"][direction]
        print(f"{direction} {name:5s} segm AP on A {m['A']['segm_AP']:.2f}  mask IoU on A's GT boxes "
              f"{m['masks_on_gt_boxes']['A']['mean_iou']:.3f}  train mask loss its 900-1000 {mean_mask_loss(run_dir, 900, 1000):.4f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "voc2nonvoc")
