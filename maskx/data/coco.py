"""A torch Dataset over any COCO-format instance-segmentation folder (real COCO 2017 included).

Targets follow torchvision's detection convention, plus the partial-supervision flag:

    boxes       [N, 4] float32, xyxy pixels           labels   [N] int64, 1..K (CategoryMap)
    masks       [N, H, W] uint8 (all zero where has_mask is False: set-B masks never leave here)
    has_mask    [N] bool, True for set-A classes      area     [N] float32
    iscrowd     [N] int64 (always 0)                  ann_ids  [N] int64
    crowd_boxes [M, 4] float32 (crowd regions, left out of the instances, like torchvision's
                reference; kept so a sampler may ignore proposals there)
    image_id    int

Box-only instances: an annotation with ``"has_mask": false`` (maskx's extension, written by
``synthetic3k`` and ``vg_coco`` for objects that have a box but no mask, like VG's) needs no
``segmentation`` and gets ``has_mask=False`` whatever ``mask_category_ids`` says.

Bad input policy (docs/faults.md): structural faults (unreadable JSON, missing fields,
wrong types, duplicate ids, unknown image or category ids, missing/corrupt image files,
malformed segmentation) raise ``DatasetError`` naming the file and id. Geometric faults that
real COCO contains (zero-area box, box outside the image, empty segmentation) are skipped and
counted in ``summary["skipped"]``; ``strict=True`` turns them into errors too.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from .categories import CategoryMap

BOX_TOLERANCE = 1.0  # px a box may pass the image border (rounding) before it counts as outside
MAX_RLE_PIXELS = 2 ** 29  # pycocotools keeps RLE runs in 32-bit ints (and 6-character string groups)


class DatasetError(ValueError):
    """Input data that cannot be used as it is; the message names the file, the id and the fix."""


def _finite_number(v) -> bool:
    """An int or float (not a bool) that is a finite float (ints beyond float's range are not)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _is_id(v) -> bool:
    """An int (not a bool) that fits int64, as ids end up in int64 tensors."""
    return isinstance(v, int) and not isinstance(v, bool) and -2 ** 63 <= v < 2 ** 63


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a file name too long for the file system
        return False


def read_json(path: Path) -> object:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e}); re-export or re-download the file") from None


def load_image(path: Path, image_id: int | None = None, expect_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """Read an image as float [3, H, W] in [0, 1] (grayscale/RGBA converted to RGB)."""
    where = f"{path}" if image_id is None else f"{path} (image id {image_id})"
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"{where}: image file not found") from None
    except Exception as e:  # PIL raises many types for truncated/corrupt files
        raise DatasetError(f"{where}: cannot decode image ({e}); "
                           "replace the file or remove the image from the annotations") from None
    if expect_hw is not None and (rgb.height, rgb.width) != tuple(expect_hw):
        raise DatasetError(f"{where}: image is {rgb.width}x{rgb.height} but the "
                           f"annotations say {expect_hw[1]}x{expect_hw[0]}")
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).float().div_(255.0)


def check_box(bbox, width: float, height: float, where: str,
              tolerance: float = BOX_TOLERANCE) -> tuple[list[float] | None, str | None]:
    """Validate a COCO [x, y, w, h] box; returns (clipped xyxy box, None) or (None, skip reason).

    A box passing the border by more than ``tolerance`` px is "box_outside_image"; with
    ``tolerance=inf`` it is clipped, and only one with no area left inside is skipped.
    """
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
            or not all(_finite_number(v) for v in bbox)):
        raise DatasetError(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return None, "zero_area_box"
    t = tolerance
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        return None, "box_outside_image"
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(width)), min(y + h, float(height))
    if x1 - x0 < 1e-3 or y1 - y0 < 1e-3:
        return None, "zero_area_box"
    return [x0, y0, x1, y1], None


def segmentation_to_rle(seg, height: int, width: int, where: str) -> dict:
    """Polygons, uncompressed RLE or compressed RLE -> one compressed RLE of the image's size."""
    if isinstance(seg, list):
        if not all(isinstance(p, list) and len(p) % 2 == 0 and
                   all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p) for p in seg):
            raise DatasetError(f"{where}: polygon segmentation must be a list of [x0, y0, x1, y1, ...] lists")
        # pycocotools rasterises every polygon edge at 5x: far-off, infinite or NaN vertices make it
        # allocate without bound or crash (segfault); COCO's vertices lie on the image, give or take
        size = max(height, width)
        if not all(-size <= v <= 2 * size for p in seg for v in p):
            raise DatasetError(f"{where}: polygon coordinates must be finite and at most one image size "
                               f"({size} px) outside the image")
        polys = [p for p in seg if len(p) >= 6]
        if not polys:
            return {}
        return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if not isinstance(seg["size"], (list, tuple)) or list(seg["size"]) != [height, width]:
            raise DatasetError(f"{where}: RLE size {seg['size']} does not match the image ({height}, {width})")
        counts = seg["counts"]
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
                raise DatasetError(f"{where}: uncompressed RLE counts must be non-negative ints summing to H*W")
            return mask_utils.frPyObjects(seg, height, width)
        if isinstance(counts, (str, bytes)):
            text = counts.decode("latin-1") if isinstance(counts, bytes) else counts
            _check_rle_string(text, height * width, where)
            return {"size": [height, width], "counts": text.encode("ascii")}
    raise DatasetError(f"{where}: 'segmentation' must be polygons or an RLE dict with 'size' and 'counts'")


def _check_rle_string(counts: str, pixels: int, where: str) -> None:
    """Decode compressed RLE ``counts`` as pycocotools does (``rleFrString``) and require runs that
    are non-negative and sum to H*W: pycocotools trusts the string, leaving pixels uninitialised
    (garbage masks) when the runs fall short and failing at decode time when they run over."""
    runs: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x = k = 0
        more = True
        while more:
            c = ord(counts[p]) - 48 if p < n and k < 6 else -1  # 6 chars: 30 bits, as C shifts an int
            if not 0 <= c < 64:
                raise DatasetError(f"{where}: malformed compressed RLE counts (character {p}); "
                                   "re-encode the mask with pycocotools")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if not 0 <= x <= pixels:
            raise DatasetError(f"{where}: malformed compressed RLE counts (run {len(runs)} is {x}); "
                               "re-encode the mask with pycocotools")
        runs.append(x)
    if sum(runs) != pixels:
        raise DatasetError(f"{where}: compressed RLE counts cover {sum(runs)} pixels, the image has {pixels}")


def check_coco_structure(data, ann_file) -> CategoryMap:
    """The top level of a COCO instances file: its three lists, and categories with int ids and
    string names; returns their CategoryMap. Raises DatasetError naming the file and entry."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DatasetError(f"{ann_file}: missing list field '{key}'; is this a COCO instances file?")
    for k, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_id(c.get("id")) or not isinstance(c.get("name"), str):
            raise DatasetError(f"{ann_file}: categories[{k}]: expected an object with an integer 'id' "
                               f"and a string 'name', got {c!r}")
    try:
        return CategoryMap.from_coco(data["categories"])
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{ann_file}: bad 'categories' ({e})") from None


class CocoDataset(torch.utils.data.Dataset):
    """COCO-format instances with masks only for ``mask_category_ids`` (None: every class).

    Args:
        images_dir: folder holding each image's ``file_name``.
        ann_file: the COCO ``instances_*.json``.
        mask_category_ids: real category ids of set A; instances of other classes get
            ``has_mask=False`` and an all-zero mask (their segmentation is never decoded).
        strict: raise on skippable geometric faults instead of counting them.
        transforms: optional callable ``(image, target) -> (image, target)``.
    """

    def __init__(self, images_dir, ann_file, mask_category_ids=None, strict: bool = False,
                 transforms=None, check_files: bool = True, data: dict | None = None):
        self.images_dir, self.ann_file = Path(images_dir), Path(ann_file)
        self.strict, self.transforms = strict, transforms
        data = read_json(self.ann_file) if data is None else data  # ``data``: ann_file already parsed
        self.data = data
        self.categories = check_coco_structure(data, self.ann_file)
        known = set(self.categories.ids)
        self.mask_ids = known if mask_category_ids is None else set(mask_category_ids)
        if self.mask_ids - known:
            raise DatasetError(f"mask_category_ids {sorted(self.mask_ids - known)[:10]} are not categories "
                               f"of {self.ann_file}")
        self.images = self._index_images(data["images"])
        self.skipped: Counter = Counter()
        self.anns: dict[int, list[dict]] = {i: [] for i in self.images}
        self.crowd: dict[int, list[list[float]]] = {i: [] for i in self.images}
        self._index_annotations(data["annotations"], known)
        self.ids = sorted(self.images)
        if check_files:
            missing = [self.images[i]["file_name"] for i in self.ids
                       if not _is_file(self.images_dir / self.images[i]["file_name"])]
            if missing:
                raise DatasetError(f"{self.images_dir}: {len(missing)} image file(s) listed in {self.ann_file.name} "
                                   f"are missing, e.g. {missing[:5]}")

    def _fault(self, reason: str, where: str) -> None:
        if self.strict:
            raise DatasetError(f"{where}: {reason.replace('_', ' ')} (strict mode; fix or remove the annotation)")
        self.skipped[reason] += 1

    def _index_images(self, images: list) -> dict[int, dict]:
        out = {}
        for k, im in enumerate(images):
            where = f"{self.ann_file}: images[{k}]"
            if not isinstance(im, dict):
                raise DatasetError(f"{where}: expected an object")
            for f, t in (("id", int), ("file_name", str), ("width", int), ("height", int)):
                if not isinstance(im.get(f), t) or isinstance(im.get(f), bool):
                    raise DatasetError(f"{where}: field '{f}' must be {t.__name__}, got {im.get(f)!r}")
            if not _is_id(im["id"]):
                raise DatasetError(f"{where}: image id {im['id']} does not fit 64 bits")
            if im["width"] <= 0 or im["height"] <= 0:
                raise DatasetError(f"{where} (image id {im['id']}): width and height must be positive")
            if im["width"] * im["height"] > MAX_RLE_PIXELS:
                raise DatasetError(f"{where} (image id {im['id']}): {im['width']}x{im['height']} is too large "
                                   f"(at most {MAX_RLE_PIXELS} pixels)")
            if im["id"] in out:
                raise DatasetError(f"{self.ann_file}: duplicate image id {im['id']}")
            out[im["id"]] = im
        return out

    def _index_annotations(self, anns: list, known: set[int]) -> None:
        seen: set[int] = set()
        for k, a in enumerate(anns):
            where = f"{self.ann_file}: annotations[{k}]"
            if not isinstance(a, dict):
                raise DatasetError(f"{where}: expected an object")
            for f in ("id", "image_id", "category_id"):
                if not _is_id(a.get(f)):
                    raise DatasetError(f"{where}: field '{f}' must be an integer (64 bits), got {a.get(f)!r}")
            where = f"{self.ann_file}: annotation id {a['id']} (image id {a['image_id']})"
            if a["id"] in seen:
                raise DatasetError(f"{self.ann_file}: duplicate annotation id {a['id']}")
            seen.add(a["id"])
            if a["image_id"] not in self.images:
                raise DatasetError(f"{where}: image id {a['image_id']} is not in 'images'")
            if a["category_id"] not in known:
                raise DatasetError(f"{where}: unknown category id {a['category_id']} (not in 'categories')")
            if not (_finite_number(a.get("area", 0)) and 0 <= a.get("area", 0) <= MAX_RLE_PIXELS):
                raise DatasetError(f"{where}: 'area' must be a number of pixels (0 to {MAX_RLE_PIXELS}), "
                                   f"got {a.get('area')!r}")
            if a.get("iscrowd", 0) not in (0, 1):
                raise DatasetError(f"{where}: 'iscrowd' must be 0 or 1, got {a.get('iscrowd')!r}")
            im = self.images[a["image_id"]]
            box, reason = check_box(a.get("bbox"), im["width"], im["height"], where)
            if reason:
                self._fault(reason, where)
                continue
            if a.get("iscrowd", 0):
                self.crowd[a["image_id"]].append(box)
                continue
            labelled = a.get("has_mask", True)  # false: a box-only instance (no segmentation needed)
            if not isinstance(labelled, bool):
                raise DatasetError(f"{where}: 'has_mask' must be true or false, got {labelled!r}")
            has_mask, rle = labelled and a["category_id"] in self.mask_ids, None
            if has_mask:
                if "segmentation" not in a:
                    raise DatasetError(f"{where}: set-A instance without 'segmentation'")
                rle = segmentation_to_rle(a["segmentation"], im["height"], im["width"], where)
                if not rle or mask_utils.area(rle) == 0:
                    self._fault("empty_segmentation", where)
                    continue
            self.anns[a["image_id"]].append({"box": box, "ann": a, "has_mask": has_mask, "rle": rle})

    @property
    def summary(self) -> dict:
        n = sum(len(v) for v in self.anns.values())
        return {"images": len(self.ids), "instances": n,
                "with_mask": sum(x["has_mask"] for v in self.anns.values() for x in v),
                "crowd": sum(len(v) for v in self.crowd.values()), "skipped": dict(self.skipped)}

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        return self.images_dir / self.images[self.ids[index]]["file_name"]

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        im = self.images[image_id]
        h, w = im["height"], im["width"]
        image = load_image(self.image_path(index), image_id, (h, w))
        items = self.anns[image_id]
        masks = torch.zeros((len(items), h, w), dtype=torch.uint8)
        for k, it in enumerate(items):
            if it["has_mask"]:
                masks[k] = torch.from_numpy(mask_utils.decode(it["rle"]))
        target = {
            "boxes": torch.tensor([it["box"] for it in items], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([self.categories.label(it["ann"]["category_id"]) for it in items],
                                   dtype=torch.int64),
            "masks": masks,
            "has_mask": torch.tensor([it["has_mask"] for it in items], dtype=torch.bool),
            "area": torch.tensor([float(it["ann"].get("area", 0.0)) for it in items], dtype=torch.float32),
            "iscrowd": torch.zeros(len(items), dtype=torch.int64),
            "ann_ids": torch.tensor([it["ann"]["id"] for it in items], dtype=torch.int64),
            "crowd_boxes": torch.tensor(self.crowd[image_id], dtype=torch.float32).reshape(-1, 4),
            "image_id": image_id,
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    @classmethod
    def from_dir(cls, root, **kwargs) -> "CocoDataset":
        """The layout ``maskx data synth`` writes: ``root/annotations.json`` + ``root/images/``."""
        root = Path(root)
        if not (root / "annotations.json").is_file():
            raise DatasetError(f"{root}: no annotations.json here; expected a folder written by "
                               "`python -m maskx data synth` (annotations.json + images/)")
        return cls(root / "images", root / "annotations.json", **kwargs)


def collate(batch):
    """Detection batches are lists: images differ in size and instance count."""
    return tuple(zip(*batch))
