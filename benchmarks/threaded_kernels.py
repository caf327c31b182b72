"""Serial CPU kernels run on threads, bit for bit: their gain on the 3000-class model, side by side.

torchvision's CPU NMS and RoIAlign forward are serial loops. maskx runs them on torch's threads
without changing a bit of any output (``maskx.ops.rpn.ThreadedRPN``: a batch's images filtered on
threads; ``maskx.ops.roi_align.threaded_roi_align``: slices of the RoIs), so the shipped model's
training and evaluation reproduce exactly and only take less time. Measured here on the shipped
weights (fp32), each variant interleaved with its serial twin in every repetition:

- a training step's forward + backward (batch 2, 256 px, the torch RNG reseeded before each so that
  both sample the same RoIs): threaded RPN filtering vs torchvision's loop; the losses must be equal;
- the RPN's ``filter_proposals`` of that step alone;
- ``predict`` on val-like images at 256 px (how ``python -m maskx ship`` evaluates): threaded RoIAlign
  forward vs torchvision's serial one; the detections must be equal.

    python benchmarks/threaded_kernels.py --out benchmarks/results/threaded_kernels.json   # ~4 min
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from timing import interleave  # noqa: E402


def _batch(predictor, size: int = 256, seed: int = 0, first: int = 0):
    """Two 3000-class training images and their targets (label = class index + 1; masks of set A only)."""
    from torchvision.ops import masks_to_boxes

    from maskx.data.synthetic3k import render3k

    images, targets = [], []
    for k in range(first, first + 2):
        pixels, inst = render3k(seed, k, size)
        masks = torch.from_numpy(np.stack([m for _, m in inst])).to(torch.uint8)
        boxes = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])  # its x1, y1: the last pixels
        has_mask = torch.tensor([predictor.category_ids[c] in predictor.set_a for c, _ in inst])
        images.append(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
        targets.append({"boxes": boxes, "masks": masks * has_mask[:, None, None],
                        "labels": torch.tensor([c + 1 for c, _ in inst]), "has_mask": has_mask})
    return images, targets


def bench_train_step(predictor, reps: int) -> dict:
    from torchvision.models.detection.rpn import RegionProposalNetwork

    from maskx.ops.rpn import ThreadedRPN

    class SerialRPN(ThreadedRPN):  # the model's RPN (reads the maps it reads) with torchvision's serial filter
        filter_proposals = RegionProposalNetwork.filter_proposals

    model = predictor.model.train()
    images, targets = _batch(predictor)
    losses = {}
    captured = {}
    rpn_filter = ThreadedRPN.filter_proposals

    def capture(self, *args):
        captured["args"] = args
        return rpn_filter(self, *args)

    def step(cls):
        def run():
            model.rpn.__class__ = cls
            torch.manual_seed(0)
            out = model(images, targets)
            sum(out.values()).backward()
            model.zero_grad(set_to_none=True)
            losses[cls.__name__] = {k: v.item() for k, v in out.items()}
        return run

    ThreadedRPN.filter_proposals = capture
    try:
        step(ThreadedRPN)()
    finally:
        ThreadedRPN.filter_proposals = rpn_filter
    args = captured["args"]
    steps = interleave({"torchvision": step(SerialRPN), "threaded": step(ThreadedRPN)}, reps, 1,
                       base="torchvision")
    model.rpn.__class__ = ThreadedRPN
    filt = interleave({"torchvision": lambda: RegionProposalNetwork.filter_proposals(model.rpn, *args),
                       "threaded": lambda: rpn_filter(model.rpn, *args)}, 5 * reps, 2, base="torchvision")
    a, b = RegionProposalNetwork.filter_proposals(model.rpn, *args), rpn_filter(model.rpn, *args)
    same = all(torch.equal(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1]))
    return {"step": _summary(steps), "filter_proposals": _summary(filt), "same_proposals": same,
            "same_losses": losses["SerialRPN"] == losses["ThreadedRPN"], "losses": losses["ThreadedRPN"]}


def bench_predict(predictor, images: int, reps: int) -> dict:
    from maskx.data.synthetic3k import render3k
    from maskx.ops import roi_align

    pics = [render3k(1, i, 256)[0] for i in range(images)]  # val-like: the val world seed 1
    threaded = roi_align.MIN_ROIS_PER_THREAD
    found = {}

    def run(name, min_rois):
        def go():
            roi_align.MIN_ROIS_PER_THREAD = min_rois
            try:
                found[name] = [[(i.label, i.box, i.score, np.packbits(i.mask).tobytes()) for i in predictor.predict(p, score_thresh=0.0)] for p in pics]
            finally:
                roi_align.MIN_ROIS_PER_THREAD = threaded
        return go

    res = interleave({"torchvision": run("torchvision", 10 ** 9), "threaded": run("threaded", threaded)}, reps, 0,
                     base="torchvision")
    out = _summary(res)
    out.update(images=images, per_image_s={k: round(v["median_s"] / len(pics), 3) for k, v in res.items()},
               same_detections=found["torchvision"] == found["threaded"])
    return out


def _summary(res: dict) -> dict:
    return {name: {k: round(v, 4) for k, v in r.items() if k != "times_s"} for name, r in res.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "threaded_kernels.json"))
    ap.add_argument("--model", default="maskx-3k", help="the shipped model's name, or a run folder")
    ap.add_argument("--reps", type=int, default=20, help="training-step repetitions per variant")
    ap.add_argument("--images", type=int, default=10, help="images per predict repetition")
    ap.add_argument("--predict-reps", type=int, default=5)
    args = ap.parse_args(argv)
    from maskx.atomic import write_json_atomic
    from maskx.predictor import load

    load_avg = os.getloadavg()
    predictor = load(args.model)
    predictor.model.float()
    res = {"meta": {"date": datetime.date.today().isoformat(), "load_avg_start": load_avg,
                    "threads": torch.get_num_threads(), "torch": torch.__version__},
           "predict_256px": bench_predict(predictor, args.images, args.predict_reps),
           "train_step": bench_train_step(predictor, args.reps)}
    res["meta"]["load_avg_end"] = os.getloadavg()
    write_json_atomic(res, args.out)
    t, p = res["train_step"], res["predict_256px"]
    print("| measure | serial (torchvision) | threaded | paired ratio | outputs equal |\n|---|---:|---:|---:|---|")
    for name, r, same in (("training step fwd+bwd", t["step"], t["same_losses"]),
                          ("RPN filter_proposals", t["filter_proposals"], t["same_proposals"]),
                          (f"predict, {p['images']} images", p, p["same_detections"])):
        print(f"| {name} | {r['torchvision']['median_s']} s | {r['threaded']['median_s']} s | "
              f"{r['threaded']['ratio_vs_torchvision']:.3f}x | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
