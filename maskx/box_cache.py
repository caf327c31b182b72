"""Stage ``box``: the box head re-trained on cached RoI features of a frozen detector.

With thousands of classes and a CPU budget of about one epoch, a detector's SGD steps leave its
3000-way classifier far from trained: a class row moves only when its class is in the batch, and
most classes have a handful of training instances (the long tail; Kang et al. 2020, "Decoupling
representation and classifier for long-tailed recognition", retrain the classifier alone for the
same reason). Here the backbone, FPN and RPN of a trained detector are frozen, so what its box head
sees of a training image (the pooled features of the RoIs the Fast R-CNN sampler draws) can be
computed once; the box head (its two FCs, the classifier and the box regressor) is then trained on
them for many epochs, with AdamW, whose per-parameter step sizes let rare classes' rows move as
fast as frequent ones'. The detector's weights start it; everything but the box head is unchanged,
so the result is an ordinary detector (``detector=`` of a stage-``mask`` run).

What differs from training the box head on images: each image's RoIs are sampled once (the
detector's own sampler: ``rois_per_image`` proposals, 25 % positive), of which at most ``positives``
positives and ``negatives`` negatives are kept, and every ground-truth box is kept besides; the
classification loss weighs each negative ``background_weight`` times (the sampler's 1 : 3 foreground :
background ratio in expectation, from fewer stored negatives) and ignores positives that overlap
their ground truth less than ``cls_iou`` (they still teach the regressor): a RoI covering half an
object hides what tells its class from its neighbours' (a 3000-way classifier taught on the sampler's
positives, median IoU 0.58, names set B on ground-truth boxes 23 % against 34 % when taught on
IoU ≥ 0.7; docs/model-3k-design.md §11); a flip mirrors the pooled features and the regression
target's x offset.

A cache folder (``<stage-box run>/box_cache/``) holds ``features.npy`` float16 [N, C, 7, 7]
(``box_roi_pool`` of each kept RoI), ``labels.npy`` int64 [N] (0: background),
``regression_targets.npy`` float32 [N, 4] (the box coder's encoding of the matched ground truth),
``offsets.npy`` int64 [I + 1] and ``meta.json`` (what it was built from; a stale cache is rebuilt).
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from .atomic import atomic_dir, write_json_atomic
from .models.roi_heads import cap_rois
from .roi_cache import MaskRoIWriter, ensure_cache, has_mask_labels, image_seed, open_cache, sampled_rois

CACHE_VERSION = 2  # 2: every ground-truth box kept
ARRAYS = ("features", "labels", "regression_targets", "offsets")


def box_cache_meta(detector_ckpt: dict, dataset, config) -> dict:
    """What a cache depends on: the detector's weights, the data, the sampling settings."""
    return {"format": f"maskx-box-cache-{CACHE_VERSION}", "detector_sha256": detector_ckpt.get("sha256"),
            "data": str(dataset.ann_file), "images": len(dataset), "positives": config.box_cache_positives,
            "negatives": config.box_cache_negatives, "rois_per_image": config.rois_per_image,
            "image_size": config.image_size, "seed": 0}


@torch.no_grad()
def build_box_cache(model, dataset, out_dir, meta: dict, progress: bool = True, mask=None) -> Path:
    """Write the cache of ``model`` (its frozen detector) on every image of ``dataset`` to ``out_dir``
    (atomically). ``mask`` = (folder, meta, the dataset with every mask annotation): also write there, from
    the same forward of each image, the mask branch's RoI cache (``maskx.roi_cache``, ``meta["per_image"]``
    RoIs an image), row for row what ``build_roi_cache`` writes for a detector with this backbone and RPN.
    Its meta is staged (``detector_sha256`` None) until ``roi_cache.adopt_roi_cache`` names the
    stage-box run's checkpoint."""
    out_dir = Path(out_dir)
    n, heads = len(dataset), model.roi_heads
    every = mask[2] if mask else dataset  # the same images and boxes; the box rows read no mask
    if len(every) != n or list(getattr(every, "ids", [])) != list(getattr(dataset, "ids", [])):
        raise ValueError(f"{dataset.ann_file}: the mask RoI cache's dataset holds other images than the box cache's")
    model.train()  # training-mode RPN (its pre/post-NMS counts) and the Fast R-CNN sampler
    model.backbone.eval()  # frozen norm statistics, as the detector used them
    pool = heads.box_roi_pool.output_size[0]  # the FPN's width, or the trunk maps' (box_features="trunk")
    channels = getattr(heads.box_roi_pool, "out_channels", model.backbone.out_channels)
    anns = getattr(dataset, "anns", None)  # CocoDataset: each image's kept boxes
    most_gt = max((len(anns[i]) for i in dataset.ids), default=0) if anns is not None else meta["rois_per_image"]
    per_image = meta["positives"] + meta["negatives"] + most_gt  # rows allocated; unwritten ones stay sparse
    with atomic_dir(out_dir) as tmp, (atomic_dir(mask[0]) if mask else nullcontext()) as mask_tmp:
        rows = MaskRoIWriter(mask_tmp, heads, model.backbone.out_channels, mask[1]["per_image"], n) if mask else None
        feats = np.lib.format.open_memmap(tmp / "features.npy", "w+", np.float16, (per_image * n, channels, pool, pool))
        labels, targets, offsets = [], [], [0]
        t0 = time.perf_counter()
        for i in tqdm(range(n), desc="box cache" + (" + RoI cache" if mask else ""), disable=not progress,
                      dynamic_ncols=True):
            sample = sampled_rois(model, *every[i], image_seed(meta, i))  # the image's RoI sample, reproducible
            drawn = torch.get_rng_state()  # each cache draws its subset of the sample from here
            features, sizes, tgts, proposals, _, labs, regs = sample
            is_gt = (regs[0].reshape(len(labs[0]), -1) == 0).all(1)  # the sampler's copies of ground-truth boxes
            keep = torch.cat([cap_rois(torch.where((labs[0] > 0) & ~is_gt)[0], meta["positives"]),
                              cap_rois(torch.where(labs[0] == 0)[0], meta["negatives"])])
            gt_boxes, gt_labels = tgts[0]["boxes"], tgts[0]["labels"]
            rois = torch.cat([gt_boxes, proposals[0][keep]])
            s, r = offsets[-1], len(rois)
            if r > per_image:
                raise ValueError(f"{dataset.ann_file}: image {i} has {len(gt_boxes)} boxes, more than the "
                                 f"{most_gt} the box cache allocated for")
            if r:
                pooled = heads.box_roi_pool(features, [rois], sizes)
                feats[s:s + r] = pooled.numpy().astype(np.float16)
            labels.append(torch.cat([gt_labels, labs[0][keep]]).numpy().astype(np.int64))
            targets.append(np.concatenate([np.zeros((len(gt_boxes), 4), np.float32),
                                           regs[0][keep].numpy().astype(np.float32).reshape(-1, 4)]))
            offsets.append(s + r)
            if rows is not None:
                if has_mask_labels(every, i):
                    torch.set_rng_state(drawn)
                    rows.add(*sample)
                else:
                    rows.skip()
        feats.flush()
        del feats
        np.save(tmp / "labels.npy", np.concatenate(labels))
        np.save(tmp / "regression_targets.npy", np.concatenate(targets).reshape(-1, 4))
        np.save(tmp / "offsets.npy", np.asarray(offsets, np.int64))
        write_json_atomic({**meta, "rois": int(offsets[-1]), "build_seconds": round(time.perf_counter() - t0, 1)},
                          tmp / "meta.json")
        if rows is not None:
            rows.finish({**mask[1], "detector_sha256": None, "staged_from_sha256": meta["detector_sha256"]})
    return out_dir


class CachedBoxRoIs(torch.utils.data.Dataset):
    """Item i → (pooled features [R, C, 7, 7] float32, {"labels" [R], "regression_targets" [R, 4]}): image
    i's cached RoIs (``group=0``), or with ``group=G > 0`` the i-th group of G RoIs of one permutation of
    all cached RoIs (seeded by ``seed``), so a step of B items reads B x G RoIs of as many images rather
    than every RoI of B images (whose RoIs cover the same few objects). ``flippable = False``: flips
    happen in ``CachedBoxTraining`` (features, not images)."""

    flippable = False

    def __init__(self, cache_dir, group: int = 0, seed: int = 0):
        self.dir = Path(cache_dir)
        arrays, self.offsets = open_cache(self.dir, ARRAYS, "box cache")
        self.features = arrays["features"]
        self.labels, self.targets = np.asarray(arrays["labels"]), np.asarray(arrays["regression_targets"])
        self.group, self.order = group, None
        if group:
            rois = int(self.offsets[-1])
            self.order = torch.randperm(rois, generator=torch.Generator().manual_seed(seed)).numpy()
            self.order = self.order[:rois - rois % group].reshape(-1, group)  # the last partial group left out

    def __len__(self) -> int:
        return len(self.order) if self.group else len(self.offsets) - 1

    def __getitem__(self, i: int):
        if self.group:
            rows = np.sort(self.order[i])  # memmap reads in file order
        else:
            rows = slice(int(self.offsets[i]), int(self.offsets[i + 1]))
        return (torch.from_numpy(np.asarray(self.features[rows], np.float32)),
                {"labels": torch.from_numpy(self.labels[rows].copy()),
                 "regression_targets": torch.from_numpy(self.targets[rows].copy())})


def box_head_loss(class_logits: torch.Tensor, box_regression: torch.Tensor, labels: torch.Tensor,
                  regression_targets: torch.Tensor, background_weight: float = 1.0,
                  classify: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """torchvision's ``fastrcnn_loss`` with background RoIs weighed ``background_weight`` times in the
    classification loss: logits [R, K + 1], labels [R] (0: background), regression_targets [R, 4];
    box_regression [P, 4]: each positive RoI's (``labels > 0``, in order) regression for its own class
    (``own_class_regression``), the only rows the loss reads; ``classify`` [R] bool: the RoIs the
    classification loss reads (default all) → {"loss_classifier", "loss_box_reg"}."""
    weight = torch.ones(class_logits.shape[1], dtype=class_logits.dtype, device=class_logits.device)
    weight[0] = background_weight
    loss_cls = F.cross_entropy(class_logits, labels if classify is None else labels.where(classify, -1),
                               weight=weight, ignore_index=-1)
    pos = torch.where(labels > 0)[0]
    loss_box = F.smooth_l1_loss(box_regression, regression_targets[pos], beta=1 / 9, reduction="sum") / max(1, labels.numel())
    return {"loss_classifier": loss_cls, "loss_box_reg": loss_box}


def iou_from_targets(regression_targets: torch.Tensor, weights=(10.0, 10.0, 5.0, 5.0)) -> torch.Tensor:
    """IoU of each RoI with its matched ground-truth box, from the box coder's encoding [R, 4] of that box
    relative to the RoI (torchvision's ``BoxCoder`` with ``weights``) → [R]; 1 where the RoI is the box."""
    d = regression_targets / regression_targets.new_tensor(weights)
    w, h = d[:, 2].exp(), d[:, 3].exp()  # the box's size in RoI widths / heights; the RoI is [-0.5, 0.5]²
    ix = (torch.minimum(d[:, 0] + w / 2, d.new_tensor(0.5)) - torch.maximum(d[:, 0] - w / 2, d.new_tensor(-0.5))).clamp_min(0)
    iy = (torch.minimum(d[:, 1] + h / 2, d.new_tensor(0.5)) - torch.maximum(d[:, 1] - h / 2, d.new_tensor(-0.5))).clamp_min(0)
    inter = ix * iy
    return inter / (1 + w * h - inter)


def own_class_regression(bbox_pred: nn.Linear, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``bbox_pred(x)`` [R, (K + 1) * 4] read at each RoI's own class, [R, 4], computing those 4 outputs
    only (of 4 (K + 1): at K = 3000 the regressor is most of the box head's work, and training reads no other)."""
    # index_select, not w[labels]: labels repeat, and advanced indexing's backward accumulates the
    # repeats in a thread-dependent order on CPU (runs would differ in the last bits)
    w = torch.index_select(bbox_pred.weight.view(-1, 4, bbox_pred.in_features), 0, labels)  # [R, 4, D]
    b = torch.index_select(bbox_pred.bias.view(-1, 4), 0, labels)
    return torch.einsum("rd,rkd->rk", x, w) + b


class CachedBoxTraining(nn.Module):
    """``model``'s box head on cached RoIs: the module ``engine.train`` steps in a stage-``box`` run.

    forward(features per image [R_i, C, 7, 7], targets per image) → ``box_head_loss``. Each image's
    RoIs are mirrored with probability ``hflip`` (the global torch RNG, reseeded per step by
    ``engine.train``): features flipped left-right, the x offset of the regression target negated.
    """

    def __init__(self, model, hflip: float = 0.5, background_weight: float = 3.0, detach_regression: bool = False,
                 cls_iou: float = 0.5):
        super().__init__()
        self.model, self.hflip, self.background_weight = model, hflip, background_weight
        self.detach_regression = detach_regression  # the regressor's loss leaves the FCs alone
        self.cls_iou = cls_iou  # positives overlapping their ground truth less are not classified

    def forward(self, features: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        xs, labels, regs = [], [], []
        for f, t in zip(features, targets):
            r = t["regression_targets"]
            if self.training and float(torch.rand(())) < self.hflip:
                f = f.flip(-1)
                r = r * torch.tensor([-1.0, 1.0, 1.0, 1.0])
            xs.append(f)
            labels.append(t["labels"])
            regs.append(r)
        heads, labels, regs = self.model.roi_heads, torch.cat(labels), torch.cat(regs)
        h = heads.box_head(torch.cat(xs))
        pos = labels > 0
        boxes = own_class_regression(heads.box_predictor.bbox_pred, (h.detach() if self.detach_regression else h)[pos],
                                     labels[pos])
        iou = iou_from_targets(regs, heads.box_coder.weights)  # the coder that encoded the cached targets
        classify = ~pos | (iou >= self.cls_iou - 1e-6)  # float error: the boxes themselves count at 1
        return box_head_loss(heads.box_predictor.cls_score(h), boxes, labels, regs, self.background_weight, classify)


def cached_box_training(model, dataset, config, detector_dir, out_dir, progress: bool = True
                        ) -> tuple[CachedBoxTraining, CachedBoxRoIs]:
    """The module and dataset of a stage-``box`` run: the cache of ``detector_dir``'s detector on
    ``dataset`` under ``out_dir/box_cache`` (built first if missing or stale; with
    ``config.box_cache_mask_rois``, the mask RoI cache of ``out_dir``'s detector staged beside it in the
    same pass, ``roi_cache.adopt_roi_cache`` once the run is done)."""
    from functools import partial

    from .checkpoint import find_checkpoint
    from .roi_cache import cache_meta, roi_cache_dir, with_every_mask

    ckpt, _ = find_checkpoint(detector_dir)
    meta = box_cache_meta(ckpt, dataset, config)
    build = build_box_cache
    if config.box_cache_mask_rois:
        every_mask = with_every_mask(dataset)
        mask_meta = cache_meta({}, every_mask, config, config.box_cache_mask_rois)
        build = partial(build_box_cache, mask=(roi_cache_dir(out_dir), mask_meta, every_mask))
    cache = ensure_cache(model, dataset, Path(out_dir) / "box_cache", meta, build, progress)
    return (CachedBoxTraining(model, config.hflip, config.box_background_weight, config.box_detach_regression,
                              config.box_cls_iou),
            CachedBoxRoIs(cache, config.box_batch_rois, config.seed))
