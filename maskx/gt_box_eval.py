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
from dataclasses import dataclass
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


@dataclass
class GtBoxInput:
    """One val image's instances with a mask, as the mask branch sees them."""
    pooled: torch.Tensor  # [N, 256, 14, 14] mask RoI features of the ground-truth boxes
    labels: torch.Tensor  # [N] contiguous class labels
    boxes: torch.Tensor  # [N, 4] in image pixels
    gt: torch.Tensor  # [N, H, W] bool ground-truth masks
    category_ids: list  # [N]
    image_index: int = -1  # the image's index in its dataset


@torch.inference_mode()
def gt_box_inputs(model, dataset, images: Optional[int] = None, progress: bool = False) -> list[GtBoxInput]:
    """``model``'s mask RoI features of every ground-truth instance with a mask on ``dataset``'s first
    ``images`` images. Stage-wise runs of one frozen detector share them (``Study.evaluate``): their
    mask branches differ, the features do not."""
    model = model.eval()
    n = len(dataset) if images is None else min(images, len(dataset))
    out = []
    for i in tqdm(range(n), desc="masks on GT boxes", disable=not progress, dynamic_ncols=True):
        image, t = dataset[i]
        keep = t["has_mask"]
        if not bool(keep.any()):
            continue
        boxes, labels = t["boxes"][keep], t["labels"][keep]
        features, rois, sizes = gt_box_features(model, image, boxes)
        out.append(GtBoxInput(model.roi_heads.mask_roi_pool(features, rois, sizes), labels, boxes,
                              t["masks"][keep].bool(), [dataset.categories.category_id(int(c)) for c in labels], i))
    return out


@torch.inference_mode()
def instance_ious(model, inputs: list[GtBoxInput]) -> list[tuple[int, float, float]]:
    """(category id, IoU of ``model``'s mask, IoU of the 28 x 28 ceiling) of each instance of ``inputs``."""
    model, rows = model.eval(), []
    for x in inputs:
        h, w = x.gt.shape[-2:]
        logits = model.roi_heads.mask_logits_from_pooled(x.pooled, x.labels)
        best = project_masks_on_boxes(x.gt.to(torch.uint8), x.boxes, torch.arange(len(x.gt)), logits.shape[-1])
        pred = paste_masks_in_image(logits.sigmoid()[:, None], x.boxes, (h, w))[:, 0] >= 0.5
        ceil = paste_masks_in_image(best[:, None], x.boxes, (h, w))[:, 0] >= 0.5
        rows += [(cid, _iou(pred[k], x.gt[k]), _iou(ceil[k], x.gt[k])) for k, cid in enumerate(x.category_ids)]
    return rows


@torch.inference_mode()
def instance_masks(model, inputs: list[GtBoxInput], images: int) -> list[dict]:
    """``model``'s masks of every instance of ``inputs`` on the dataset's first ``images`` images, small
    enough to keep beside a result (what a mask grid draws): ``{"image": dataset index, "category_id",
    "box": [x0, y0, x1, y1] image pixels, "iou": with the ground truth, "mask": ``encode_mask`` of the
    [M, M] mask thresholded at 0.5}``, M the mask branch's output size (28)."""
    model, out = model.eval(), []
    for x in inputs:
        if not 0 <= x.image_index < images:
            continue
        h, w = x.gt.shape[-2:]
        prob = model.roi_heads.mask_logits_from_pooled(x.pooled, x.labels).sigmoid()
        pasted = paste_masks_in_image(prob[:, None], x.boxes, (h, w))[:, 0] >= 0.5
        for k, cid in enumerate(x.category_ids):
            out.append({"image": x.image_index, "category_id": int(cid),
                        "box": [round(float(v), 1) for v in x.boxes[k]], "iou": round(_iou(pasted[k], x.gt[k]), 4),
                        "mask": encode_mask(prob[k] >= 0.5)})
    return out


@torch.inference_mode()
def masks_on_boxes(predictor, image, boxes, labels) -> torch.Tensor:
    """``predictor``'s mask probabilities for given boxes and classes of one image (detection taken
    out: the mask branch is given each box and its class, as ``instance_ious`` does for a dataset).

    ``image``: what ``Predictor.predict`` takes; ``boxes`` [N, 4] xyxy image pixels; ``labels`` [N]
    contiguous class labels (1-based, as ``Predictor.labels_of``). Returns float [N, H, W] in 0..1,
    pasted into the image (threshold at ``predictor.mask_threshold`` for its masks)."""
    from .predictor import to_image_tensor

    model = predictor.model.eval()
    device = next(model.parameters()).device
    x = to_image_tensor(image).to(device)
    boxes = torch.as_tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 4)
    labels = torch.as_tensor(labels, dtype=torch.int64, device=device).reshape(-1)
    if len(boxes) == 0:
        return torch.zeros((0, *x.shape[-2:]))
    features, rois, sizes = gt_box_features(model, x, boxes.cpu())
    pooled = model.roi_heads.mask_roi_pool(features, [r.to(device) for r in rois], sizes)
    prob = model.roi_heads.mask_logits_from_pooled(pooled, labels).sigmoid()
    return paste_masks_in_image(prob[:, None], boxes, tuple(x.shape[-2:]))[:, 0].cpu()


def encode_mask(mask: torch.Tensor) -> str:
    """A square bool mask [M, M] as base64 of its packed bits (M * M / 8 bytes)."""
    import base64

    import numpy as np

    return base64.b64encode(np.packbits(mask.cpu().numpy().astype(bool).ravel()).tobytes()).decode("ascii")


def decode_mask(text: str, size: int = 28):
    """``encode_mask``'s inverse: a bool numpy array [size, size]."""
    import base64

    import numpy as np

    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))[:size * size]
    if bits.size != size * size:
        raise ValueError(f"an encoded {size} x {size} mask needs {size * size} bits, got {bits.size}")
    return bits.reshape(size, size).astype(bool)


def summarize(rows: list[tuple[int, float, float]], split) -> dict:
    """``instance_ious`` rows → ``{"A": {"mean_iou", "ceiling", "instances"}, "B": ..., "per_class": {id: mean IoU}}``."""
    ious: dict[str, list[float]] = {"A": [], "B": []}
    ceilings: dict[str, list[float]] = {"A": [], "B": []}
    per_class: dict[int, list[float]] = {}
    for cid, iou, ceil in rows:
        s = split.set_of(cid)
        ious[s].append(iou)
        ceilings[s].append(ceil)
        per_class.setdefault(cid, []).append(iou)
    out = {s: {"mean_iou": _mean(ious[s]), "ceiling": _mean(ceilings[s]), "instances": len(ious[s])} for s in ("A", "B")}
    out["per_class"] = {c: _mean(v) for c, v in sorted(per_class.items())}
    return out


def mask_iou_on_gt_boxes(predictor, dataset, split, images: Optional[int] = None, progress: bool = False) -> dict:
    """Mean mask IoU of ``predictor``'s masks on ``dataset``'s GT boxes and classes, per set of ``split``.

    ``dataset``: a ``CocoDataset`` with masks for the evaluated instances (a val split); instances
    without a mask are skipped. Returns ``{"A": {"mean_iou", "ceiling", "instances"}, "B": ...,
    "per_class": {category id: mean IoU}, "images": n}``.
    """
    check_classes(predictor.meta, list(dataset.categories.names), list(dataset.categories.ids),
                  "mask IoU on ground-truth boxes")
    n = len(dataset) if images is None else min(images, len(dataset))
    rows = instance_ious(predictor.model, gt_box_inputs(predictor.model, dataset, n, progress))
    return {**summarize(rows, split), "images": n}


@torch.inference_mode()
def naming_on_gt_boxes(predictor, dataset, split, images: Optional[int] = None, topk: int = 5,
                       progress: bool = False, train_counts: Optional[dict] = None) -> dict:
    """How often the box head names a ground-truth object exactly, detection taken out: every
    ground-truth box of ``dataset``'s first ``images`` images goes through the box head (its 7 x 7
    RoI features, ``box_head``, ``box_predictor``), background left out, and the true class is
    looked for among the ``topk`` highest scores. Returns ``{"A": {"top1", "top5", "instances"},
    "B": ..., "images": n}`` (shares in percent; ``top{topk}`` for another ``topk``).
    ``train_counts`` ({category id: training instances}): also ``"by_frequency"``, the same per set and
    LVIS frequency group of the object's class (``evaluate.FREQUENCY_BINS``; "unseen": no training
    instance), ``{"A" | "B": {group: {"top1", "top5", "instances"}}}``."""
    from .evaluate import FREQUENCY_BINS

    check_classes(predictor.meta, list(dataset.categories.names), list(dataset.categories.ids),
                  "naming on ground-truth boxes")
    model = predictor.model.eval()
    rh = model.roi_heads
    n = len(dataset) if images is None else min(images, len(dataset))

    def group(category_id: int) -> str:
        count = train_counts.get(category_id, 0)
        return next((g for g, lo, hi in FREQUENCY_BINS if lo <= count and (hi is None or count <= hi)), "unseen")

    hits: dict = {}  # (set, group or None) -> [top-1, top-k, instances]
    for i in tqdm(range(n), desc="naming on GT boxes", disable=not progress, dynamic_ncols=True):
        image, t = dataset[i]
        if len(t["boxes"]) == 0:
            continue
        logits, _ = rh.box_predictor(rh.box_head(rh.box_roi_pool(*gt_box_features(model, image, t["boxes"]))))
        logits[:, 0] = -float("inf")
        top = logits.topk(min(topk, logits.shape[1] - 1), dim=1).indices
        for label, row in zip(t["labels"].tolist(), top.tolist()):
            cid = dataset.categories.category_id(label)
            where = split.set_of(cid)
            for key in [(where, None)] + ([(where, group(cid))] if train_counts is not None else []):
                h = hits.setdefault(key, [0, 0, 0])
                h[0] += row[0] == label
                h[1] += label in row
                h[2] += 1

    def shares(h) -> dict:
        return {"top1": round(100 * h[0] / h[2], 2) if h[2] else None,
                f"top{topk}": round(100 * h[1] / h[2], 2) if h[2] else None, "instances": h[2]}

    out = {**{s: shares(hits.get((s, None), [0, 0, 0])) for s in ("A", "B")}, "images": n}
    if train_counts is not None:
        groups = [g for g, _, _ in FREQUENCY_BINS] + ["unseen"]
        out["by_frequency"] = {s: {g: shares(hits.get((s, g), [0, 0, 0])) for g in groups} for s in ("A", "B")}
    return out


def masks_on_gt_boxes(predictor, val, splits: dict, images: int, inputs: Optional[list[GtBoxInput]] = None) -> dict:
    """The study's summary of mask IoU on ground-truth boxes (detection taken out: the mask branch
    given each ground-truth box and class) on the first ``images`` val images, for each split of
    ``splits`` ({name: split}): per set, the mean IoU, the 28 x 28 ceiling and the instance count.
    ``inputs``: ``gt_box_inputs`` of these images computed before (by the same frozen detector)."""
    check_classes(predictor.meta, list(val.categories.names), list(val.categories.ids),
                  "mask IoU on ground-truth boxes")
    rows = instance_ious(predictor.model, inputs if inputs is not None else gt_box_inputs(predictor.model, val, images))
    out = {}
    for name, split in splits.items():
        r = summarize(rows, split)
        out[name] = {s: {k: r[s][k] for k in ("mean_iou", "ceiling", "instances")} for s in ("A", "B")}
    return out


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0


def _mean(values: list[float]) -> Optional[float]:
    return round(statistics.fmean(values), 4) if values else None
