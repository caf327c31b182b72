"""Open any dataset folder the app can browse: COCO format (``annotations.json`` + ``images/``,
or a COCO annotations file with its image folder) or Visual Genome (``image_data.json`` +
``objects.json``). Anything else is a ``DatasetError`` that says what was expected."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from maskx.data.coco import CocoDataset, DatasetError


def open_dataset(path, images: Optional[str] = None, check_files: bool = False):
    """→ (dataset, kind) with kind "coco" or "vg"; ``dataset`` has ``ids``, ``categories``,
    ``__getitem__`` (image [3, H, W], target) like ``CocoDataset``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"{p}: no such file or folder")
    if p.is_dir() and (p / "image_data.json").is_file() and (p / "objects.json").is_file():
        from maskx.data.visual_genome import VisualGenomeDataset

        return VisualGenomeDataset(p, check_files=check_files), "vg"
    if p.is_dir() and (p / "annotations.json").is_file():
        return CocoDataset.from_dir(p, check_files=check_files), "coco"
    if p.is_file() and p.suffix == ".json":
        image_dir = Path(images) if images else p.parent / "images"
        return CocoDataset(image_dir, p, check_files=check_files), "coco"
    raise DatasetError(f"{p}: not a dataset folder. Expected annotations.json + images/ (COCO format, e.g. "
                       "from `python -m maskx data synth`), a COCO annotations .json file, or a Visual Genome "
                       "folder with image_data.json and objects.json")
