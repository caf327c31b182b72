"""Drawing instance masks the paper's way (Figures 4-5): set-A classes green, set-B classes red.

Used by the notebooks and the app; numpy + PIL only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from maskx.evaluate import decode_mask

GREEN = (40, 200, 70)  # set A: trained with masks
RED = (235, 50, 45)  # set B: boxes only in training; masks come from transfer (or the agnostic head)


@dataclass
class Drawn:
    box: list  # xyxy
    mask: Optional[np.ndarray]  # bool [H, W]
    name: str
    score: Optional[float]  # None: ground truth (labelled by name only, drawn under predictions)
    in_A: bool
    note: str = ""  # appended to the label (e.g. the mask's IoU with the ground truth)


def from_coco(preds: Iterable[dict], image_id: int, categories: dict[int, str], set_a: set,
              min_score: float = 0.0) -> list[Drawn]:
    """COCO results entries of ``image_id`` (RLE masks) → drawable instances."""
    out = []
    for p in preds:
        if p["image_id"] != image_id or p["score"] < min_score:
            continue
        x, y, w, h = p["bbox"]
        seg = p.get("segmentation")
        mask = None
        if seg is not None:
            mask = decode_mask(seg)
        out.append(Drawn([x, y, x + w, y + h], mask, categories.get(p["category_id"], str(p["category_id"])),
                         float(p["score"]), p["category_id"] in set_a))
    return out


def overlay(image: np.ndarray, instances: Iterable[Drawn], alpha: float = 0.45, labels: bool = True,
            label_size: Optional[int] = None) -> np.ndarray:
    """image uint8 [H, W, 3] with masks, boxes and 'name score note' labels drawn; returns uint8 [H, W, 3].
    ``label_size``: the labels' text height in pixels (None: PIL's 11-pixel bitmap font)."""
    img = np.asarray(image, dtype=np.float32).copy()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    instances = sorted(instances, key=lambda d: -1.0 if d.score is None else d.score)  # best on top
    for d in instances:
        if d.mask is not None and d.mask.shape == img.shape[:2]:
            color = np.array(GREEN if d.in_A else RED, np.float32)
            img[d.mask] = (1 - alpha) * img[d.mask] + alpha * color
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default(size=label_size) if label_size else None
    th = 11 if font is None else label_size + 3  # the label band's height: the text's and its descenders'
    for d in instances:
        color = GREEN if d.in_A else RED
        draw.rectangle([float(v) for v in d.box], outline=color, width=max(1, round(min(pil.size) / 200)))
        if labels:
            text = (d.name if d.score is None else f"{d.name} {d.score:.2f}") + (f" {d.note}" if d.note else "")
            tw = draw.textlength(text, font=font)
            x, y = max(0.0, min(float(d.box[0]), pil.size[0] - tw - 2)), max(0.0, float(d.box[1]) - th)  # inside the image
            draw.rectangle([x, y, x + tw + 2, y + th], fill=color)
            draw.text((x + 1, y), text, fill=(255, 255, 255), font=font)
    return np.asarray(pil)
