"""Version 3 of the embedded dataset (the families world, kept as the counter-example; the
current version and the front door to every version is ``maskx.data.embedded``), and the
drawing, writing and encoding the embedded worlds share (``render_scene``, ``write_dataset``,
``write_image``, ``as_stored``, ``SIZES``).

``generate(out_dir, num_images, seed, image_size)`` writes ``out_dir/annotations.json`` and
``out_dir/images/NNNNNN.jpg``. Each image is drawn from ``np.random.default_rng([seed, i,
VERSION])``, so image ``i`` is the same whatever ``num_images`` is, and the same seed
gives the same bytes.

Design: the paper's question (does knowing the class help predict its mask? §3.1) needs data on
which a class-agnostic head trained on set A does not segment set B as well as the oracle, and
where what separates them is class knowledge, not an appearance shift between A and B (the
diagnostics show this version misses the second part: docs/world-design.md):
- 10 silhouette families x 8 classes (``shapes.FAMILIES``); the class sets the shape, while
  colour and texture are shared by the family (with per-instance jitter), so a head trained on
  A learns objectness rather than A's colours; the voc-like classes (set A of voc2nonvoc) crowd
  into a few families as VOC's do in COCO (``shapes.VOC_LIKE_VARIANTS``), so B has seen
  families' unseen shapes and wholly unseen families;
- hard scenes, since clean, high-contrast objects need no class knowledge (any head segments
  them): textured, low-frequency-noise backgrounds with clutter (random blobs, some wearing
  object textures), and 35 % of objects sit on a patch of their own family's look (low contrast);
- 1-5 objects per image, overlapping: the covered part is removed from the mask (COCO
  annotates visible extent); soft edges, global blur and pixel noise; JPEG like COCO.
- long-tailed class frequencies (fixed log-normal weights), so random splits differ in
  masks per class (paper Fig. 3);
- object sizes: radius log-uniform in ``RADIUS_RANGE``, whole objects in the frame
  (``CENTER_MARGIN``): about 22 % small, 65 % medium, 13 % large by COCO's area thresholds (COCO
  train: 41 / 34 / 24 %). Large objects are where an outline's detail (gear teeth, star points,
  holes) shows at the 28 x 28 mask resolution; whole objects, because a cut-off E block or star
  is no longer readable as its class when colour and texture are shared by the family.

``VERSION`` is recorded in ``info``; this world is frozen: its drawing never changes.
"""
from __future__ import annotations

import io
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pycocotools import mask as mask_utils

from ..atomic import atomic_dir
from .shapes import FAMILIES, VOC_LIKE_VARIANTS, place_rings, shape_rings

VERSION = 3  # this module's families world: the generator version it is recorded as (frozen)
# ``render_scene`` (backgrounds, clutter, own-look patches, occlusion, noise), shared with the
# 3000-class world: its own version, so a change to the 80-class recipe alone leaves that world be
SCENE_VERSION = 1
RADIUS_RANGE = (0.07, 0.40)  # object radius / image size, log-uniform: small to large by COCO's thresholds
CENTER_MARGIN = 1.0  # centres keep this x radius from the border: whole objects in the frame
# COCO 2017's 80 category ids: not contiguous, so code that assumes label == id breaks here too.
COCO_CATEGORY_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
                     24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47,
                     48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70,
                     72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)
SIZES = {  # named sizes used by tests, `make demo` and the study
    "tiny": {"train": 24, "val": 12, "image_size": 128},
    "default": {"train": 3000, "val": 500, "image_size": 256},
    # notebooks/0_paper_in_15_minutes.ipynb (study scale "lesson"): generated in seconds, enough
    # set-A masks per class for a mask head to learn in a few hundred steps
    "lesson": {"train": 600, "val": 100, "image_size": 128},
}
JPEG_QUALITY = 92
MIN_VISIBLE_FRACTION = 0.5  # an object may lose at most half of itself to later objects
TEXTURES = ("speckle", "stripes", "checker", "dots", "gradient")


def categories() -> list[dict]:
    """The 80 COCO-format categories of this world (real COCO ids; family as supercategory)."""
    cats = []
    for f, fam in enumerate(FAMILIES):
        for v, (name, _) in enumerate(fam.variants):
            cats.append({"id": COCO_CATEGORY_IDS[f * 8 + v], "name": name, "supercategory": fam.name})
    return cats


def voc_like_category_ids() -> list[int]:
    return sorted(COCO_CATEGORY_IDS[f * 8 + v] for f, vs in enumerate(VOC_LIKE_VARIANTS) for v in vs)


def class_weights() -> np.ndarray:
    """Fixed long-tailed sampling weights of the 80 classes (sum 1)."""
    w = np.random.default_rng(20171208).lognormal(0.0, 0.7, size=80)
    return w / w.sum()


# ---------------------------------------------------------------- drawing helpers

def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [-1, 1], shape [h, w, channels]."""
    grid = rng.uniform(0, 255, size=(cells, cells, channels)).astype(np.uint8)
    planes = [np.asarray(Image.fromarray(grid[..., c]).resize((w, h), Image.BICUBIC), np.float32)
              for c in range(channels)]
    return np.stack(planes, -1) / 127.5 - 1.0


def _texture(rng: np.random.Generator, kind: str, h: int, w: int, color: np.ndarray) -> np.ndarray:
    """An [h, w, 3] float texture in [0, 1] of the given kind around ``color``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dark = color * rng.uniform(0.55, 0.75)
    theta = rng.uniform(0, math.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    if kind == "stripes":
        t = (np.sin(u * 2 * math.pi / rng.uniform(4, 9) + rng.uniform(0, 6.3)) > 0).astype(np.float32)
    elif kind == "checker":
        k = rng.uniform(4, 8)
        t = ((np.floor(u / k) + np.floor(v / k)) % 2).astype(np.float32)
    elif kind == "dots":
        k = rng.uniform(5, 9)
        t = (((u % k) - k / 2) ** 2 + ((v % k) - k / 2) ** 2 < (k / 3.2) ** 2).astype(np.float32)
    elif kind == "gradient":
        t = (u - u.min()) / max(float(np.ptp(u)), 1.0)
    else:  # speckle
        t = (_smooth_noise(rng, h, w, max(2, min(h, w) // 3))[..., 0] > 0).astype(np.float32)
    tex = color[None, None] * (1 - t[..., None]) + dark[None, None] * t[..., None]
    return np.clip(tex + 0.06 * _smooth_noise(rng, h, w, 4, 3), 0, 1)


def _rasterize(rings, size: int, soften: float = 0.0) -> np.ndarray:
    """Anti-aliased coverage [size, size] in [0, 1] of pixel-coordinate rings (2x supersampled)."""
    canvas = Image.new("L", (2 * size, 2 * size), 0)
    draw = ImageDraw.Draw(canvas)
    for verts, fill in rings:
        draw.polygon([tuple(p) for p in (verts * 2).tolist()], fill=255 * fill)
    if soften > 0:
        canvas = canvas.filter(ImageFilter.GaussianBlur(2 * soften))
    return np.asarray(canvas.reduce(2), np.float32) / 255.0


def _paint(img: np.ndarray, alpha: np.ndarray, tex_fn) -> None:
    """Composite ``tex_fn(h, w)`` into ``img`` [S, S, 3] where ``alpha`` [S, S] > 0 (in place)."""
    ys, xs = np.nonzero(alpha > 0.003)
    if len(ys) == 0:
        return
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    a = alpha[y0:y1, x0:x1, None]
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + tex_fn(y1 - y0, x1 - x0) * a


def _family_color(rng: np.random.Generator, hue: float) -> np.ndarray:
    if rng.random() < 0.08:  # appearance correlates with the family, but not always
        hue = rng.random()
    return _hsv((hue + rng.uniform(-0.035, 0.035)) % 1.0, rng.uniform(0.45, 0.8), rng.uniform(0.5, 0.9))


# ---------------------------------------------------------------- one image

def render(seed: int, index: int, size: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Draw image ``index`` of this world's dataset with ``seed``.

    Returns the image [S, S, 3] uint8 and a list of (class index 0..79, visible mask [S, S] bool).
    """
    weights = class_weights()
    return render_scene(np.random.default_rng([seed, index, VERSION]), size,
                        count=lambda rng: int(rng.choice([1, 2, 3, 4, 5], p=[0.15, 0.3, 0.25, 0.18, 0.12])),
                        pick=lambda rng: int(rng.choice(80, p=weights)),
                        family_of=lambda cls: FAMILIES[cls // 8],
                        outline=_outline, radius_range=RADIUS_RANGE, margin=CENTER_MARGIN)


def _outline(cls: int, rng: np.random.Generator):
    fam = FAMILIES[cls // 8]
    return shape_rings(fam, fam.variants[cls % 8][1], rng, 0.06)


@dataclass(frozen=True)
class SceneStyle:
    """How crowded and camouflaged a scene is (``render_scene``); the defaults are the version-3 and
    3000-class worlds' scenes."""
    min_visible: float = MIN_VISIBLE_FRACTION  # an object may lose at most 1 - this to later objects
    clutter: tuple[int, int] = (2, 9)  # unlabelled blobs per image: integers in [low, high)
    own_look_patch: float = 0.35  # chance of a background patch of the object's own look behind it
    cluster: float = 0.0  # chance that an object is placed against an earlier one (so they overlap)


def render_scene(rng: np.random.Generator, size: int, count, pick, family_of, outline,
                 radius_range: tuple[float, float] = (0.07, 0.22), margin: float = 0.6,
                 clutter_looks: Optional[list[tuple[float, str]]] = None, style: SceneStyle = SceneStyle()
                 ) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One scene drawn from ``rng`` (the 80- and 3000-class worlds share it; see ``synthetic3k``).

    ``count(rng)`` -> number of objects to place, ``pick(rng)`` -> class index,
    ``family_of(cls)`` -> its ``Family`` (look and rotation), ``outline(cls, rng)`` -> unit rings.
    ``radius_range``: object radius as a fraction of ``size`` (log-uniform); ``margin``: centres
    keep ``margin * radius`` from the border (1.0: the object lies in the frame).
    Returns the image [S, S, 3] uint8 and a list of (class index, visible mask [S, S] bool).
    """
    img = np.empty((size, size, 3), np.float32)
    img[:] = _hsv(rng.random(), rng.uniform(0.05, 0.4), rng.uniform(0.3, 0.8))
    img += 0.18 * _smooth_noise(rng, size, size, int(rng.integers(3, 8)), 3)
    if rng.random() < 0.5:
        kind = TEXTURES[rng.integers(len(TEXTURES))]
        img = 0.75 * img + 0.25 * _texture(rng, kind, size, size, np.clip(img.mean((0, 1)), 0, 1))

    # layout first (masks decide occlusion), painting after
    objects = []  # (class, rings, full mask)
    for _ in range(count(rng)):
        cls = pick(rng)
        fam = family_of(cls)
        for _try in range(20):
            radius = size * math.exp(rng.uniform(math.log(radius_range[0]), math.log(radius_range[1])))
            center = rng.uniform(margin * radius, size - margin * radius, size=2)
            if style.cluster and objects and rng.random() < style.cluster:  # against an earlier object
                other = objects[int(rng.integers(len(objects)))][2]
                ys, xs = np.nonzero(other)
                angle, reach = rng.uniform(0, 2 * math.pi), radius * rng.uniform(0.5, 1.1)
                center = np.clip(np.array([xs.mean(), ys.mean()]) + reach * np.array([math.cos(angle), math.sin(angle)]),
                                 margin * radius, size - margin * radius)
            rings = place_rings(outline(cls, rng), center, radius,
                                rng.uniform(-fam.rotate, fam.rotate), rng.uniform(0.88, 1.12))
            full = _rasterize(rings, size) >= 0.5
            if full.sum() < 0.15 * radius * radius:
                continue
            if all((vis & ~full).sum() >= style.min_visible * f.sum() for _, _, f, vis in objects):
                for o in objects:
                    o[3] &= ~full
                objects.append([cls, rings, full, full.copy()])
                break

    # clutter: unlabelled blobs, a third wearing an object look (``clutter_looks``: (hue, texture) pairs;
    # default: the 10 families')
    looks = clutter_looks or [(f.hue, f.texture) for f in FAMILIES]
    for _ in range(int(rng.integers(*style.clutter))):
        r = size * rng.uniform(0.03, 0.2)
        c = rng.uniform(0, size, size=2)
        n = int(rng.integers(3, 9))
        t = np.sort(rng.uniform(0, 2 * math.pi, n))
        rr = r * rng.uniform(0.5, 1.0, n)
        verts = np.stack([c[0] + rr * np.cos(t), c[1] + rr * np.sin(t)], 1)
        alpha = _rasterize([(verts, 1)], size, soften=rng.uniform(0, 1.5)) * rng.uniform(0.5, 1.0)
        if rng.random() < 0.33:
            hue, kind = looks[rng.integers(len(looks))]
            color = _family_color(rng, hue)
        else:
            color, kind = _hsv(rng.random(), rng.uniform(0, 0.7), rng.uniform(0.2, 0.9)), TEXTURES[rng.integers(5)]
        _paint(img, alpha, lambda h, w, color=color, kind=kind: _texture(rng, kind, h, w, color))

    # a background patch of the object's own look: the boundary has to come from the shape prior
    looks = [(_family_color(rng, family_of(o[0]).hue), family_of(o[0]).texture) for o in objects]
    for (cls, rings, full, _), (color, kind) in zip(objects, looks):
        if rng.random() < style.own_look_patch:
            ys, xs = np.nonzero(full)
            cy, cx, r = ys.mean(), xs.mean(), 0.8 * math.sqrt(full.sum())
            blob = [(np.array([[cx + r * rng.uniform(0.9, 1.5) * math.cos(a), cy + r * rng.uniform(0.9, 1.5) * math.sin(a)]
                               for a in np.linspace(0, 2 * math.pi, 9, endpoint=False)]), 1)]
            shade = np.clip(color * rng.uniform(0.85, 1.15), 0, 1)
            _paint(img, _rasterize(blob, size, soften=2.0), lambda h, w, c=shade, k=kind: _texture(rng, k, h, w, c))
    for (cls, rings, full, _), (color, kind) in zip(objects, looks):
        alpha = _rasterize(rings, size, soften=rng.uniform(0.0, 1.2))
        _paint(img, alpha, lambda h, w, c=color, k=kind: _texture(rng, k, h, w, c))

    pil = Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8))
    pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    out = np.asarray(pil, np.float32) + rng.normal(0, rng.uniform(2, 9), size=(size, size, 3))
    instances = [(o[0], o[3]) for o in objects if o[3].sum() >= 16]
    return np.clip(out, 0, 255).astype(np.uint8), instances


def _encode_instance(mask: np.ndarray) -> tuple[dict, float, list[float]]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    area = float(mask_utils.area(rle))
    bbox = [float(x) for x in mask_utils.toBbox(rle)]
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, area, bbox


def encode_jpeg(pixels: np.ndarray) -> bytes:
    """``pixels`` [S, S, 3] uint8 as the dataset files store them (JPEG at ``JPEG_QUALITY``)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def as_stored(pixels: np.ndarray) -> np.ndarray:
    """A rendered image as its dataset file decodes ([S, S, 3] uint8): what a model sees of it in the
    data, so a rendered sample and the same image read from disk are one input."""
    return np.asarray(Image.open(io.BytesIO(encode_jpeg(pixels))).convert("RGB"))


def write_image(pixels: np.ndarray, instances: list[tuple[int, np.ndarray]], image_id: int, images_dir,
                category_ids) -> tuple[dict, list[dict]]:
    """Save ``pixels`` [S, S, 3] uint8 as ``images_dir/<image_id:06d>.jpg`` and return its COCO image entry
    and annotations: one per (class index, visible mask [S, S] bool) of ``instances``, category id
    ``category_ids[class index]``."""
    name = f"{image_id:06d}.jpg"
    Path(images_dir, name).write_bytes(encode_jpeg(pixels))
    anns = []
    for k, (cls, mask) in enumerate(instances):
        rle, area, bbox = _encode_instance(mask)
        anns.append({"id": image_id * 100 + k, "image_id": image_id, "category_id": category_ids[cls],
                     "segmentation": rle, "area": area, "bbox": bbox, "iscrowd": 0})
    return {"id": image_id, "file_name": name, "width": pixels.shape[1], "height": pixels.shape[0]}, anns


def _make_image(job: tuple[int, int, int, str]) -> tuple[dict, list[dict]]:
    seed, index, size, images_dir = job
    pixels, instances = render(seed, index, size)
    return write_image(pixels, instances, index + 1, images_dir, COCO_CATEGORY_IDS)


def generate(out_dir: str | os.PathLike, num_images: int, seed: int = 0, image_size: int = 256,
             workers: int = 1, overwrite: bool = False, progress: bool = False) -> dict:
    """Write this world's dataset to ``out_dir`` atomically (built in a temp folder, then renamed).

    Returns the dataset's summary (see ``summarize``).
    """
    check_generate_args(num_images, image_size)
    info = {"description": "maskx embedded synthetic dataset", "generator": "maskx.data.synthetic",
            "generator_version": VERSION, "seed": seed, "image_size": image_size,
            "num_images": num_images, "voc_like_category_ids": voc_like_category_ids()}
    return summarize(write_dataset(out_dir, [(seed, i, image_size) for i in range(num_images)], _make_image,
                                   info, categories(), workers, overwrite, progress))


def check_generate_args(num_images: int, image_size: int) -> None:
    if num_images < 1:
        raise ValueError(f"--images must be >= 1, got {num_images}")
    if not 32 <= image_size <= 4096:
        raise ValueError(f"--image-size must be in [32, 4096] pixels, got {image_size}")


def write_dataset(out_dir, jobs: list[tuple], make_image, info: dict, cats: list[dict], workers: int = 1,
                  overwrite: bool = False, progress: bool = False) -> dict:
    """Run ``make_image(job + (images_dir,)) -> (image entry, annotations)`` for every job into a temp
    folder beside ``out_dir``, write ``annotations.json``, then rename it to ``out_dir`` (atomic).
    Returns the COCO dict written."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        results = _run_jobs([(*j, str(tmp / "images")) for j in jobs], workers, progress, make_image)
        data = {
            "info": info,
            "licenses": [],
            "images": [r[0] for r in results],
            "annotations": [a for r in results for a in r[1]],
            "categories": cats,
        }
        (tmp / "annotations.json").write_text(json.dumps(data, separators=(",", ":")))
    return data


def _run_jobs(jobs, workers: int, progress: bool, make_image):
    from tqdm import tqdm

    if workers <= 1:
        return [make_image(j) for j in tqdm(jobs, disable=not progress, desc="images")]
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers) as pool:
        return list(tqdm(pool.imap(make_image, jobs, chunksize=4), total=len(jobs), disable=not progress,
                         desc="images"))


def ensure_parts(root, parts, is_current, make, describe) -> dict:
    """``root/<part>`` for each of ``parts`` (``(part, seed)`` pairs), made by ``make(folder, part, seed)``
    unless ``is_current(annotations path, part, seed)``; ``describe(part, seed)`` says what is made.
    Returns {part: annotations path}. The embedded worlds' ``ensure_*`` functions share this loop."""
    out = {}
    for part, seed in parts:
        folder = Path(root) / part
        ann = folder / "annotations.json"
        if not is_current(ann, part, seed):
            print(f"generating {folder} ({describe(part, seed)})", file=sys.stderr)
            make(folder, part, seed)
        out[part] = ann
    return out


def summarize(data: dict) -> dict:
    """Counts a user checks first: images, instances, classes, instances per class (min/median/max)."""
    counts = {c["id"]: 0 for c in data["categories"]}
    for a in data["annotations"]:
        counts[a["category_id"]] = counts.get(a["category_id"], 0) + 1
    per_class = np.array(list(counts.values()))
    voc = set(data.get("info", {}).get("voc_like_category_ids", []))
    return {
        "images": len(data["images"]),
        "instances": len(data["annotations"]),
        "categories": len(data["categories"]),
        "instances_per_image": round(len(data["annotations"]) / max(1, len(data["images"])), 2),
        "instances_per_class": {"min": int(per_class.min()), "median": float(np.median(per_class)),
                                "max": int(per_class.max())},
        "voc_like_instances": sum(counts[c] for c in voc if c in counts),
        "generator_version": data.get("info", {}).get("generator_version"),
    }
