"""``maskx.load(RUN)`` → a ``Predictor`` that owns image loading, thresholds and output formats.

    predictor = maskx.load("runs/maskx")          # a run folder or a ckpt_*.json
    instances = predictor.predict("photo.jpg")    # list of Instance (box, score, class, mask, in_A)
    coco = predictor.predict_coco(image, image_id=7)  # COCO results entries (RLE masks)
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import torch
from PIL import Image

from .checkpoint import CheckpointError, find_checkpoint, load_model_state, model_state
from .config import Config, ConfigError
from .data.coco import load_image
from .instances import Instance, coco_entries  # noqa: F401 (re-exported: maskx.predictor.Instance)

ImageLike = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]


def to_image_tensor(image: ImageLike) -> torch.Tensor:
    """Path, PIL image, uint8 array [H, W(, C)] or float tensor [3, H, W] → float [3, H, W] in 0..1 (RGB)."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"an image tensor must be [3, H, W], got {tuple(image.shape)}")
        return image.float()
    if isinstance(image, (str, Path)):
        return load_image(Path(image))  # DatasetError (a ValueError) names the file
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"an image array must be [H, W], [H, W, 3] or [H, W, 4], got {arr.shape}")
    return torch.from_numpy(np.array(arr[..., :3], copy=True)).permute(2, 0, 1).float().div_(255.0)


class Predictor:
    """A trained model in eval mode with its class list and set A; ``maskx.load`` makes one."""

    def __init__(self, model: torch.nn.Module, meta: dict, mask_threshold: float = 0.5,
                 config: Optional[Config] = None):
        self.model = model.eval()
        self.meta = meta
        self._config = config  # the config the model was built with (the checkpoint's when None)
        self.class_names: list[str] = list(meta["class_names"])
        self.category_ids: list[int] = list(meta["category_ids"])
        self.set_a = set(meta["set_A"])
        self.mask_threshold = mask_threshold

    @property
    def config(self) -> Config:
        """As built: the checkpoint's config with ``load``'s inference settings and RoIAlign forward."""
        return self._config if self._config is not None else Config.from_json(self.meta["config"])

    def labels_of(self, category_ids: Iterable[int]) -> torch.Tensor:
        """The model's contiguous labels [L] (1-based, sorted) of those of ``category_ids`` it knows."""
        ids = set(category_ids)
        return torch.tensor([k + 1 for k, c in enumerate(self.category_ids) if c in ids], dtype=torch.int64)

    @torch.inference_mode()
    def predict_raw(self, image: ImageLike) -> dict[str, torch.Tensor]:
        """torchvision-style detections: boxes [N, 4], labels [N], scores [N], masks [N, 1, H, W] (probabilities)."""
        device = next(self.model.parameters()).device
        det = self.model([to_image_tensor(image).to(device)])[0]
        return {k: v.cpu() for k, v in det.items()}

    def predict(self, image: ImageLike, score_thresh: float = 0.0) -> list[Instance]:
        """Instances of one image scoring at least ``score_thresh``, masks bool [H, W] at the input's size
        (probability >= ``mask_threshold``)."""
        return self.instances(self.predict_raw(image), score_thresh)

    def instances(self, det: dict[str, torch.Tensor], score_thresh: float = 0.0) -> list[Instance]:
        """torchvision-style detections of one image (as ``predict_raw`` returns) → instances."""
        masks = det.get("masks")
        out = []
        for k in range(det["boxes"].shape[0]):
            score = float(det["scores"][k])
            if score < score_thresh:
                continue
            label = int(det["labels"][k])
            cid = self.category_ids[label - 1]
            out.append(Instance(box=[float(v) for v in det["boxes"][k]], score=score, label=label, category_id=cid,
                                class_name=self.class_names[label - 1], in_A=cid in self.set_a,
                                mask=None if masks is None else (masks[k, 0] >= self.mask_threshold).numpy()))
        return out

    def predict_coco(self, image: ImageLike, image_id: int, score_thresh: float = 0.0) -> list[dict]:
        """COCO results entries (real category ids, xywh boxes, RLE masks) for one image."""
        return coco_entries(self.predict(image, score_thresh), image_id)


def load(path, class_names: Optional[list[str]] = None, device: str = "cpu",
         inference: Optional[Config] = None, roi_align_forward: Optional[str] = None) -> Predictor:
    """Load a trained model from a run folder (its newest valid checkpoint), a ``ckpt_*.json``, or the
    name of a shipped model (``"maskx-3k"``: the 3000-class model; ``maskx.hub`` says where it is looked for).

    ``class_names``, if given, must equal the checkpoint's (a clear error otherwise). ``inference``,
    if given, supplies the test-time settings (``config.INFERENCE_FIELDS``) instead of the checkpoint's.
    ``roi_align_forward="sparse"`` pools RoIs with one sparse product (faster on CPU, equal to
    torchvision's RoIAlign up to float rounding; the checkpoint's setting when None).
    """
    from .hub import resolve
    from .models.maskx_rcnn import build_model

    path = resolve(path)
    meta, tensors = find_checkpoint(path)
    try:
        config = Config.from_json(meta["config"])
        if inference is not None:
            config = config.with_inference_of(inference)
        names = meta["class_names"]
    except (KeyError, ConfigError) as e:
        raise CheckpointError(f"{path}: checkpoint metadata is incomplete or from another version ({e})") from None
    if roi_align_forward is not None:  # a bad value is the caller's: ConfigError names the choices
        config = config.replace(roi_align_forward=roi_align_forward)
    if class_names is not None and list(class_names) != list(names):
        raise CheckpointError(f"{path}: checkpoint has {len(names)} classes, {len(class_names)} were asked for "
                              "(class lists differ)")
    # a fixed embedding (randn/GloVe/text) is a buffer of the checkpoint: no need to recompute it
    model = build_model(config, names, embedding=tensors.get("model.roi_heads.mask_predictor.embedding"),
                        pretrained=False)
    load_model_state(model, model_state(tensors), str(path))
    return Predictor(model.to(device), meta, config=config)
