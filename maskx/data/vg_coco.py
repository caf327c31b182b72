"""Visual Genome boxes with COCO masks (paper §5): the 3000-class training set of the real world.

VG has boxes for ~3000 frequent synsets and no masks; about half of its images are COCO
photos (``image_data.json``'s ``coco_id``). ``VGWithCocoMasks`` yields VG's targets (labels
1..K by synset frequency, as ``VisualGenomeDataset``) where each object of set A — a VG class
whose synset maps to one of COCO's 80 categories in ``vg_coco80_synsets.json`` — takes the mask
of the COCO instance it matches in the same photo:

- VG boxes are rescaled to the COCO image's size (``sx = W_coco / W_vg``, ``sy = H_coco / H_vg``;
  the two must agree within ``ASPECT_TOLERANCE``, else the pair is not the same photo and the
  image is skipped for masks, counted as ``size_mismatch``);
- per COCO category, VG objects and non-crowd COCO instances of that category are paired
  greedily by descending box IoU, one-to-one, if IoU >= ``iou_thresh`` (0.5: the detection
  criterion; VG boxes are looser than COCO's, so a stricter one drops many true pairs);
- the matched instance's mask is decoded at COCO's size and resized (nearest) to the VG image.
Set-A objects left unmatched (or in photos COCO does not have) keep their box with
``has_mask=False``; they are counted in ``summary["unmatched_set_a"]``. All other objects are
box-only (set B).

Targets are ``CocoDataset``'s: boxes [N, 4] float32 xyxy (VG pixels), labels [N] int64 1..K,
masks [N, H, W] uint8 at the VG image's size, has_mask [N] bool, area [N] float32 (box area),
iscrowd [N] int64 zeros, ann_ids [N] int64 (VG object ids), crowd_boxes [0, 4], image_id (VG id).
``to_coco()`` writes the same as one COCO-format dict (box-only objects as ``"has_mask": false``,
``info["set_A_category_ids"]`` for the split ``coco80``), so ``CocoDataset`` can train on it.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from .categories import CategoryMap
from .coco import CocoDataset, DatasetError, read_json
from .visual_genome import VisualGenomeDataset

MAPPING_FILE = Path(__file__).with_name("vg_coco80_synsets.json")
IOU_THRESH = 0.5
ASPECT_TOLERANCE = 0.02  # |sx / sy - 1|: VG resized COCO's photos keeping their aspect ratio
SYNSET = re.compile(r"^[a-z0-9][a-z0-9_.'-]*\.n\.\d\d$")


def load_mapping(path=MAPPING_FILE) -> tuple[dict[int, str], dict[str, int]]:
    """The COCO-80 -> VG synset table: ({COCO id: COCO name}, {synset: COCO id})."""
    path = Path(path)
    data = read_json(path)
    cats = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(cats, list):
        raise DatasetError(f"{path}: missing list field 'categories'")
    names: dict[int, str] = {}
    to_coco: dict[str, int] = {}
    for k, c in enumerate(cats):
        where = f"{path}: categories[{k}]"
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise DatasetError(f"{where}: needs an integer 'id' and a string 'name'")
        if c["id"] in names:
            raise DatasetError(f"{where}: duplicate COCO id {c['id']}")
        names[c["id"]] = c["name"]
        syns = c.get("synsets")
        if not isinstance(syns, list) or not syns:
            raise DatasetError(f"{where} ({c['name']}): 'synsets' must be a non-empty list")
        for s in syns:
            if not isinstance(s, str) or not SYNSET.match(s):
                raise DatasetError(f"{where} ({c['name']}): {s!r} is not a WordNet noun synset like 'dog.n.01'")
            if s in to_coco:
                raise DatasetError(f"{where} ({c['name']}): synset {s} is already mapped to COCO id {to_coco[s]}")
            to_coco[s] = c["id"]
    return names, to_coco


def vg_set_a(categories: CategoryMap, synset_to_coco: dict[str, int]) -> dict[int, int]:
    """{VG label: COCO category id} for the VG classes (synset names) that map to COCO: set A."""
    return {label: synset_to_coco[s] for label, s in enumerate(categories.names, 1) if s in synset_to_coco}


def coco_image_ids(ann_file) -> set[int]:
    """The image ids of a COCO instances file (e.g. val2017's, whose VG images a training set leaves out)."""
    data = read_json(Path(ann_file))
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not all(isinstance(im, dict) and isinstance(im.get("id"), int) for im in images):
        raise DatasetError(f"{ann_file}: 'images' must be a list of objects with an integer 'id'")
    return {im["id"] for im in images}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a [N, 4] and b [M, 4] -> [N, M]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_greedy(iou: np.ndarray, thresh: float) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs of ``iou`` [N, M] by descending IoU, each >= ``thresh``."""
    pairs, rows, cols = [], set(), set()
    flat = np.argsort(-iou, axis=None, kind="stable")
    for i, j in zip(*np.unravel_index(flat, iou.shape)):
        if iou[i, j] < thresh:
            break
        if i not in rows and j not in cols:
            pairs.append((int(i), int(j)))
            rows.add(i)
            cols.add(j)
    return pairs


class VGWithCocoMasks(VisualGenomeDataset):
    """VG (top ``num_classes`` synsets) with COCO masks for set-A objects; see the module docstring.

    Args:
        root: the VG folder (``image_data.json``, ``objects.json``, ``VG_100K*/``).
        coco_ann_file: COCO instances with masks (``instances_train2017.json``); its images are
            not read.
        images: "all" VG images, or "coco": only those whose COCO photo is in ``coco_ann_file``.
        exclude_coco_ids: COCO image ids whose VG images are left out (paper §5 trains on the VG
            images not in COCO val2017: pass ``coco_image_ids(instances_val2017.json)``).
        iou_thresh: box IoU a VG object needs to take a COCO instance's mask.
    """

    def __init__(self, root, coco_ann_file, num_classes: int = 3000, images: str = "all",
                 exclude_coco_ids=(), iou_thresh: float = IOU_THRESH, strict: bool = False,
                 check_files: bool = True, transforms=None, mapping_file=MAPPING_FILE):
        if images not in ("all", "coco"):
            raise ValueError(f"images must be 'all' or 'coco', got {images!r}")
        if not 0 < iou_thresh <= 1:
            raise ValueError(f"iou_thresh must be in (0, 1], got {iou_thresh}")
        super().__init__(root, num_classes=num_classes, strict=strict, check_files=False, transforms=transforms)
        self.iou_thresh, self.mapping_file = iou_thresh, Path(mapping_file)
        self.coco_names, synset_to_coco = load_mapping(mapping_file)
        self.coco = CocoDataset(Path(coco_ann_file).parent, coco_ann_file, strict=strict, check_files=False)
        self._check_coco_categories()
        self.set_a = vg_set_a(self.categories, synset_to_coco)
        for iid, im in self.images.items():
            if im["coco_id"] is not None and (not isinstance(im["coco_id"], int) or isinstance(im["coco_id"], bool)):
                raise DatasetError(f"{self.root / 'image_data.json'}: image id {iid}: field 'coco_id' must be an "
                                   f"integer or null, got {im['coco_id']!r}")
        exclude = set(exclude_coco_ids)
        self.ids = [i for i in self.ids if self.images[i]["coco_id"] not in exclude]
        if images == "coco":
            self.ids = [i for i in self.ids if self.images[i]["coco_id"] in self.coco.images]
        self.counts: Counter = Counter()
        self.matches: dict[int, dict[int, dict]] = {}  # VG image id -> {object index: COCO item}
        for iid in self.ids:
            self._match_image(iid)
        if check_files:
            self.paths = {i: self._find_image(i) for i in self.ids}

    def _check_coco_categories(self) -> None:
        for cid, name in zip(self.coco.categories.ids, self.coco.categories.names):
            if cid in self.coco_names and self.coco_names[cid] != name:
                raise DatasetError(f"{self.coco.ann_file}: categories: id {cid} is {name!r} here but "
                                   f"{self.coco_names[cid]!r} in {self.mapping_file.name}; expected COCO 2017 ids")

    def _match_image(self, iid: int) -> None:
        vg = self.images[iid]
        objs = self.anns[iid]
        a_objs = [k for k, o in enumerate(objs) if o["label"] in self.set_a]
        self.counts["set_a_objects"] += len(a_objs)
        co = self.coco.images.get(vg["coco_id"]) if vg["coco_id"] is not None else None
        if co is None:
            self.counts["unmatched_set_a"] += len(a_objs)
            return
        self.counts["images_in_coco"] += 1
        sx, sy = co["width"] / vg["width"], co["height"] / vg["height"]
        if abs(sx / sy - 1) > ASPECT_TOLERANCE:
            self._fault("size_mismatch", f"{self.root / 'image_data.json'}: image id {iid} is {vg['width']}x"
                        f"{vg['height']} but its COCO image {vg['coco_id']} is {co['width']}x{co['height']}")
            self.counts["unmatched_set_a"] += len(a_objs)
            return
        items = [it for it in self.coco.anns[vg["coco_id"]] if it["has_mask"]]
        matched: dict[int, dict] = {}
        for cat in sorted({self.set_a[objs[k]["label"]] for k in a_objs}):
            rows = [k for k in a_objs if self.set_a[objs[k]["label"]] == cat]
            cols = [it for it in items if it["ann"]["category_id"] == cat]
            if not cols:
                continue
            boxes = np.array([objs[k]["box"] for k in rows]) * [sx, sy, sx, sy]
            for i, j in match_greedy(box_iou(boxes, [it["box"] for it in cols]), self.iou_thresh):
                matched[rows[i]] = cols[j]
        self.matches[iid] = matched
        self.counts["with_mask"] += len(matched)
        self.counts["unmatched_set_a"] += len(a_objs) - len(matched)

    @property
    def summary(self) -> dict:
        return {**super().summary, "instances": sum(len(self.anns[i]) for i in self.ids),
                "set_a_classes": len(self.set_a), "set_a_objects": self.counts["set_a_objects"],
                "with_mask": self.counts["with_mask"], "unmatched_set_a": self.counts["unmatched_set_a"],
                "images_in_coco": self.counts["images_in_coco"], "iou_thresh": self.iou_thresh}

    def mask(self, iid: int, k: int) -> np.ndarray:
        """The COCO mask matched to object ``k`` of VG image ``iid``, resized to the VG image: [H, W] uint8."""
        m = mask_utils.decode(self.matches[iid][k]["rle"])
        vg = self.images[iid]
        if m.shape != (vg["height"], vg["width"]):
            m = np.array(Image.fromarray(m).resize((vg["width"], vg["height"]), Image.NEAREST))
        return m

    def _image_and_target(self, index: int):
        """VG's box target plus ``masks`` ``[N, H, W]`` (zeros where no COCO mask matched)."""
        image, target = super()._image_and_target(index)
        iid = target["image_id"]
        im, n = self.images[iid], len(self.anns[iid])
        matched = self.matches.get(iid, {})
        masks = torch.zeros((n, im["height"], im["width"]), dtype=torch.uint8)
        for k in matched:
            masks[k] = torch.from_numpy(self.mask(iid, k))
        boxes = target["boxes"]
        target.update({
            "masks": masks,
            "has_mask": torch.tensor([k in matched for k in range(n)], dtype=torch.bool),
            "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
            "crowd_boxes": torch.zeros((0, 4), dtype=torch.float32),
        })
        return image, target

    def to_coco(self, progress: bool = False) -> dict:
        """The dataset as a COCO-format dict: RLE masks (VG size) for matched set-A objects,
        ``"has_mask": false`` for the rest, ``info["set_A_category_ids"]`` = set A's labels."""
        from tqdm import tqdm

        data = super().to_coco()
        by_id = {i: {o["id"]: k for k, o in enumerate(self.anns[i])} for i in self.ids}
        for a in tqdm(data["annotations"], disable=not progress, desc="masks"):
            k = by_id[a["image_id"]][a["id"]]
            if k in self.matches.get(a["image_id"], {}):
                rle = mask_utils.encode(np.asfortranarray(self.mask(a["image_id"], k)))
                a["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
            else:
                a["has_mask"] = False
        for c in data["categories"]:
            if c["id"] in self.set_a:
                c["coco_id"] = self.set_a[c["id"]]
        data["info"].update({"description": "Visual Genome boxes + COCO masks (maskx.data.vg_coco)",
                             "set_A_category_ids": sorted(self.set_a), "coco_annotations": str(self.coco.ann_file),
                             "iou_thresh": self.iou_thresh, "mapping_file": self.mapping_file.name})
        return data
