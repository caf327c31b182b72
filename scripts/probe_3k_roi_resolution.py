"""Do the 3000-class model's RoI features hold the shape at 14×14 that they lose at 7×7?

The box head sees each RoI through a 7×7 RoIAlign; the mask head through 14×14. The 3000 classes
differ by base shape (200 of them) and by small edge / proportion attributes. This probe pools the
shipped model's FPN features on ground-truth boxes both ways (the model's own ``box_roi_pool`` and
``mask_roi_pool``), fits the same L2-regularised linear classifier on each (train images) and
scores it on val images, for each factor of a class's name. Detection and the trained box head
are taken out: only what the pooled features can tell apart is measured. A control pools 14×14
and averages it down to 7×7 (same dimension as the box head's input).

    python scripts/probe_3k_roi_resolution.py --train-images 600 --val-images 300
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

FACTORS = ("base", "family", "edge", "proportion")


@torch.inference_mode()
def pooled_features(model, dataset, images: int, by_id) -> tuple[dict, dict]:
    """{"7x7": [N, 256*7*7], "14x14": [N, 256*14*14], "14x14→7x7": [N, 256*7*7]} float16 and
    {factor: [N] int labels} for the ground-truth boxes of ``dataset``'s first ``images`` images."""
    from maskx.gt_box_eval import gt_box_features

    rh = model.roi_heads
    feats = {"7x7": [], "14x14": [], "14x14→7x7": []}
    names = {f: [] for f in FACTORS}
    for i in range(min(images, len(dataset))):
        image, t = dataset[i]
        if len(t["boxes"]) == 0:
            continue
        f, boxes, sizes = gt_box_features(model, image, t["boxes"])
        small, large = rh.box_roi_pool(f, boxes, sizes), rh.mask_roi_pool(f, boxes, sizes)
        feats["7x7"].append(small.flatten(1).half())
        feats["14x14"].append(large.flatten(1).half())
        feats["14x14→7x7"].append(F.avg_pool2d(large, 2).flatten(1).half())
        for k in t["labels"].tolist():
            c = by_id[dataset.categories.category_id(k)]
            for name, value in (("base", (c.family, c.base)), ("family", c.family), ("edge", c.edge),
                                ("proportion", c.proportion)):
                names[name].append(value)
    return {k: torch.cat(v) for k, v in feats.items()}, names


def standardise(x_train, x_val) -> tuple[torch.Tensor, torch.Tensor]:
    """Both float32, shifted and scaled by the train features' per-dimension mean and std."""
    mean, std = x_train.float().mean(0), x_train.float().std(0) + 1e-3
    return (x_train.float() - mean) / std, (x_val.float() - mean) / std


def fit_and_score(xt, y_train, xv, y_val, classes: int, weight_decay: float, steps: int) -> float:
    """Top-1 accuracy on val of a multinomial logistic regression (L-BFGS) on standardised inputs."""
    w = torch.zeros(xt.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=steps, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xt @ w + b, y_train) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (xv @ w + b).argmax(1).eq(y_val).float().mean().item()


def main() -> None:
    from maskx.data.coco import CocoDataset
    from maskx.data.vocab3k import classes
    from maskx.predictor import load
    from maskx_release.ship import val_split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="maskx-3k")
    ap.add_argument("--data", default="data/synth3k", help="3000-class data folder (python -m maskx data synth3k)")
    ap.add_argument("--train-images", type=int, default=600, help="first N train images fit the probes")
    ap.add_argument("--val-images", type=int, default=300, help="first N val images score them")
    ap.add_argument("--weight-decay", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=100, help="L-BFGS iterations")
    args = ap.parse_args()

    t0 = time.perf_counter()
    model = load(args.model).model.eval()
    by_id = {c.category_id: c for c in classes()}
    train = CocoDataset(f"{args.data}/train/images", f"{args.data}/train/annotations.json")
    val, _ = val_split(args.data, args.val_images)
    xt, nt = pooled_features(model, train, args.train_images, by_id)
    xv, nv = pooled_features(model, val, args.val_images, by_id)
    for pool in xt:  # once per pool, not per factor
        xt[pool], xv[pool] = standardise(xt[pool], xv[pool])
    out = {"train_instances": len(nt["base"]), "val_instances": len(nv["base"]), "weight_decay": args.weight_decay,
           "accuracy": {}}
    for factor in FACTORS:
        values = sorted(set(nt[factor]) | set(nv[factor]), key=str)
        index = {v: i for i, v in enumerate(values)}
        yt, yv = (torch.tensor([index[v] for v in n[factor]]) for n in (nt, nv))
        majority = torch.bincount(yt, minlength=len(values)).argmax()
        row = {"classes": len(values), "majority": round(yv.eq(majority).float().mean().item(), 3)}
        for pool in xt:
            row[pool] = round(fit_and_score(xt[pool], yt, xv[pool], yv, len(values), args.weight_decay, args.steps), 3)
        out["accuracy"][factor] = row
        print(factor, row, flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
