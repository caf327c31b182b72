"""Mask^X RoI heads: torchvision's box branch unchanged, a partially supervised mask branch.

What differs from ``torchvision.models.detection.roi_heads.RoIHeads`` (paper §3.2):
- the mask loss sees only positive RoIs matched to a ground-truth instance with ``has_mask``
  (set A); set-B RoIs never enter the mask head, so they cannot contribute to its loss;
- mask logits are computed for each RoI's own class only (``gather_mask_logits``);
- stage flags: ``train_boxes=False`` (stage 2 of stage-wise training: detector frozen, box branch
  skipped) and ``train_masks=False`` (stage 1: Faster R-CNN).

The loss, its targets and the RoI selection are free functions, as torchvision's ``maskrcnn_loss``,
so they can be read side by side with it.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch.nn import functional as F
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, project_masks_on_boxes
from torchvision.ops import boxes as box_ops

from .mask_heads import MaskFCN, MaskWeights, MLPMaskBranch, gather_mask_logits


def select_mask_rois(proposals: list[torch.Tensor], labels: list[torch.Tensor], matched_idxs: list[torch.Tensor],
                     has_mask: list[torch.Tensor], max_per_image: int = 0
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Positive RoIs whose matched ground truth has a mask (set A), at most ``max_per_image`` each.

    Args: per image, proposals [P, 4], sampled labels [P] (0 = background), matched_idxs [P]
        (index into that image's ground truth), has_mask [N] bool.
    Returns: per image, (boxes [R, 4], matched_idxs [R], labels [R]); the cap draws a random
        subset with the global torch RNG (saved in checkpoints, so resuming replays it).
    """
    boxes_out, idx_out, labels_out = [], [], []
    for props, lab, idx, hm in zip(proposals, labels, matched_idxs, has_mask):
        keep = cap_rois(torch.where((lab > 0) & hm[idx.clamp(min=0)])[0], max_per_image)
        boxes_out.append(props[keep])
        idx_out.append(idx[keep])
        labels_out.append(lab[keep])
    return boxes_out, idx_out, labels_out


def cap_rois(keep: torch.Tensor, max_per_image: int = 0) -> torch.Tensor:
    """At most ``max_per_image`` of the RoI indices ``keep`` [R]: a random subset drawn with the global
    torch RNG when there are more (0: no cap)."""
    if max_per_image and keep.numel() > max_per_image:
        keep = keep[torch.randperm(keep.numel(), device=keep.device)[:max_per_image]]
    return keep


def project_mask_targets(gt_masks: list[torch.Tensor], proposals: list[torch.Tensor],
                         mask_matched_idxs: list[torch.Tensor], size: int) -> torch.Tensor:
    """Each RoI's matched ground-truth mask cropped to the RoI and resized: per image gt_masks
    [N, H, W], proposals [R_i, 4], mask_matched_idxs [R_i] → targets [R, size, size] in 0..1."""
    targets = [project_masks_on_boxes(gm, p, i, size) for gm, p, i in zip(gt_masks, proposals, mask_matched_idxs)]
    return torch.cat(targets, dim=0) if targets else torch.zeros((0, size, size))


def maskx_loss(mask_logits: torch.Tensor, mask_targets: torch.Tensor) -> torch.Tensor:
    """The mask loss (paper §3.2, Mask R-CNN's): mean binary cross-entropy of each RoI's own-class
    logits [R, M, M] against its target [R, M, M] (``project_mask_targets``). Only set-A RoIs reach
    it (``select_mask_rois``). No RoI → a zero that keeps the graph (never NaN).

    Training on images (``MaskXRoIHeads``) and on cached RoIs (``maskx.roi_cache``) both call it.
    """
    if mask_targets.numel() == 0:
        return mask_logits.sum() * 0
    return F.binary_cross_entropy_with_logits(mask_logits, mask_targets.to(mask_logits))


class MaskXRoIHeads(RoIHeads):
    """RoIHeads with the Mask^X mask branch. ``mask_head`` is a ``MaskFCN``, ``mask_predictor`` a
    ``MaskWeights``; ``mask_mlp`` an optional ``MLPMaskBranch`` added to every class's logits."""

    def __init__(self, *args, mask_mlp: Optional[MLPMaskBranch] = None, mask_rois_per_image: int = 0,
                 train_boxes: bool = True, train_masks: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.mask_head, MaskFCN) or not isinstance(self.mask_predictor, MaskWeights):
            raise TypeError("MaskXRoIHeads needs mask_head=MaskFCN and mask_predictor=MaskWeights")
        self.mask_mlp = mask_mlp
        self.mask_rois_per_image = mask_rois_per_image
        self.train_boxes, self.train_masks = train_boxes, train_masks
        self._mask_only_labels: Optional[torch.Tensor] = None

    @contextmanager
    def masks_only_for(self, labels: torch.Tensor) -> Iterator[None]:
        """Inference inside computes masks only for detections whose label (contiguous index) is in
        ``labels`` [L]; the others get all-zero masks. For evaluation: a detection of a class with no
        ground truth in its image is a false positive whatever its mask, so segm AP/AP50/AP75 and
        per-class AP are unchanged (APs/m/l are not: an unmatched detection's area range is its mask's)."""
        self._mask_only_labels = torch.as_tensor(labels, dtype=torch.int64)
        try:
            yield
        finally:
            self._mask_only_labels = None

    def mask_probs_from_pooled(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pooled RoI features [R, 256, 14, 14] and labels [R] → own-class mask probabilities [R, 28, 28];
        inside ``masks_only_for``, rows of other labels are zeros and skip the mask branch."""
        if self._mask_only_labels is None:
            return self.mask_logits_from_pooled(x, labels).sigmoid()
        keep = torch.isin(labels, self._mask_only_labels.to(labels.device))
        probs = x.new_zeros(len(labels), 2 * x.shape[-2], 2 * x.shape[-1])  # the mask head upsamples 2x
        if keep.any():
            probs[keep] = self.mask_logits_from_pooled(x[keep], labels[keep]).sigmoid()
        return probs

    def mask_logits(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], labels: torch.Tensor,
                    image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        """Logits of each box for its class: boxes per image [R_i, 4], labels [R] → [R, 28, 28]."""
        return self.mask_logits_from_pooled(self.mask_roi_pool(features, boxes, image_shapes), labels)

    def mask_logits_from_pooled(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pooled RoI features [R, 256, 14, 14] and labels [R] → own-class logits [R, 28, 28]
        (the study evaluates many mask heads on one frozen detector's pooled features)."""
        feats, conv_feats = self.mask_head(x)  # [R, dim, 28, 28], [R, dim, 14, 14]
        w, b = self.mask_predictor(labels, self.box_predictor)  # [R, dim], [R]
        logits = gather_mask_logits(feats, w, b)
        if self.mask_mlp is not None:
            logits = logits + self.mask_mlp(conv_feats)
        return logits

    def forward(self, features, proposals, image_shapes, targets=None):
        """Training: (empty list, losses). Inference: (detections with ``masks`` [N, 1, 28, 28], {})."""
        if not self.training:
            return self._inference(features, proposals, image_shapes)
        if targets is None:
            raise ValueError("targets are required in training mode")
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        losses = {}
        if self.train_boxes:
            box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
            class_logits, box_regression = self.box_predictor(box_features)
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            losses.update(loss_classifier=loss_classifier, loss_box_reg=loss_box_reg)
        if self.train_masks:
            has_mask = [t["has_mask"] for t in targets]
            boxes, idxs, mask_labels = select_mask_rois(proposals, labels, matched_idxs, has_mask,
                                                        self.mask_rois_per_image)
            logits = self.mask_logits(features, boxes, torch.cat(mask_labels), image_shapes)
            goal = project_mask_targets([t["masks"] for t in targets], boxes, idxs, logits.shape[-1])
            losses["loss_mask"] = maskx_loss(logits, goal)
        return [], losses

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):
        """torchvision's ``postprocess_detections`` with the same output, but boxes are decoded only for
        the (RoI, class) pairs scoring above ``score_thresh``, not for all R x K: with 3001 classes
        softmax scores are mostly tiny and decoding every pair costs about a sixth of a prediction.
        class_logits [R, K], box_regression [R, 4K], proposals per image [R_i, 4] → per image
        boxes [N_i, 4], scores [N_i], labels [N_i]."""
        per_image = [len(p) for p in proposals]
        num_classes = class_logits.shape[-1]
        out_boxes, out_scores, out_labels = [], [], []
        for scores, codes, props, image_shape in zip(F.softmax(class_logits, -1).split(per_image),
                                                    box_regression.split(per_image), proposals, image_shapes):
            # flat index over [R_i, K - 1] in torchvision's order (row-major, background dropped)
            inds = torch.where(scores[:, 1:].reshape(-1) > self.score_thresh)[0]
            roi, labels = inds // (num_classes - 1), inds % (num_classes - 1) + 1
            boxes = self.box_coder.decode_single(codes.view(len(props), num_classes, 4)[roi, labels], props[roi])
            boxes = box_ops.clip_boxes_to_image(boxes, image_shape)
            scores = scores[roi, labels]
            keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            out_boxes.append(boxes[keep])
            out_scores.append(scores[keep])
            out_labels.append(labels[keep])
        return out_boxes, out_scores, out_labels

    def _inference(self, features, proposals, image_shapes):
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        result = [{"boxes": b, "labels": l, "scores": s} for b, l, s in zip(boxes, labels, scores)]
        if self.train_masks:
            pooled = self.mask_roi_pool(features, boxes, image_shapes)
            probs = self.mask_probs_from_pooled(pooled, torch.cat(labels))[:, None].split([len(l) for l in labels])
            for r, p in zip(result, probs):
                r["masks"] = p
        return result, {}
