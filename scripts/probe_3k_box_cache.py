"""Does a fresh box head learn set B from a stage-``box`` cache, with and without the background class?

Reads a box cache (``maskx.box_cache``: pooled RoI features of the detector's sampled RoIs and their
labels), takes the RoIs of its first ``--rois`` rows (``--positives-only``: positives only) and trains a
fresh head like the model's box head (two 512-wide FCs, a 3001-way classifier) on them with AdamW,
reporting the accuracy on those same training RoIs per epoch: top-1 over the real classes for set A
and set B positives (background column left out, as ``naming_on_gt_boxes``). ``--background-weight``
weighs the background RoIs' loss as stage box does.

    python scripts/probe_3k_box_cache.py --cache RUN/box_cache --positives-only
    python scripts/probe_3k_box_cache.py --cache RUN/box_cache --background-weight 3
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--rois", type=int, default=60000)
    ap.add_argument("--positives-only", action="store_true")
    ap.add_argument("--background-weight", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--a-classes", type=int, default=80, help="labels 1..N are set A (the 3000-class world's order)")
    ap.add_argument("--regression", action="store_true",
                    help="also train a class-specific box regressor on the same FCs (stage box's loss, box_head_loss)")
    ap.add_argument("--detach-regression", action="store_true",
                    help="with --regression: the regressor reads the FCs' output without passing its gradient back")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    labels = np.load(f"{args.cache}/labels.npy")
    feats = np.load(f"{args.cache}/features.npy", mmap_mode="r")
    rows = np.where(labels > 0)[0][:args.rois] if args.positives_only else np.arange(min(args.rois, len(labels)))
    x = torch.from_numpy(np.asarray(feats[rows])).flatten(1)
    y = torch.from_numpy(labels[rows])
    regs = torch.from_numpy(np.load(f"{args.cache}/regression_targets.npy")[rows])
    k = max(int(labels.max()) + 1, 3001)
    fcs = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU())
    head = torch.nn.Sequential(fcs, torch.nn.Linear(512, k))
    bbox_pred = torch.nn.Linear(512, 4 * k)
    params = list(head.parameters()) + (list(bbox_pred.parameters()) if args.regression else [])
    opt = torch.optim.AdamW(params, 1e-3, weight_decay=1e-4)
    weight = torch.ones(head[-1].out_features)
    weight[0] = args.background_weight
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        perm, total = torch.randperm(len(y)), 0.0
        for s in range(0, len(y), 256):
            i = perm[s:s + 256]
            if args.regression:
                from maskx.box_cache import box_head_loss, own_class_regression

                h = fcs(x[i].float())
                pos = y[i] > 0
                hr = h.detach() if args.detach_regression else h
                losses = box_head_loss(head[1](h), own_class_regression(bbox_pred, hr[pos], y[i][pos]), y[i], regs[i],
                                       args.background_weight)
                loss = losses["loss_classifier"] + losses["loss_box_reg"]
            else:
                loss = F.cross_entropy(head(x[i].float()), y[i], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(i)
        with torch.no_grad():
            logits = torch.cat([head(x[s:s + 2048].float()) for s in range(0, len(y), 2048)])
            logits[:, 0] = -float("inf")
            pred = logits.argmax(1)
        in_a, in_b = (y > 0) & (y <= args.a_classes), y > args.a_classes
        print(json.dumps({"epoch": epoch + 1, "loss": round(total / len(y), 3),
                          "train_top1_A": round(100 * (pred[in_a] == y[in_a]).float().mean().item(), 1),
                          "train_top1_B": round(100 * (pred[in_b] == y[in_b]).float().mean().item(), 1),
                          "rois": len(y), "seconds": round(time.perf_counter() - t0)}), flush=True)


if __name__ == "__main__":
    main()
