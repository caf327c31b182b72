"""The embedded 80-class dataset by generator version: the one front door to its worlds.

- version 4 (current): ``attribute_world``, world ``WORLDS[4]``: classes are combinations of
  visual attributes shared across the A/B split (a body, a pattern, a hue), designed and frozen
  on a design seed and split before the study ran (docs/world-design.md);
- version 3: ``synthetic``'s families world, kept drawable as the counter-example, where the
  classes' detection weights carry no similarity structure and transfer does nothing
  (docs/results-v3.md).

Every function takes ``version`` (default ``GENERATOR_VERSION``); ``ensure_dataset`` regenerates a
folder drawn by another version. Image ``i`` of seed ``s`` is the same whatever the image count.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import attribute_world, synthetic

GENERATOR_VERSION = 4
# version -> the attribute world it draws (None: synthetic's families world); frozen entries never change
WORLDS = {3: None, 4: "v4b"}


def check_version(version: int) -> int:
    if version not in WORLDS:
        raise ValueError(f"generator version must be one of {sorted(WORLDS)}, got {version!r}")
    return version


def categories(version: int = GENERATOR_VERSION) -> list[dict]:
    """The 80 COCO-format categories (COCO's ids); version 4's carry their ``attributes``."""
    world = WORLDS[check_version(version)]
    return synthetic.categories() if world is None else attribute_world.categories(world)


def voc_like_category_ids(version: int = GENERATOR_VERSION) -> list[int]:
    """The 20 category ids that play PASCAL VOC's classes (set A of voc→non-voc)."""
    world = WORLDS[check_version(version)]
    return synthetic.voc_like_category_ids() if world is None else attribute_world.voc_like_category_ids()


def render(seed: int, index: int, size: int, version: int = GENERATOR_VERSION
           ) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Image ``index`` of seed ``seed``: RGB uint8 [S, S, 3] and [(class index 0..79, visible mask [S, S] bool)]."""
    world = WORLDS[check_version(version)]
    return synthetic.render(seed, index, size) if world is None else \
        attribute_world.render(seed, index, size, version, world)


def generate(out_dir: str | os.PathLike, num_images: int, seed: int = 0, image_size: int = 256,
             workers: int = 1, overwrite: bool = False, progress: bool = False,
             version: int = GENERATOR_VERSION) -> dict:
    """Write ``version``'s dataset (COCO format) to ``out_dir`` atomically; returns its summary."""
    world = WORLDS[check_version(version)]
    if world is None:
        return synthetic.generate(out_dir, num_images, seed, image_size, workers, overwrite, progress)
    return attribute_world.generate(out_dir, num_images, seed, image_size, version, world, workers, overwrite,
                                    progress)


def ensure_dataset(root: str | os.PathLike, size: str = "default", workers: int = 2, progress: bool = True,
                   version: int = GENERATOR_VERSION) -> dict:
    """``root/train`` (seed 0) and ``root/val`` (seed 1) at the named ``synthetic.SIZES`` entry,
    generated unless already there from ``version``; returns {part: annotations path}."""
    check_version(version)
    if size not in synthetic.SIZES:
        raise ValueError(f"unknown dataset size {size!r}; choose one of {sorted(synthetic.SIZES)}")
    spec = synthetic.SIZES[size]

    def is_current(ann: Path, part: str, seed: int) -> bool:
        if not ann.is_file():
            return False
        info = json.loads(ann.read_text()).get("info", {})
        return (info.get("generator_version") == version and info.get("num_images") == spec[part]
                and info.get("image_size") == spec["image_size"] and info.get("seed", seed) == seed)

    return synthetic.ensure_parts(
        root, (("train", 0), ("val", 1)), is_current,
        lambda d, part, seed: generate(d, spec[part], seed=seed, image_size=spec["image_size"], workers=workers,
                                       overwrite=True, progress=progress, version=version),
        lambda part, seed: f"{spec[part]} images, {spec['image_size']} px, seed {seed}, generator version {version}")
