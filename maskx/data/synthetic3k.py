"""The embedded 3000-class world (paper §5 in miniature): boxes for all, masks for the 80.

``python -m maskx data synth3k --out DIR --size tiny|default`` writes ``DIR/train`` and
``DIR/val``, each ``annotations.json`` + ``images/`` (COCO format, like ``synthetic``). Two
generator versions (``VERSIONS``) stay drawable; every function takes ``version`` (default
``GENERATOR_VERSION``, the one the shipped model ``models/maskx-3k`` was trained on):

- version 1: classes from ``vocab3k`` (3000 = 10 families x 20 base shapes x 15 attribute
  combinations); set A = the 80 classes of the 80-class world version 3, same ids, names, shapes
  and looks. Scenes drawn by ``synthetic.render_scene`` (backgrounds, clutter, own-look patches,
  occlusion, blur, noise, JPEG) with 2-8 objects per image (4.85 drawn on average), radius 6-20 %
  of the image. What tells its classes apart is detail a detector at 256 px barely encodes, so
  their detection weights carry no similarity structure (issue 31);
- version 2: ``attribute3k`` (3000 = 25 bodies x 5 patterns x 8 hues x 3 proportions, classes
  made of visual attributes shared across classes); set A = the 80 classes of the 80-class world
  version 4 (``attribute_world`` "v4b"), same ids, names, attributes and looks; that world's
  crowded scene and object sizes with 2-8 objects per image (4.7 kept on average);
- both: classes sampled from ``vocab3k.class_weights3k`` (Zipf, exponent 0.7), A at frequent ranks;
- train (seed 0): every instance has a box; only set-A instances have a mask. A set-B
  instance is written WITHOUT ``segmentation`` and with ``"has_mask": false`` (maskx's
  encoding of a box-only instance, as VG's objects are; ``CocoDataset`` loads it with
  ``has_mask=False``), its ``area`` being the box's;
- val (seed 1): masks for every instance, so mask AP on set B is measurable.

``info`` records ``set_A_category_ids`` (split name ``coco80`` in ``splits``), ``masks``
("set_A" or "all"), ``generator_version`` and the shared scene code's ``scene_version``; version 2
also ``set_A_world`` (the 80-class attribute world its set A comes from).

Sizes: "default" = 12 000 train + 1000 val images at 256 px (~350 MB): ~58k boxes, median class 11
training instances (version 2). Set B's naming is bounded by its rare classes' examples: with
6000 images (median 6) more than half of B's val objects were of classes seen at most ten times,
and the box head named B 27 % / 51 % (top-1 / top-5) against 31 % / 59 % with 12 000 images in the
same number of steps (docs/model-3k-design.md §14). The val part holds ~5k instances of ~1.9k
classes (AP averages over the classes present). Training and generation rates: docs/code-notes.md.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import attribute3k, synthetic, vocab3k
from .shapes import FAMILIES
from .synthetic import _encode_instance, encode_jpeg, check_generate_args, render_scene, summarize, write_dataset
from .vocab3k import NUM_CLASSES, class_weights3k

# the version drawn by default: the one the shipped model (models/maskx-3k) was trained on
GENERATOR_VERSION = 2
# version -> the module that defines its 3000 classes; frozen entries never change, a changed drawing
# is a new version (the 80-class data has its own versions, ``embedded``)
VERSIONS = {1: vocab3k, 2: attribute3k}
SIZES = {
    "tiny": {"train": 32, "val": 16, "image_size": 128},
    "default": {"train": 12000, "val": 1000, "image_size": 256},
}
OBJECTS_PER_IMAGE = ((2, 3, 4, 5, 6, 7, 8), (0.10, 0.15, 0.20, 0.20, 0.15, 0.10, 0.10))
RADIUS_RANGE = (0.06, 0.20)
PARTS = (("train", 0, "set_A"), ("val", 1, "all"))  # (part, seed, which instances get masks)


def check_version(version: int) -> int:
    if version not in VERSIONS:
        raise ValueError(f"3000-class generator version must be one of {sorted(VERSIONS)}, got {version!r}")
    return version


def categories3k(version: int = GENERATOR_VERSION) -> list[dict]:
    """``version``'s 3000 COCO-format categories (set A first, then B; ``attributes``, ``frequency_rank``)."""
    return VERSIONS[check_version(version)].categories3k()


def set_a_category_ids(version: int = GENERATOR_VERSION) -> list[int]:
    """The 80 set-A category ids (COCO's) of ``version``'s world."""
    return VERSIONS[check_version(version)].set_a_category_ids()


def render3k(seed: int, index: int, size: int, version: int = GENERATOR_VERSION
             ) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Image ``index`` of the 3000-class world ``version`` with ``seed``.

    Returns the image [S, S, 3] uint8 and a list of (class index 0..2999, visible mask [S, S] bool);
    class index k is ``categories3k(version)[k]``.
    """
    if check_version(version) == 2:
        return attribute3k.render(seed, index, size, version)
    weights = class_weights3k()
    fams = [FAMILIES[c.family] for c in vocab3k.classes()]
    counts, probs = OBJECTS_PER_IMAGE
    return render_scene(np.random.default_rng([seed, index, NUM_CLASSES, version]), size,
                        count=lambda rng: int(rng.choice(counts, p=probs)),
                        pick=lambda rng: int(rng.choice(NUM_CLASSES, p=weights)),
                        family_of=fams.__getitem__, outline=vocab3k.outline, radius_range=RADIUS_RANGE)


def _make_image3k(job: tuple[int, int, int, str, int, str]) -> tuple[dict, list[dict]]:
    seed, index, size, masks, version, images_dir = job
    pixels, instances = render3k(seed, index, size, version)
    image_id = index + 1
    name = f"{image_id:06d}.jpg"
    Path(images_dir, name).write_bytes(encode_jpeg(pixels))
    cls = VERSIONS[version].classes()
    anns = []
    for k, (c, mask) in enumerate(instances):
        rle, area, bbox = _encode_instance(mask)
        ann = {"id": image_id * 100 + k, "image_id": image_id, "category_id": cls[c].category_id,
               "area": area, "bbox": bbox, "iscrowd": 0}
        if masks == "all" or cls[c].set_a:
            ann["segmentation"] = rle
        else:
            ann.update(area=bbox[2] * bbox[3], has_mask=False)
        anns.append(ann)
    return {"id": image_id, "file_name": name, "width": size, "height": size}, anns


def generate3k(out_dir: str | os.PathLike, num_images: int, seed: int = 0, image_size: int = 256,
               masks: str = "set_A", workers: int = 1, overwrite: bool = False, progress: bool = False,
               version: int = GENERATOR_VERSION) -> dict:
    """Write one part of the 3000-class world ``version`` to ``out_dir`` atomically; returns ``summarize3k``.

    ``masks``: "set_A" (train: set-B instances box-only) or "all" (val: every instance masked).
    """
    check_version(version)
    check_generate_args(num_images, image_size)
    if masks not in ("set_A", "all"):
        raise ValueError(f"masks must be 'set_A' or 'all', got {masks!r}")
    voc_like = synthetic.voc_like_category_ids() if version == 1 else attribute3k.voc_like_category_ids()
    info = {"description": "maskx embedded 3000-class synthetic dataset", "generator": "maskx.data.synthetic3k",
            "generator_version": version, "scene_version": synthetic.SCENE_VERSION,
            "seed": seed, "image_size": image_size, "num_images": num_images, "masks": masks,
            "set_A_category_ids": set_a_category_ids(version),
            "voc_like_category_ids": voc_like,
            "box_only": 'annotations with "has_mask": false have a box and no segmentation'}
    if version == 2:
        info["set_A_world"] = attribute3k.WORLD
    jobs = [(seed, i, image_size, masks, version) for i in range(num_images)]
    return summarize3k(write_dataset(out_dir, jobs, _make_image3k, info, categories3k(version), workers, overwrite,
                                     progress))


def summarize3k(data: dict) -> dict:
    """``synthetic.summarize`` plus set A/B instance and mask counts and the class-frequency tail."""
    out = summarize(data)
    out.pop("voc_like_instances", None)
    a_ids = set(data.get("info", {}).get("set_A_category_ids", []))
    anns = data["annotations"]
    counts: dict[int, int] = {}
    for a in anns:
        counts[a["category_id"]] = counts.get(a["category_id"], 0) + 1
    by_rank = sorted(data["categories"], key=lambda c: c.get("frequency_rank", 0))
    out.update({
        "set_A_instances": sum(a["category_id"] in a_ids for a in anns),
        "set_B_instances": sum(a["category_id"] not in a_ids for a in anns),
        "instances_with_mask": sum("segmentation" in a for a in anns),
        "classes_present": len(counts),
        "instances_top100_ranks": sum(counts.get(c["id"], 0) for c in by_rank[:100]),
        "instances_last1000_ranks": sum(counts.get(c["id"], 0) for c in by_rank[-1000:]),
        "scene_version": _scene_version(data.get("info", {})),
    })
    return out


def _scene_version(info: dict):
    """The scene code's version of a part's ``info``: its ``scene_version``; else 1 where it records
    only the 80-class generator's version (``foundation_generator_version``) and that is 1, whose
    scene code is scene version 1; else None."""
    return info.get("scene_version", 1 if info.get("foundation_generator_version") == 1 else None)


def _is_current(ann: Path, spec: dict, part: str, masks: str, version: int) -> bool:
    if not ann.is_file():
        return False
    info = json.loads(ann.read_text()).get("info", {})
    return (info.get("generator") == "maskx.data.synthetic3k" and info.get("generator_version") == version
            and _scene_version(info) == synthetic.SCENE_VERSION
            and info.get("num_images") == spec[part] and info.get("image_size") == spec["image_size"]
            and info.get("masks") == masks)


def ensure_dataset3k(root: str | os.PathLike, size: str = "default", workers: int = 2,
                     progress: bool = True, version: int = GENERATOR_VERSION) -> dict:
    """``root/train`` (seed 0, set-A masks) and ``root/val`` (seed 1, all masks) at the named ``SIZES``
    entry, generated unless already there from ``version`` and current; returns {part: annotations path}."""
    check_version(version)
    if size not in SIZES:
        raise ValueError(f"unknown dataset size {size!r}; choose one of {sorted(SIZES)}")
    spec = SIZES[size]
    masks_of = {part: masks for part, _, masks in PARTS}
    return synthetic.ensure_parts(
        root, [(part, seed) for part, seed, _ in PARTS],
        lambda ann, part, seed: _is_current(ann, spec, part, masks_of[part], version),
        lambda d, part, seed: generate3k(d, spec[part], seed=seed, image_size=spec["image_size"], masks=masks_of[part],
                                         workers=workers, overwrite=True, progress=progress, version=version),
        lambda part, seed: f"3000 classes, {spec[part]} images, {spec['image_size']} px, seed {seed}, "
                           f"masks: {masks_of[part]}, generator version {version}")
