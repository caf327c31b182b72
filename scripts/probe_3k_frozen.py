"""Can a frozen ImageNet EfficientNet-Lite0 name the 3000-class world's classes from a box?

The shipped recipe has 90 minutes on 2 CPU cores to make a detector name 3000 classes. A frozen
ImageNet trunk lets the recipe compute the trunk once per training image and train the rest (FPN,
RPN, box head) on cached features for many epochs. This probe measures the part that matters for
naming: the frozen trunk's features on ground-truth boxes (RoIAlign 7 × 7 of stages 3, 4, 5,
strides 8/16/32), a box head like the model's (1 × 1 reduction per stage, two 1024-d FCs) trained
with cross-entropy over the 3000 classes on the train split's boxes, scored top-1 / top-5 on the
val split's boxes, on set A and set B, and per attribute of the predicted name. No detection.

    python scripts/probe_3k_frozen.py --data data/design3k-v2 --epochs 12 --out runs/design3k/probe.json
    # a trained detector's features instead: its FPN levels, or what its box head sees
    python scripts/probe_3k_frozen.py --model RUN --levels box --cache runs/design3k/probe_RUN.pt --out ...

Design data only (seeds 100/101, ``generate3k``): the shipped model trains on seed 0 and is
evaluated on seed 1.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

LEVELS = (("stage3", 8), ("stage4", 16), ("stage5", 32))


@torch.inference_mode()
def trunk_box_features(data_dir: Path, images: int | None, model=None) -> tuple[dict, torch.Tensor]:
    """{level: float16 [N, C, 7, 7]} on the ground-truth boxes of ``data_dir`` and their labels [N]: the
    frozen ImageNet trunk's stages 3-5, or with ``model`` (a trained detector) its FPN levels P2-P5
    (``fpn<k>``) and what its box head sees (``box``: ``box_roi_pool``, one level per box by its size)."""
    from maskx.data.coco import CocoDataset
    from maskx.gt_box_eval import gt_box_features
    from maskx.models.backbones import build_backbone

    ds = CocoDataset(data_dir / "images", data_dir / "annotations.json")
    if model is None:
        bb = build_backbone("efficientnet_lite0", trainable_layers=0).eval()
        mean = torch.tensor(bb.image_mean).view(3, 1, 1)
        std = torch.tensor(bb.image_std).view(3, 1, 1)
        feats = {name: [] for name, _ in LEVELS}
    else:
        model = model.eval()
        feats = {f"fpn{k}": [] for k in range(2, 6)} | {"box": []}
    labels = []
    n = len(ds) if images is None else min(images, len(ds))
    for i in range(n):
        image, t = ds[i]
        if len(t["boxes"]) == 0:
            continue
        if model is not None:
            f, boxes, sizes = gt_box_features(model, image, t["boxes"])
            for k, (name, level) in enumerate(zip(("fpn2", "fpn3", "fpn4", "fpn5"), ("0", "1", "2", "3"))):
                feats[name].append(roi_align(f[level], boxes, 7, 1.0 / 2 ** (k + 2), sampling_ratio=2, aligned=True).half())
            feats["box"].append(model.roi_heads.box_roi_pool(f, boxes, sizes).half())
            labels.append(t["labels"])
            if i % 500 == 0:
                print(f"  {data_dir.name}: {i}/{n} images", flush=True)
            continue
        x = ((image - mean) / std)[None]
        x = bb.stem(x)
        c2 = bb.stage2(x)
        c3 = bb.stage3(c2)
        c4 = bb.stage4(c3)
        c5 = bb.stage5(c4)
        boxes = [t["boxes"]]
        for (name, stride), c in zip(LEVELS, (c3, c4, c5)):
            feats[name].append(roi_align(c, boxes, 7, 1.0 / stride, sampling_ratio=2, aligned=True).half())
        labels.append(t["labels"])
        if i % 500 == 0:
            print(f"  {data_dir.name}: {i}/{n} images", flush=True)
    return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(labels), ds


def box_cache_rois(cache_dir: Path, channels: list[int], names: list[str], keep_background: bool, min_iou: float = 0.0):
    """A stage-box cache's RoIs as ``({level: float16 [N, C, 7, 7]}, labels [N])``: its features are the
    trunk levels concatenated along channels (``channels`` wide each, in ``names`` order)."""
    import numpy as np

    from maskx.box_cache import iou_from_targets

    feats = np.load(cache_dir / "features.npy", mmap_mode="r")
    labels = torch.from_numpy(np.load(cache_dir / "labels.npy"))
    iou = iou_from_targets(torch.from_numpy(np.load(cache_dir / "regression_targets.npy")))
    keep = torch.where(((labels > 0) & (iou >= min_iou)) | ((labels == 0) & keep_background))[0]
    x = torch.from_numpy(feats[keep.numpy()])  # read into memory
    if sum(channels) != x.shape[1]:
        raise SystemExit(f"{cache_dir}: {x.shape[1]} channels, the probe's levels have {sum(channels)}; "
                         "pass the box cache of a box_features='trunk' detector")
    return dict(zip(names, x.split(channels, 1))), labels[keep]


class ProbeHead(nn.Module):
    """1 × 1 conv per stage to ``reduce`` channels, concatenated, then 2 FCs (the box head) and a
    linear classifier over ``classes`` (label 0, background, never a target here)."""

    def __init__(self, channels, classes: int, reduce: int = 64, hidden: int = 1024, dropout: float = 0.0) -> None:
        super().__init__()
        self.reduce = nn.ModuleList(nn.Conv2d(c, reduce, 1) for c in channels)
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(reduce * len(channels) * 49, hidden), nn.ReLU(),
                                nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU())
        self.cls = nn.Linear(hidden, classes)

    def forward(self, xs):
        return self.cls(self.fc(torch.cat([F.relu(r(x)) for r, x in zip(self.reduce, xs)], 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/design3k-v2"))
    ap.add_argument("--train-images", type=int, default=None)
    ap.add_argument("--val-images", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", help="a trained detector (run folder or ckpt JSON): probe its FPN features instead")
    ap.add_argument("--levels", default=None, help="comma-separated feature levels to probe (default: all cached; "
                    "with --model e.g. 'box' for what its box head sees, or fpn2,fpn3,fpn4,fpn5)")
    ap.add_argument("--train-boxes", type=int, default=None,
                    help="train on the cache's first N training boxes only (how naming grows with data)")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--flip", action="store_true", help="mirror half of each batch's pooled features")
    ap.add_argument("--balanced", type=float, default=0.0, metavar="TAU",
                    help="logit-adjusted loss (Menon et al. 2021): + TAU * log prior in training only")
    ap.add_argument("--tau", default="0", help="comma-separated τ of the classifier's τ-normalisation at evaluation "
                    "(Kang et al. 2020: each class row and bias divided by the row's norm to the power τ; 0 = as trained)")
    ap.add_argument("--attributes", action="store_true",
                    help="train one classifier per attribute (body, pattern, hue, proportion) instead of the 3000 "
                         "classes: how well the features show each attribute, and the class their most likely "
                         "combination names (the world's visibility, apart from the long tail)")
    ap.add_argument("--box-cache", type=Path, default=None,
                    help="train on a stage-box cache (maskx.box_cache: the detector's sampled RoIs, jittered "
                         "positives and background) instead of the ground-truth boxes; val stays the GT boxes")
    ap.add_argument("--background-weight", type=float, default=0.0,
                    help="with --box-cache: keep the background RoIs, each weighed this much (0: positives only)")
    ap.add_argument("--min-iou", type=float, default=0.0,
                    help="with --box-cache: only positives whose IoU with their ground truth is at least this")
    ap.add_argument("--with-gt", action="store_true", help="with --box-cache: the ground-truth boxes too")
    ap.add_argument("--cache", type=Path, default=Path("runs/design3k/probe_features.pt"))
    ap.add_argument("--out", type=Path, default=Path("runs/design3k/probe.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    t0 = time.perf_counter()
    if args.cache.is_file():
        c = torch.load(args.cache)
    else:
        model = None
        if args.model:
            import maskx

            model = maskx.load(args.model).model
        tr, ytr, ds = trunk_box_features(args.data / "train", args.train_images, model)
        va, yva, _ = trunk_box_features(args.data / "val", args.val_images, model)
        cats = ds.data["categories"]
        a_ids = set(ds.data["info"]["set_A_category_ids"])
        c = {"train": tr, "ytrain": ytr, "val": va, "yval": yva,
             "is_a": torch.tensor([False] + [cat["id"] in a_ids for cat in cats]),
             "attributes": [[]] + [cat["attributes"] for cat in cats]}
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(c, args.cache)
    feature_seconds = time.perf_counter() - t0
    gt_counts = torch.bincount(c["ytrain"], minlength=len(c["is_a"]))
    if args.box_cache:
        rois, labels = box_cache_rois(args.box_cache, [c["val"][k].shape[1] for k in c["val"]],
                                      list(c["val"]), keep_background=args.background_weight > 0,
                                      min_iou=args.min_iou)
        if args.with_gt:
            rois = {k: torch.cat([c["train"][k], v]) for k, v in rois.items()}
            labels = torch.cat([c["ytrain"], labels])
        c["train"], c["ytrain"] = rois, labels
    if args.train_boxes:
        c["train"] = {k: v[:args.train_boxes] for k, v in c["train"].items()}
        c["ytrain"] = c["ytrain"][:args.train_boxes]
    names = args.levels.split(",") if args.levels else list(c["train"])
    classes = len(c["is_a"])
    counts = gt_counts  # training instances per class (the seen ≥ 10 / < 10 split)
    if args.attributes:
        return attribute_probe(c, names, counts, args)
    head = ProbeHead([c["train"][n].shape[1] for n in names], classes, hidden=args.hidden, dropout=args.dropout)
    prior = (counts.float().clamp_min(1) / counts.sum()).log() * args.balanced
    n = len(c["ytrain"])

    weight = None  # the background's weight, with --box-cache --background-weight
    if args.background_weight > 0:
        weight = torch.ones(classes)
        weight[0] = args.background_weight

    def loss_of(xs, idx):
        if args.flip:
            half = torch.rand(len(idx)) < 0.5
            xs = [torch.where(half[:, None, None, None], x.flip(-1), x) for x in xs]
        return F.cross_entropy(head(xs) + prior, c["ytrain"][idx], weight=weight)

    history = []
    for epoch, train_loss in fit(head, c, names, args, loss_of):
        res = {}
        for tau in [float(t) for t in args.tau.split(",")]:
            norm = head.cls.weight.detach().norm(dim=1, keepdim=True).clamp_min(1e-12) ** tau
            res.update({(k if tau == 0 else f"{k}@tau{tau:g}"): v for k, v in evaluate(head, c, names, counts, norm).items()
                        if tau == 0 or k in ("A", "B", "B_seen_10+", "B_seen_1-10")})
        res.update(epoch=epoch + 1, train_loss=train_loss)
        history.append(res)
        print(json.dumps(res), flush=True)
    out = {"data": str(args.data), "train_boxes": n, "val_boxes": len(c["yval"]), "feature_seconds": round(feature_seconds),
           "train_seconds": round(time.perf_counter() - t0 - feature_seconds), "args": {k: str(v) for k, v in vars(args).items()},
           "history": history}
    args.out.write_text(json.dumps(out, indent=1))


def fit(head, c, names, args, loss_of):
    """Train ``head`` on the cached training boxes with AdamW and a one-cycle lr (``args``: epochs, batch,
    lr); ``loss_of(features per level, batch indices)`` → loss. Yields (epoch, mean training loss)."""
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=1e-4)
    n = len(c["ytrain"])
    steps = args.epochs * ((n + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.1)
    for epoch in range(args.epochs):
        head.train()
        perm, total = torch.randperm(n), 0.0
        for s in range(0, n, args.batch):
            idx = perm[s:s + args.batch]
            loss = loss_of([c["train"][k][idx].float() for k in names], idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        yield epoch, round(total / n, 3)


ATTRIBUTES = ("body", "pattern", "hue", "proportion")


def attribute_value(attrs: list[str], key: str) -> str:
    """A class's value of attribute ``key`` ("key:value"); a class without a ``proportion`` is plain."""
    return next((a for a in attrs if a.startswith(key + ":")), key + ":plain")


def attribute_table(attributes) -> tuple[torch.Tensor, list]:
    """``[K, 4]`` value index of each class's attribute (background row -1) and each attribute's values."""
    values = {key: sorted({attribute_value(attrs, key) for attrs in attributes[1:]}) for key in ATTRIBUTES}
    table = torch.full((len(attributes), len(ATTRIBUTES)), -1, dtype=torch.long)
    for label, attrs in enumerate(attributes[1:], 1):
        for j, key in enumerate(ATTRIBUTES):
            table[label, j] = values[key].index(attribute_value(attrs, key))
    return table, [values[k] for k in ATTRIBUTES]


def attribute_probe(c, names, counts, args) -> None:
    """One head (the box head's shape) with a classifier per attribute, trained with the sum of their
    cross-entropies; val accuracy per attribute on A and B, and the class named by the most likely
    combination of attribute values (over the classes that exist)."""
    table, values = attribute_table(c["attributes"])
    head = ProbeHead([c["train"][n].shape[1] for n in names], sum(len(v) for v in values), hidden=args.hidden,
                     dropout=args.dropout)
    cuts = torch.tensor([0] + [len(v) for v in values]).cumsum(0).tolist()

    def loss_of(xs, idx):
        out, target = head(xs), table[c["ytrain"][idx]]
        return sum(F.cross_entropy(out[:, cuts[j]:cuts[j + 1]], target[:, j]) for j in range(len(ATTRIBUTES)))

    for epoch, train_loss in fit(head, c, names, args, loss_of):
        head.eval()
        with torch.inference_mode():
            out = torch.cat([head([c["val"][k][s:s + 1024].float() for k in names])
                             for s in range(0, len(c["yval"]), 1024)])
        y = c["yval"]
        logp = [F.log_softmax(out[:, cuts[j]:cuts[j + 1]], 1) for j in range(len(ATTRIBUTES))]
        # a class's score: the sum of its attribute values' log-probabilities
        score = sum(logp[j][:, table[1:, j]] for j in range(len(ATTRIBUTES)))
        top5 = score.topk(5, 1).indices + 1
        is_a = c["is_a"][y]
        res = {"epoch": epoch + 1, "train_loss": train_loss}
        for set_name, m in (("A", is_a), ("B", ~is_a), ("B_seen_10+", ~is_a & (counts[y] >= 10)),
                            ("B_seen_0-9", ~is_a & (counts[y] < 10))):
            res[set_name] = {"top1": round(100 * (top5[m, 0] == y[m]).float().mean().item(), 1),
                             "top5": round(100 * (top5[m] == y[m, None]).any(1).float().mean().item(), 1),
                             "n": int(m.sum())}
            res[set_name].update({key: round(100 * (logp[j][m].argmax(1) == table[y[m], j]).float().mean().item(), 1)
                                  for j, key in enumerate(ATTRIBUTES)})
        print(json.dumps(res), flush=True)


@torch.inference_mode()
def evaluate(head, c, names, counts, norm=None) -> dict:
    """Val top-1/top-5 per set (``norm``: ``[K, 1]`` divisor of each class's logit, τ-normalisation)."""
    head.eval()
    logits = torch.cat([head([c["val"][k][s:s + 1024].float() for k in names]) for s in range(0, len(c["yval"]), 1024)])
    if norm is not None:
        logits = logits / norm[:, 0]
    logits[:, 0] = -1e9
    y = c["yval"]
    top5 = logits.topk(5, 1).indices
    hit1 = top5[:, 0] == y
    hit5 = (top5 == y[:, None]).any(1)
    is_a = c["is_a"][y]
    seen = counts[y]
    out = {}
    for name, m in (("A", is_a), ("B", ~is_a), ("B_seen_10+", ~is_a & (seen >= 10)), ("B_seen_1-10", ~is_a & (seen >= 1) & (seen < 10))):
        if m.any():
            out[name] = {"top1": round(100 * hit1[m].float().mean().item(), 1),
                         "top5": round(100 * hit5[m].float().mean().item(), 1), "n": int(m.sum())}
    attrs = c["attributes"]
    pred = top5[:, 0].tolist()
    for key in ATTRIBUTES:
        ok = [attribute_value(attrs[p], key) == attribute_value(attrs[t], key)
              for p, t in zip(pred, y.tolist()) if not c["is_a"][t]]
        out[f"B_{key}"] = round(100 * sum(ok) / max(1, len(ok)), 1)
    return out


if __name__ == "__main__":
    main()
