"""Evaluate many stage-wise mask heads that share one frozen detector, running the detector once.

Stage-wise variants reuse one detector (paper §4.2: "the same Faster R-CNN detection model can
be reused for all experiments"), so their detections are identical and only the mask branch
differs. ``DetectionCache`` runs the backbone, RPN and box branch once per image and keeps the
detections and their pooled mask RoI features [N, 256, 14, 14]; ``predict_masks`` then runs only
a run's mask branch on them. The predictions equal the full model's (tests/study/test_detection_cache.py).
"""
from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import torch
from tqdm import tqdm

from maskx.data.coco import load_image
from maskx.predictor import Predictor, coco_entries

DETECTOR_PARTS = ("backbone.", "rpn.", "roi_heads.box_head.", "roi_heads.box_predictor.")


class CacheMismatch(ValueError):
    """The run's detector or inference settings differ from those the cache was built with."""


def detector_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the detector's parameters and buffers (backbone, RPN, box branch)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if name.startswith(DETECTOR_PARTS):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _inference_settings(model) -> tuple:
    rh = model.roi_heads
    return (rh.score_thresh, rh.nms_thresh, rh.detections_per_img, model.transform.min_size, model.transform.max_size,
            model.rpn._post_nms_top_n["testing"])


@dataclass
class CachedImage:
    image_id: int
    boxes: torch.Tensor  # [N, 4] in the resized image
    scores: torch.Tensor  # [N]
    labels: torch.Tensor  # [N]
    pooled: torch.Tensor  # [N, 256, 14, 14] mask RoI features
    image_size: tuple  # (h, w) after resizing
    original_size: tuple  # (h, w) of the image file


class DetectionCache:
    """The detections of ``model``'s detector on every image of ``dataset`` (a ``CocoDataset``)."""

    @torch.inference_mode()
    def __init__(self, model: torch.nn.Module, dataset, progress: bool = True):
        model.eval()
        self.fingerprint = detector_fingerprint(model)
        self.settings = _inference_settings(model)
        self.images: list[CachedImage] = []
        rh = model.roi_heads
        for i in tqdm(range(len(dataset)), desc="detect", disable=not progress, dynamic_ncols=True):
            image_id = dataset.ids[i]
            meta = dataset.images[image_id]
            image = load_image(dataset.image_path(i), image_id, (meta["height"], meta["width"]))
            batch, _ = model.transform([image])
            features = model.backbone(batch.tensors)
            proposals, _ = model.rpn(batch, features)
            box_features = rh.box_head(rh.box_roi_pool(features, proposals, batch.image_sizes))
            class_logits, box_regression = rh.box_predictor(box_features)
            boxes, scores, labels = rh.postprocess_detections(class_logits, box_regression, proposals, batch.image_sizes)
            pooled = rh.mask_roi_pool(features, boxes, batch.image_sizes)
            self.images.append(CachedImage(image_id, boxes[0], scores[0], labels[0], pooled, batch.image_sizes[0],
                                           tuple(image.shape[-2:])))

    def check(self, model: torch.nn.Module, source: str) -> None:
        if detector_fingerprint(model) != self.fingerprint:
            raise CacheMismatch(f"{source}: its detector weights differ from the cached detector's; "
                                "evaluate it with engine.evaluate_model instead")
        if _inference_settings(model) != self.settings:
            raise CacheMismatch(f"{source}: inference settings {_inference_settings(model)} differ from the "
                                f"cache's {self.settings} (score_thresh, nms, detections_per_img, image size, RPN proposals)")

    @torch.inference_mode()
    def predict_masks(self, predictor: Predictor, source: str = "model",
                      present: Optional[dict[int, set]] = None) -> list[dict]:
        """COCO results (boxes and masks) of ``predictor``'s model, its mask branch run on the cache.

        ``present`` (image id → the category ids with ground truth in that image), when given, skips
        the mask branch for detections of a class absent from their image: they get an empty mask.
        COCOeval matches a detection only to ground truth of its own class in its own image, so such a
        detection is a false positive whatever its mask: segm AP, AP50, AP75, AR and per-class AP (area
        'all') stay as computed with every mask (up to the mask head's float rounding for another batch
        size); APs, APm and APl do not (an unmatched detection's area range is its mask's area).
        """
        model = predictor.model.eval()
        self.check(model, source)
        preds = []
        for im in self.images:
            with (nullcontext() if present is None else
                  model.roi_heads.masks_only_for(predictor.labels_of(present.get(im.image_id, ())))):
                probs = model.roi_heads.mask_probs_from_pooled(im.pooled, im.labels)
            det = {"boxes": im.boxes, "labels": im.labels, "scores": im.scores, "masks": probs[:, None]}
            det = model.transform.postprocess([det], [im.image_size], [im.original_size])[0]
            preds.extend(coco_entries(predictor.instances(det), im.image_id))
        return preds

    @torch.inference_mode()
    def predict_boxes(self, model: torch.nn.Module, predictor: Predictor) -> list[dict]:
        """COCO results with boxes only (the detector's own AP)."""
        preds = []
        for im in self.images:
            det = {"boxes": im.boxes, "labels": im.labels, "scores": im.scores}
            det = model.transform.postprocess([det], [im.image_size], [im.original_size])[0]
            preds.extend(coco_entries(predictor.instances(det), im.image_id))
        return preds
