"""COCO evaluation reported on set A and set B separately (paper §4.1), plus per-class AP.

Predictions use the COCO results format: a list of
``{"image_id", "category_id", "score", "bbox": [x, y, w, h], "segmentation": RLE}`` with the
dataset's real category ids and RLE masks (``encode_masks``). AP numbers are 0-100, like the paper.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .data.splits import Split

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class PredictionError(ValueError):
    """A prediction file that is not valid COCO results for this ground truth."""


def encode_masks(masks: np.ndarray) -> list[dict]:
    """Binary masks [N, H, W] -> COCO RLEs with ``counts`` as str (JSON-ready)."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {masks.shape}")
    rles = mask_utils.encode(np.asfortranarray(masks.astype(np.uint8).transpose(1, 2, 0))) if len(masks) else []
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return list(rles)


def decode_mask(seg: dict) -> np.ndarray:
    """A COCO RLE (``counts`` as str, as ``encode_masks`` writes, or bytes) → bool mask [H, W]."""
    counts = seg["counts"].encode("ascii") if isinstance(seg["counts"], str) else seg["counts"]
    return mask_utils.decode({"size": seg["size"], "counts": counts}).astype(bool)


def gt_as_predictions(gt: dict) -> list[dict]:
    """Every non-crowd ground-truth instance as a score-1 prediction (evaluation sanity check)."""
    heights = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    preds = []
    for a in gt["annotations"]:
        if a.get("iscrowd", 0):
            continue
        h, w = heights[a["image_id"]]
        seg = a["segmentation"]
        if isinstance(seg, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        elif isinstance(seg["counts"], list):
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            rle = dict(seg)
        if isinstance(rle["counts"], bytes):
            rle = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
        preds.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
                      "bbox": list(a["bbox"]), "segmentation": rle})
    return preds


def check_predictions(preds, gt: dict, source: str = "predictions") -> list[dict]:
    """Validate COCO results against ``gt``; raise PredictionError naming the entry and field."""
    if not isinstance(preds, list):
        raise PredictionError(f"{source}: expected a JSON list of detections (COCO results format)")
    image_ids = {im["id"] for im in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    has_segm = None
    for k, p in enumerate(preds):
        where = f"{source}: detection [{k}]"
        if not isinstance(p, dict):
            raise PredictionError(f"{where}: expected an object")
        if p.get("image_id") not in image_ids:
            raise PredictionError(f"{where}: image_id {p.get('image_id')!r} is not in the ground truth")
        if p.get("category_id") not in cat_ids:
            raise PredictionError(f"{where}: category_id {p.get('category_id')!r} is not a ground-truth category "
                                  "(use real category ids, not contiguous labels)")
        s = p.get("score")
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s):
            raise PredictionError(f"{where}: 'score' must be a finite number, got {s!r}")
        b = p.get("bbox")
        if b is not None and not (isinstance(b, list) and len(b) == 4 and
                                  all(isinstance(v, (int, float)) and math.isfinite(v) for v in b)):
            raise PredictionError(f"{where}: 'bbox' must be [x, y, w, h], got {b!r}")
        seg = p.get("segmentation")
        if seg is not None and not (isinstance(seg, dict) and isinstance(seg.get("counts"), str)
                                    and isinstance(seg.get("size"), list) and len(seg["size"]) == 2):
            raise PredictionError(f"{where}: 'segmentation' must be an RLE {{'size': [h, w], 'counts': str}}")
        if b is None and seg is None:
            raise PredictionError(f"{where}: needs 'bbox' or 'segmentation'")
        if has_segm is None:
            has_segm = seg is not None
        elif has_segm != (seg is not None) or (b is None) != (preds[0].get("bbox") is None):
            raise PredictionError(f"{where}: every detection must carry the same fields as the first one")
    return preds


class SparseCOCOeval(COCOeval):
    """pycocotools' ``COCOeval`` with the same results (``eval``, ``stats``; tested), without visiting
    the (image, class) pairs that hold neither a ground-truth nor a detected instance. With 3000
    classes those are nearly all pairs, and pycocotools handles each in Python (``computeIoU``
    returns [] and ``evaluateImg`` None for them): on the 3000-class val split that loop is most of
    the evaluation's time after prediction."""

    def _prepare(self):
        cat_ids = self.params.catIds
        self.params.catIds = frozenset(cat_ids)  # COCO.getAnnIds tests `category_id in catIds`
        try:
            super()._prepare()
        finally:
            self.params.catIds = cat_ids

    def evaluate(self):
        p = self.params
        if not p.useCats or p.useSegm is not None or p.iouType not in ("bbox", "segm"):
            return super().evaluate()
        p.imgIds, p.catIds, p.maxDets = list(np.unique(p.imgIds)), list(np.unique(p.catIds)), sorted(p.maxDets)
        self._prepare()
        image_index = {img: i for i, img in enumerate(p.imgIds)}
        class_index = {cat: k for k, cat in enumerate(p.catIds)}
        pairs = sorted({(class_index[c], image_index[i]) for (i, c), anns in (*self._gts.items(), *self._dts.items())
                        if anns})
        n_img, n_area, max_det = len(p.imgIds), len(p.areaRng), p.maxDets[-1]
        self.ious, self.evalImgs = {}, [None] * (len(p.catIds) * n_area * n_img)  # laid out as pycocotools does
        for k, i in pairs:
            img, cat = p.imgIds[i], p.catIds[k]
            self.ious[img, cat] = self.computeIoU(img, cat)
            for a, area in enumerate(p.areaRng):
                self.evalImgs[(k * n_area + a) * n_img + i] = self.evaluateImg(img, cat, area, max_det)
        self._paramsEval = copy.deepcopy(self.params)


def _coco(gt: dict) -> COCO:
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _per_class_ap(E: COCOeval) -> dict[int, float | None]:
    prec = E.eval["precision"]  # [T, R, K, A, M]; area 'all' = 0, maxDets 100 = -1
    out = {}
    for k, cid in enumerate(E.params.catIds):
        p = prec[:, :, k, 0, -1]
        p = p[p > -1]
        out[cid] = round(float(p.mean()) * 100, 3) if p.size else None
    return out


def evaluate_predictions(gt: dict, preds: list[dict], split: Split) -> dict:
    """AP on set A and set B (bbox, and segm when predictions carry masks), and per class.

    Returns ``{"A": {"bbox_AP": .., "segm_AP": .., ...}, "B": {...}, "per_class": {name: {...}}}``;
    a metric is None where the set has no ground truth (or no masks were predicted).
    """
    check_predictions(preds, gt)
    if not split.a_ids or not split.b_ids:
        raise PredictionError(f"split {split.name!r}: evaluation needs a non-empty set A and set B")
    box_only = sum(1 for a in gt["annotations"] if a.get("has_mask") is False or "segmentation" not in a)
    if box_only and preds and "segmentation" in preds[0]:
        raise PredictionError(f"the ground truth has {box_only} box-only annotations (no mask); evaluate masks on "
                              "data with every mask (e.g. the val split of `maskx data synth3k`)")
    coco_gt = _coco(gt)
    iou_types = ["bbox"] + (["segm"] if preds and "segmentation" in preds[0] else [])
    with contextlib.redirect_stdout(io.StringIO()):
        if preds:
            coco_dt = coco_gt.loadRes(copy.deepcopy(preds))
        else:
            coco_dt = _coco({"images": gt["images"], "categories": gt["categories"], "annotations": []})
            iou_types.append("segm")
    names = {c["id"]: c["name"] for c in gt["categories"]}
    result: dict = {"split": split.to_json(), "num_images": len(gt["images"]), "num_predictions": len(preds),
                    "A": {}, "B": {}, "per_class": {}}
    per_class: dict[int, dict] = {cid: {"category_id": cid, "set": split.set_of(cid)} for cid in names}
    for iou in ("bbox", "segm"):
        for set_name, ids in (("A", split.a_ids), ("B", split.b_ids)):
            if iou not in iou_types:
                result[set_name].update({f"{iou}_{s}": None for s in STAT_NAMES})
                for cid in ids:
                    per_class[cid][f"{iou}_AP"] = None
                continue
            E = SparseCOCOeval(coco_gt, coco_dt, iou)
            E.params.catIds = list(ids)  # real category ids: the A/B restriction itself
            with contextlib.redirect_stdout(io.StringIO()):
                E.evaluate()
                E.accumulate()
                E.summarize()
            for s, v in zip(STAT_NAMES, E.stats[:6]):
                result[set_name][f"{iou}_{s}"] = None if v < 0 else round(float(v) * 100, 3)
            for cid, ap in _per_class_ap(E).items():
                per_class[cid][f"{iou}_AP"] = ap
    result["per_class"] = {names[cid]: v for cid, v in sorted(per_class.items())}
    return result


# LVIS's frequency groups (Gupta et al. 2019, §4): by how many training instances a class has
FREQUENCY_BINS = (("rare", 1, 10), ("common", 11, 100), ("frequent", 101, None))


def ap_by_frequency(per_class: dict, train_counts: dict) -> dict:
    """LVIS-style AP by training frequency: the mean of per-class AP over the classes of each group of
    ``FREQUENCY_BINS`` (as LVIS's AP_r / AP_c / AP_f), per set and over both.

    ``per_class``: ``evaluate_predictions(...)["per_class"]`` ({name: {"category_id", "set",
    "bbox_AP", "segm_AP"}}); ``train_counts``: {category id: training instances} (absent: 0).
    A class without val ground truth (AP None) is left out; a class with no training instance is in
    no group (counted under ``"unseen"``). Returns ``{"all" | "A" | "B": {group: {"bbox_AP",
    "segm_AP", "classes"}}, "unseen": {set: classes}}`` with AP in percent, None for an empty group.
    """
    out: dict = {"all": {}, "A": {}, "B": {}, "unseen": {"A": 0, "B": 0}}
    for group, lo, hi in FREQUENCY_BINS:
        for where in ("all", "A", "B"):
            rows = [r for r in per_class.values()
                    if r.get("bbox_AP") is not None and (where == "all" or r["set"] == where)
                    and lo <= train_counts.get(r["category_id"], 0) and (hi is None or train_counts.get(r["category_id"], 0) <= hi)]
            out[where][group] = {"classes": len(rows), **{
                f"{iou}_AP": (round(sum(r[f"{iou}_AP"] for r in rows) / len(rows), 3)
                              if rows and all(r.get(f"{iou}_AP") is not None for r in rows) else None)
                for iou in ("bbox", "segm")}}
    for r in per_class.values():
        if r.get("bbox_AP") is not None and train_counts.get(r["category_id"], 0) == 0:
            out["unseen"][r["set"]] += 1
    return out


def evaluate_files(gt_path, pred_path, split_name: str, seed: int = 0) -> dict:
    """Load ground truth and predictions from disk, resolve the split, evaluate (the CLI's `eval`)."""
    from .data.coco import read_json
    from .data.splits import info_split_args, resolve_split

    gt = read_json(Path(gt_path))
    if not isinstance(gt, dict) or not all(isinstance(gt.get(k), list) for k in ("images", "annotations", "categories")):
        raise PredictionError(f"{gt_path}: not a COCO annotations file (needs images, annotations, categories)")
    preds = read_json(Path(pred_path))
    check_predictions(preds, gt, source=str(pred_path))
    split = resolve_split(split_name, gt["categories"], seed=seed,
                          **info_split_args(gt.get("info")))
    return evaluate_predictions(gt, preds, split)
