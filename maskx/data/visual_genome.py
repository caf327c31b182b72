"""Visual Genome (boxes only), read from VG's own files, with the K most frequent object synsets.

Files (VG 1.2/1.4 layout): ``image_data.json`` (``image_id`` or ``id``, ``width``, ``height``,
``url``, ``coco_id``), ``objects.json`` (per image: ``objects`` with ``object_id`` or ``id``,
``x``, ``y``, ``w``, ``h``, ``names`` or ``name``, ``synsets``), optionally
``object_synsets.json`` (name -> synset, used when an object lists no synset), and the images in
``VG_100K/`` and ``VG_100K_2/`` (or ``images/``) as ``<image_id>.jpg``.

Paper §5: the 3000 most frequent synsets become the classes; categories are numbered 1..K by
descending frequency (ties by synset name). Targets are those of ``CocoDataset`` with
``has_mask`` all False (VG has no masks; masks for the COCO-shared images come from COCO).

Skipped and counted (``summary["skipped"]``; ``strict=True`` raises instead): objects with no
synset, zero-area boxes or boxes entirely outside the image (partly-outside boxes are clipped:
VG has many), repeated object ids.
Errors: unreadable files, missing fields, duplicate image ids, objects of unknown images, missing images.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from .categories import CategoryMap
from .coco import DatasetError, check_box, load_image, read_json

IMAGE_DIRS = ("VG_100K", "VG_100K_2", "images")


def _int_field(d: dict, keys: tuple[str, ...], where: str) -> int:
    for k in keys:
        v = d.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    raise DatasetError(f"{where}: needs an integer field {' or '.join(repr(k) for k in keys)}")


class VisualGenomeDataset(torch.utils.data.Dataset):
    def __init__(self, root, num_classes: int = 3000, strict: bool = False, check_files: bool = True,
                 transforms=None):
        self.root, self.strict, self.transforms = Path(root), strict, transforms
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.skipped: Counter = Counter()
        self.images = self._read_images(read_json(self.root / "image_data.json"))
        aliases_path = self.root / "object_synsets.json"
        aliases = read_json(aliases_path) if aliases_path.is_file() else {}
        if not isinstance(aliases, dict):
            raise DatasetError(f"{aliases_path}: expected an object mapping names to synsets")
        objects = self._read_objects(read_json(self.root / "objects.json"), aliases)

        freq = Counter(o["synset"] for objs in objects.values() for o in objs)
        vocab = sorted(freq, key=lambda s: (-freq[s], s))[:num_classes]
        self.synset_counts = {s: freq[s] for s in vocab}
        self.categories = CategoryMap(ids=tuple(range(1, len(vocab) + 1)), names=tuple(vocab))
        label = {s: k + 1 for k, s in enumerate(vocab)}
        self.anns = {i: [dict(o, label=label[o["synset"]]) for o in objects.get(i, []) if o["synset"] in label]
                     for i in self.images}
        self.outside_vocabulary = sum(freq.values()) - sum(self.synset_counts.values())
        self.ids = sorted(self.images)
        self.paths = {i: self._find_image(i) for i in self.ids} if check_files else {}

    def _fault(self, reason: str, where: str) -> None:
        if self.strict:
            raise DatasetError(f"{where}: {reason.replace('_', ' ')} (strict mode)")
        self.skipped[reason] += 1

    def _read_images(self, data) -> dict[int, dict]:
        where0 = self.root / "image_data.json"
        if not isinstance(data, list):
            raise DatasetError(f"{where0}: expected a list of images")
        out = {}
        for k, im in enumerate(data):
            where = f"{where0}: [{k}]"
            if not isinstance(im, dict):
                raise DatasetError(f"{where}: expected an object")
            iid = _int_field(im, ("image_id", "id"), where)
            w, h = im.get("width"), im.get("height")
            if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
                raise DatasetError(f"{where} (image id {iid}): 'width' and 'height' must be positive integers")
            if iid in out:
                raise DatasetError(f"{where0}: duplicate image id {iid}")
            out[iid] = {"id": iid, "width": w, "height": h, "coco_id": im.get("coco_id"), "url": im.get("url")}
        return out

    def _read_objects(self, data, aliases: dict) -> dict[int, list[dict]]:
        where0 = self.root / "objects.json"
        if not isinstance(data, list):
            raise DatasetError(f"{where0}: expected a list of per-image entries")
        out: dict[int, list[dict]] = {}
        seen: set[int] = set()
        for k, entry in enumerate(data):
            if not isinstance(entry, dict) or not isinstance(entry.get("objects"), list):
                raise DatasetError(f"{where0}: [{k}] needs a list field 'objects'")
            iid = _int_field(entry, ("image_id", "id"), f"{where0}: [{k}]")
            if iid not in self.images:
                raise DatasetError(f"{where0}: [{k}]: image id {iid} is not in image_data.json")
            im = self.images[iid]
            for j, o in enumerate(entry["objects"]):
                where = f"{where0}: image id {iid}, objects[{j}]"
                if not isinstance(o, dict):
                    raise DatasetError(f"{where}: expected an object")
                oid = _int_field(o, ("object_id", "id"), where)
                where = f"{where0}: image id {iid}, object id {oid}"
                if oid in seen:
                    self._fault("duplicate_object_id", where)
                    continue
                seen.add(oid)
                box, reason = check_box([o.get(c) for c in "xywh"], im["width"], im["height"], where,
                                        tolerance=float("inf"))
                if reason:
                    self._fault(reason, where)
                    continue
                synset = self._synset(o, aliases)
                if synset is None:
                    self._fault("no_synset", where)
                    continue
                out.setdefault(iid, []).append({"id": oid, "box": box, "synset": synset})
        return out

    @staticmethod
    def _synset(o: dict, aliases: dict) -> str | None:
        syn = o.get("synsets")
        if isinstance(syn, list) and syn and isinstance(syn[0], str):
            return syn[0]
        names = o.get("names") or ([o["name"]] if isinstance(o.get("name"), str) else [])
        for n in names:
            if isinstance(n, str) and isinstance(aliases.get(n.strip().lower()), str):
                return aliases[n.strip().lower()]
        return None

    def _find_image(self, iid: int) -> Path:
        names = [f"{iid}.jpg"]
        url = self.images[iid].get("url")
        if isinstance(url, str) and url:
            names.append(url.rsplit("/", 1)[-1])
        for d in IMAGE_DIRS:
            for n in names:
                p = self.root / d / n
                if p.is_file():
                    return p
        raise DatasetError(f"{self.root}: image id {iid} not found as {names[0]} in any of {list(IMAGE_DIRS)}")

    @property
    def summary(self) -> dict:
        return {"images": len(self.ids), "classes": len(self.categories.ids),
                "instances": sum(len(v) for v in self.anns.values()),
                "outside_vocabulary": self.outside_vocabulary, "skipped": dict(self.skipped)}

    def __len__(self) -> int:
        return len(self.ids)

    def _image_and_target(self, index: int):
        """The image ``[3, H, W]`` and its box target before transforms (no masks: VG has none)."""
        iid = self.ids[index]
        im = self.images[iid]
        path = self.paths[iid] if self.paths else self._find_image(iid)
        image = load_image(path, iid, (im["height"], im["width"]))
        objs = self.anns[iid]
        n = len(objs)
        target = {
            "boxes": torch.tensor([o["box"] for o in objs], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([o["label"] for o in objs], dtype=torch.int64),
            "has_mask": torch.zeros(n, dtype=torch.bool),
            "iscrowd": torch.zeros(n, dtype=torch.int64),
            "ann_ids": torch.tensor([o["id"] for o in objs], dtype=torch.int64),
            "image_id": iid,
        }
        return image, target

    def __getitem__(self, index: int):
        image, target = self._image_and_target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def to_coco(self) -> dict:
        """The kept objects as a COCO-format dict (boxes only), for evaluation and browsing."""
        images = [{"id": i, "file_name": str(self.paths[i].relative_to(self.root)) if self.paths else f"{i}.jpg",
                   "width": self.images[i]["width"], "height": self.images[i]["height"]} for i in self.ids]
        anns = [{"id": o["id"], "image_id": i, "category_id": o["label"], "iscrowd": 0,
                 "bbox": [o["box"][0], o["box"][1], o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]],
                 "area": (o["box"][2] - o["box"][0]) * (o["box"][3] - o["box"][1])}
                for i in self.ids for o in self.anns[i]]
        cats = [{"id": c, "name": s, "synset": s, "supercategory": s.split(".")[0]}
                for c, s in zip(self.categories.ids, self.categories.names)]
        return {"info": {"description": "Visual Genome objects", "num_classes": len(cats)},
                "images": images, "annotations": anns, "categories": cats}
