"""Mask quality with detection taken out: a model's masks on the ground-truth boxes and classes.

Mask AP on set B mixes two things: finding and naming the object (the detector) and drawing its
mask (what weight transfer changes). With 3000 fine-grained classes the first dominates, so AP
on B says little about the masks. Here every ground-truth instance is given to the mask branch
with its true box and class, and the predicted mask (28 x 28, pasted into the image, threshold
0.5) is compared with the ground truth: mean IoU per set. The ceiling is the same measure for
the ground-truth mask itself squeezed through the 28 x 28 grid.
"""
from __future__ import annotations

import statistics
from typing import Optional

import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image, project_masks_on_boxes
from tqdm import tqdm

from .checkpoint import check_classes


def gt_box_features(model, image: torch.Tensor, boxes: torch.Tensor) -> tuple[dict, list, list]:
    """``model``'s features of ``image`` [3, H, W] and ``boxes`` [N, 4] (image pixels) moved into the
    resized image the RoI heads see: (FPN features, [boxes [N, 4]], image_sizes)."""
    h, w = image.shape[-2:]
    batch, _ = model.transform([image])
    (rh, rw), = batch.image_sizes
    scaled = boxes * torch.tensor([rw / w, rh / h, rw / w, rh / h])
    return model.backbone(batch.tensors), [scaled], batch.image_sizes


@torch.inference_mode()
def mask_iou_on_gt_boxes(predictor, dataset, split, images: Optional[int] = None, progress: bool = False) -> dict:
    """Mean mask IoU of ``predictor``'s masks on ``dataset``'s GT boxes and classes, per set of ``split``.

    ``dataset``: a ``CocoDataset`` with masks for the evaluated instances (a val split); instances
    without a mask are skipped. Returns ``{"A": {"mean_iou", "ceiling", "instances"}, "B": ...,
    "per_class": {category id: mean IoU}, "images": n}``.
    """
    check_classes(predictor.meta, list(dataset.categories.names), list(dataset.categories.ids),
                  "mask IoU on ground-truth boxes")
    model = predictor.model.eval()
    n = len(dataset) if images is None else min(images, len(dataset))
    ious: dict[str, list[float]] = {"A": [], "B": []}
    ceilings: dict[str, list[float]] = {"A": [], "B": []}
    per_class: dict[int, list[float]] = {}
    for i in tqdm(range(n), desc="masks on GT boxes", disable=not progress, dynamic_ncols=True):
        image, t = dataset[i]
        keep = t["has_mask"]
        if not bool(keep.any()):
            continue
        boxes, labels, gt = t["boxes"][keep], t["labels"][keep], t["masks"][keep].bool()
        h, w = image.shape[-2:]
        features, rois, sizes = gt_box_features(model, image, boxes)
        logits = model.roi_heads.mask_logits(features, rois, labels, sizes)
        best = project_masks_on_boxes(gt.to(torch.uint8), boxes, torch.arange(len(gt)), logits.shape[-1])
        pred = paste_masks_in_image(logits.sigmoid()[:, None], boxes, (h, w))[:, 0] >= 0.5
        ceil = paste_masks_in_image(best[:, None], boxes, (h, w))[:, 0] >= 0.5
        for k, label in enumerate(labels.tolist()):
            cid = dataset.categories.category_id(label)
            s = split.set_of(cid)
            iou = _iou(pred[k], gt[k])
            ious[s].append(iou)
            ceilings[s].append(_iou(ceil[k], gt[k]))
            per_class.setdefault(cid, []).append(iou)
    out = {s: {"mean_iou": _mean(ious[s]), "ceiling": _mean(ceilings[s]), "instances": len(ious[s])} for s in ("A", "B")}
    out["per_class"] = {c: _mean(v) for c, v in sorted(per_class.items())}
    out["images"] = n
    return out


def masks_on_gt_boxes(predictor, val, split, images: int) -> dict:
    """The study's summary of ``mask_iou_on_gt_boxes`` (detection taken out: the mask branch given
    each ground-truth box and class) on the first ``images`` val images: per set, the mean IoU, the
    28 x 28 ceiling and the instance count."""
    r = mask_iou_on_gt_boxes(predictor, val, split, images=images)
    return {s: {k: r[s][k] for k in ("mean_iou", "ceiling", "instances")} for s in ("A", "B")}


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0


def _mean(values: list[float]) -> Optional[float]:
    return round(statistics.fmean(values), 4) if values else None
