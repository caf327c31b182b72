"""Mask^X R-CNN: torchvision's GeneralizedRCNN(backbone, rpn, roi_heads, transform) with
``MaskXRoIHeads``; ``build_model(config, class_names)`` wires it from a ``Config``.
"""
from __future__ import annotations

from functools import partial
from typing import Optional

import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from ..config import Config
from .mask_heads import MaskFCN, MaskWeights, MLPMaskBranch
from ..ops.roi_align import SparseMultiScaleRoIAlign
from .roi_heads import MaskXRoIHeads
from ..ops.rpn import ThreadedRPN
from .transfer import WeightTransfer
from .trunk_box_head import TrunkBoxHead, TrunkRoIPool

# ImageNet statistics, as torchvision's detection models normalise
IMAGE_MEAN, IMAGE_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class TargetError(ValueError):
    """A training target that the model cannot use; the message names the image and field."""


def check_targets(targets: list[dict], num_classes: int) -> None:
    """Explicit checks before training (torchvision checks fewer, later, with asserts)."""
    for k, t in enumerate(targets):
        where = f"target {k} (image id {t.get('image_id', '?')})"
        for key in ("boxes", "labels", "masks", "has_mask"):
            if key not in t:
                raise TargetError(f"{where}: missing '{key}'")
        boxes, labels, masks, has_mask = t["boxes"], t["labels"], t["masks"], t["has_mask"]
        n = boxes.shape[0]
        if boxes.dim() != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
            raise TargetError(f"{where}: boxes must be float [N, 4], got {tuple(boxes.shape)} {boxes.dtype}")
        if labels.dtype != torch.int64 or labels.shape != (n,):
            raise TargetError(f"{where}: labels must be int64 [N], got {tuple(labels.shape)} {labels.dtype}")
        if has_mask.dtype != torch.bool or has_mask.shape != (n,):
            raise TargetError(f"{where}: has_mask must be bool [N]")
        if masks.dim() != 3 or masks.shape[0] != n:
            raise TargetError(f"{where}: masks must be [N, H, W] with N = {n}, got {tuple(masks.shape)}")
        if n and (labels.min() < 1 or labels.max() >= num_classes):
            raise TargetError(f"{where}: labels must be in 1..{num_classes - 1} (0 is background)")
        if n and not torch.isfinite(boxes).all():
            raise TargetError(f"{where}: non-finite box coordinates")
        if n and ((boxes[:, 2:] <= boxes[:, :2]).any()):
            bad = torch.where((boxes[:, 2:] <= boxes[:, :2]).any(dim=1))[0][0].item()
            raise TargetError(f"{where}: box {bad} {boxes[bad].tolist()} has no area (x1 <= x0 or y1 <= y0)")


class MaskXRCNN(GeneralizedRCNN):
    """GeneralizedRCNN whose detector (backbone, RPN, box branch) can be frozen (stage-wise stage 2).

    ``forward(images [list of [3, H, W] in 0..1], targets)`` → losses (training) or detections
    (``boxes`` [N, 4], ``labels`` [N], ``scores`` [N], ``masks`` [N, 1, H, W] probabilities).
    """

    def __init__(self, backbone, rpn, roi_heads, transform, num_classes: int, frozen_detector: bool = False):
        super().__init__(backbone, rpn, roi_heads, transform)
        self.num_classes = num_classes
        self.frozen_detector = frozen_detector
        if frozen_detector:
            for module in (self.backbone, self.rpn, self.roi_heads.box_head, self.roi_heads.box_predictor):
                module.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_detector:  # frozen parts keep inference behaviour (norm statistics)
            self.backbone.eval()
        return self

    def forward(self, images, targets=None):
        if self.training:
            if targets is None:
                raise TargetError("training needs targets")
            check_targets(targets, self.num_classes)
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        images, targets = self.transform(images, targets)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_detector):
            features = self.backbone(images.tensors)
            proposals, proposal_losses = self.rpn(images, features, targets)
        detections, losses = self.roi_heads(features, proposals, images.image_sizes, targets)
        if self.training:
            if not self.frozen_detector:
                losses.update(proposal_losses)
            return losses
        return self.transform.postprocess(detections, images.image_sizes, original_sizes)


def fixed_embedding(config: Config, class_names: list[str]) -> torch.Tensor:
    """The fixed input of T for transfer_input randn/glove/text: [K+1, D], row 0 (background) zero;
    class rows scaled to L2 norm ``config.embedding_norm`` (0: left as the source gives them)."""
    from .embeddings import class_embeddings

    emb = class_embeddings(config.transfer_input, list(class_names), seed=config.seed)
    if config.embedding_norm > 0:
        norms = emb.norm(dim=1, keepdim=True)
        emb = torch.where(norms > 0, emb * (config.embedding_norm / norms.clamp_min(1e-12)), emb)
    return torch.cat([emb.new_zeros(1, emb.shape[1]), emb])


def build_model(config: Config, class_names: list[str], embedding: Optional[torch.Tensor] = None,
                backbone: Optional[nn.Module] = None, pretrained: Optional[bool] = None) -> MaskXRCNN:
    """Mask^X R-CNN for ``class_names`` (K classes; label 0 is background, so K + 1 outputs).

    ``embedding`` [K+1, D]: the fixed input of T for randn/glove/text (computed when None).
    ``pretrained`` overrides ``config.pretrained_backbone`` (False when weights follow anyway).
    """
    from .backbones import LITE_MEAN, LITE_STD, anchor_generator_for, build_backbone, feature_map_names

    num_classes = len(class_names) + 1
    if backbone is None:
        use_pretrained = config.pretrained_backbone if pretrained is None else pretrained
        norm = None
        imagenet_init = config.pretrained_backbone is not False and config.backbone == "efficientnet_lite0"
        if imagenet_init:
            norm = "frozen_bn"  # the architecture of the trained model, whether or not weights load now
        backbone = build_backbone(config.backbone, trainable_layers=config.trainable_layers, pretrained=use_pretrained,
                                  norm=norm, out_channels=config.fpn_dim, trunk_maps=config.box_features == "trunk")
        if imagenet_init:  # and the input normalisation its weights were trained with, loaded now or not
            backbone.image_mean, backbone.image_std = list(LITE_MEAN), list(LITE_STD)
    if config.box_features == "trunk" and not getattr(backbone, "trunk_maps", False):
        raise ValueError("box_features='trunk' needs a backbone built with trunk_maps=True")
    names = [n for n in feature_map_names(backbone) if n != "pool"]  # RoIAlign levels: not the extra 'pool'
    c = backbone.out_channels
    anchors = anchor_generator_for(backbone)
    rpn = ThreadedRPN(  # torchvision's, with a batch's per-image NMS on threads (same proposals)
        anchors, RPNHead(c, anchors.num_anchors_per_location()[0]), fg_iou_thresh=0.7, bg_iou_thresh=0.3,
        batch_size_per_image=256, positive_fraction=0.5, pre_nms_top_n={"training": 2000, "testing": 1000},
        post_nms_top_n={"training": 2000, "testing": config.rpn_test_proposals}, nms_thresh=0.7)
    rpn.featmap_names = feature_map_names(backbone)  # the FPN's maps, 'pool' included

    if config.mask_head == "transfer":
        if config.has_fixed_embedding:
            if embedding is None:
                embedding = fixed_embedding(config, class_names)
            in_dim = embedding.shape[1]
        else:
            in_dim = {"cls": 1, "box": 4, "cls+box": 5}[config.transfer_input] * config.box_head_dim
        transfer = WeightTransfer(in_dim, config.mask_dim, config.transfer_layers, config.transfer_hidden,
                                  config.transfer_activation, config.transfer_init)
    else:
        transfer, embedding = None, None
    # same output as torchvision's pooler; "sparse" replaces its single-threaded CPU backward (and forward)
    if config.roi_align_forward == "sparse":
        pool = partial(SparseMultiScaleRoIAlign, sparse_forward=True)
    else:
        pool = SparseMultiScaleRoIAlign if config.roi_align_backward == "sparse" else MultiScaleRoIAlign
    if config.box_features == "trunk":  # every RoI from the trunk's stride 8/16/32 stages (trunk_box_head.py)
        box_pool = TrunkRoIPool(backbone.TRUNK_MAPS, backbone.TRUNK_STRIDES, backbone.TRUNK_CHANNELS, output_size=7,
                                sampling_ratio=2)
        box_head = TrunkBoxHead(backbone.TRUNK_CHANNELS, config.box_head_dim)
    else:
        box_pool, box_head = pool(names, output_size=7, sampling_ratio=2), TwoMLPHead(c * 7 * 7, config.box_head_dim)
    roi_heads = MaskXRoIHeads(
        box_roi_pool=box_pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(config.box_head_dim, num_classes),
        fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=config.rois_per_image, positive_fraction=0.25,
        bbox_reg_weights=None, score_thresh=config.score_thresh, nms_thresh=0.5,
        detections_per_img=config.detections_per_img,
        mask_roi_pool=pool(names, output_size=14, sampling_ratio=2),
        mask_head=MaskFCN(c, config.mask_dim, config.mask_convs),
        mask_predictor=MaskWeights(config.mask_head, num_classes, config.mask_dim, config.transfer_input,
                                   transfer, embedding, config.stop_grad),
        mask_mlp=MLPMaskBranch(config.mask_dim, hidden=config.mlp_hidden) if config.mlp_branch else None,
        mask_rois_per_image=config.mask_rois_per_image,
        train_masks=config.stage != "detector",
        train_boxes=config.stage != "mask",
    )
    transform = GeneralizedRCNNTransform(config.image_size, config.max_image_size or config.image_size,
                                         getattr(backbone, "image_mean", IMAGE_MEAN), getattr(backbone, "image_std", IMAGE_STD))
    return MaskXRCNN(backbone, rpn, roi_heads, transform, num_classes, frozen_detector=config.stage == "mask")
