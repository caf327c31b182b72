"""The two measurements behind the study's detector settings (docs/study.md),
made on the seed-0 study detector: a training-lr probe and a test-settings sweep. Both look only
at training losses and box AP; neither trains a mask head.

    # train the seed-0 study detector at another lr (resumable; ~40 min on 2 cores)
    python scripts/detector_probes.py train --base-lr 0.08 --out runs/probe/det-lr08
    # train losses per 250-iteration window, side by side
    python scripts/detector_probes.py losses runs/probe/det-lr02 runs/probe/det-lr08
    # box AP on A and B under test settings (detections per image, RPN proposals), ~1.5-3 min each
    python scripts/detector_probes.py box-ap runs/study/efficientnet_lite0__detector__all__s0 --dets 100 --proposals 300
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from maskx_study.runner import SCALES, Run, _val_split


def train(base_lr: float, out: Path, iters: int, warmup: int) -> None:
    from maskx.train import run_training

    cfg = Run("detector", "all", 0, SCALES["study"].backbone).config(SCALES["study"]).replace(
        iters=iters, base_lr=base_lr, warmup_iters=warmup)
    run_training(cfg, Path(SCALES["study"].data) / "train", out, resume=out.exists() and any(out.glob("ckpt_*.json")))


def losses(runs: list[Path], window: int = 250) -> None:
    keys = ("loss", "loss_classifier", "loss_box_reg", "loss_objectness")
    from maskx.train import read_log

    logs = {r: read_log(r / "log.jsonl") for r in runs}
    print("iters | " + " | ".join(f"{r.name}: {' '.join(keys)}" for r in runs))
    for s in range(0, max(len(v) for v in logs.values()), window):
        cells = []
        for v in logs.values():
            w = [x for x in v if s <= x["iter"] < s + window]
            cells.append(" ".join(f"{np.mean([x[k] for x in w]):.3f}" for k in keys) if w else "-")
        print(f"{s}-{s + window - 1} | " + " | ".join(cells))


def box_ap(run: Path, dets: int, proposals: int) -> dict:
    from maskx.config import Config
    from maskx.data.coco import CocoDataset
    from maskx.engine import evaluate_model
    from maskx.evaluate import evaluate_predictions
    from maskx.predictor import load

    val = CocoDataset.from_dir(Path(SCALES["study"].data) / "val")
    predictor = load(run, inference=Config(detections_per_img=dets, rpn_test_proposals=proposals))
    split = _val_split(val, "voc2nonvoc", 0)
    t0 = time.perf_counter()
    _, preds = evaluate_model(predictor, val, split, progress=False)
    seconds = time.perf_counter() - t0
    m = evaluate_predictions(val.data, preds, split)
    return {"run": str(run), "detections_per_img": dets, "rpn_test_proposals": proposals, "eval_seconds": round(seconds),
            **{f"{s}_{k}": m[s][k] for s in ("A", "B") for k in ("bbox_AP", "bbox_AP50")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--base-lr", type=float, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--iters", type=int, default=SCALES["study"].detector_iters)
    t.add_argument("--warmup", type=int, default=200)
    lo = sub.add_parser("losses")
    lo.add_argument("runs", type=Path, nargs="+")
    b = sub.add_parser("box-ap")
    b.add_argument("run", type=Path)
    b.add_argument("--dets", type=int, default=100)
    b.add_argument("--proposals", type=int, default=300)
    a = p.parse_args()
    if a.cmd == "train":
        train(a.base_lr, a.out, a.iters, a.warmup)
    elif a.cmd == "losses":
        losses(a.runs)
    else:
        print(json.dumps(box_ap(a.run, a.dets, a.proposals)))


if __name__ == "__main__":
    main()
