"""A model's instances (box, score, class, set, mask) and their saved forms, without torch.

``Instance`` is what ``Predictor.predict`` returns; ``coco_entries`` writes instances in the COCO
results format. Saved predictions (``write_saved`` / ``read_saved``) keep one model's instances on a
few images, keyed by the weights' SHA-256 and each image's ``image_key``: the app draws them for
its sample images before torch is even imported (``models/maskx-3k/examples.json``, written by
``python -m maskx ship``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .atomic import write_json_atomic
from .evaluate import decode_mask, encode_masks

SAVED_FORMAT = "maskx-saved-predictions-1"


@dataclass
class Instance:
    box: list[float]  # xyxy pixels of the input image
    score: float
    label: int  # 1..K
    category_id: int
    class_name: str
    in_A: bool  # the class had mask labels in training (set A)
    mask: Optional[np.ndarray]  # bool [H, W], None for a detector-only model


def coco_entries(inst: list[Instance], image_id: int) -> list[dict]:
    """Instances of one image → COCO results entries (xywh boxes, RLE masks when present)."""
    rles = encode_masks(np.stack([i.mask for i in inst])) if inst and inst[0].mask is not None else None
    out = []
    for k, i in enumerate(inst):
        x0, y0, x1, y1 = i.box
        entry = {"image_id": image_id, "category_id": i.category_id, "score": round(i.score, 5),
                 "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]}
        if rles is not None:
            entry["segmentation"] = rles[k]
        out.append(entry)
    return out


def image_key(image: np.ndarray) -> str:
    """SHA-256 of an image array's bytes and shape: which image a saved prediction belongs to."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()


class SavedPredictionsError(ValueError):
    """A saved-predictions file that cannot be read."""


def write_saved(path, weights_sha256: str, images: list[tuple[int, np.ndarray, list[Instance]]],
                made_with: dict) -> Path:
    """Write ``[(image id, RGB uint8 [H, W, 3], instances)]`` as JSON (atomically): COCO entries with
    each instance's class name, set and label; ``made_with`` records how they were predicted."""
    out = {"format": SAVED_FORMAT, "weights_sha256": weights_sha256, "made_with": made_with, "images": []}
    for image_id, rgb, inst in images:
        entries = coco_entries(inst, image_id)
        for e, i in zip(entries, inst):
            e.update(label=i.label, class_name=i.class_name, in_A=bool(i.in_A), box_xyxy=[float(v) for v in i.box])
        out["images"].append({"image_id": int(image_id), "image_key": image_key(rgb), "height": int(rgb.shape[0]),
                              "width": int(rgb.shape[1]), "instances": entries})
    write_json_atomic(out, path)
    return Path(path)


def read_saved(data: dict, source: str, weights_sha256: Optional[str] = None) -> dict[str, list[Instance]]:
    """A parsed saved-predictions file → {image_key: instances}; empty when ``weights_sha256`` is given
    and differs from the file's (predictions of other weights are never shown as this model's)."""
    if not isinstance(data, dict) or data.get("format") != SAVED_FORMAT or not isinstance(data.get("images"), list):
        raise SavedPredictionsError(f"{source}: not a saved-predictions file (format {SAVED_FORMAT!r}); "
                                    "write it again with `python -m maskx ship --examples-only`")
    if weights_sha256 is not None and data.get("weights_sha256") != weights_sha256:
        return {}
    out = {}
    for k, im in enumerate(data["images"]):
        try:
            h, w = int(im["height"]), int(im["width"])
            inst = []
            for e in im["instances"]:
                rle = e.get("segmentation")
                mask = None
                if rle is not None:
                    if list(rle.get("size", [])) != [h, w]:
                        raise ValueError(f"mask size {rle.get('size')} is not the image's {[h, w]}")
                    mask = decode_mask(rle)
                inst.append(Instance([float(v) for v in e["box_xyxy"]], float(e["score"]), int(e["label"]),
                                     int(e["category_id"]), str(e["class_name"]), bool(e["in_A"]), mask))
            out[str(im["image_key"])] = inst
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise SavedPredictionsError(f"{source}: images[{k}] is malformed ({type(err).__name__}: {err}); write it "
                                        "again with `python -m maskx ship --examples-only`") from err
    return out
