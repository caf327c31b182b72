"""An 80-class embedded world whose classes are combinations of shared visual attributes.

The paper's premise (§3.1) is that detection weights are an appearance embedding of the classes:
classes that look alike get alike weights, so T can map a set-B class's weights to a mask head
that suits it. In this world every class is one **body** (its silhouette, hence its mask), one
**pattern** and one **hue**, e.g. "red striped star". Attributes are shared across classes in
combinations, as a zebra shares a body with a horse and stripes with nothing in PASCAL VOC:

- 10 bodies x 8 classes each; every look (pattern, hue) is worn by exactly two classes of
  different bodies, so neither body nor look alone names a class and a detector must see both;
- bodies are coarse, distinct outlines a detector sees at 256 px (no counting of star points);
- the mask is the body: a class's mask is predictable from its attributes, and a B class whose
  body some A classes have gets a mask head those A classes trained;
- scenes (``synthetic.render_scene``, ``SCENES``): crowded, objects against each other, clutter
  wearing object looks: a box holds much of other objects, and which pixels are this object's
  depends on its class's look (its pattern and hue) as well as its body;
- the voc-like 20 classes sit on 6 of the 10 bodies (as PASCAL VOC's classes cover a few of
  COCO's supercategories), so the non-voc set keeps bodies no A class has: transfer cannot help
  there, as on COCO.

Each category records its ``attributes`` (``body:``, ``pattern:``, ``hue:``), which
``maskx.diagnostics`` reads to measure how far an embedding reflects them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .shapes import Family, arrow, block, cross, donut, moon, pebble, star, tile

# body: (name, outline, parameters, max rotation in degrees)
BODIES = (
    ("disc", pebble, (2.0, 1.0), 180),
    ("bar", pebble, (2.0, 0.38), 180),
    ("square", tile, (4, 1.0), 20),
    ("triangle", tile, (3, 1.0), 20),
    ("star", star, (5, 0.42), 180),
    ("cross", cross, (0.30, 1.0, 0), 20),
    ("crescent", moon, (0.55, 0.85), 180),
    ("ring", donut, (0.5, 0.0, 1.0), 90),
    ("arrow", arrow, (0.85, 0.45, 0.30), 180),
    ("ell", block, ("L", 1.0), 15),
)
# pattern: (adjective, texture kind of ``synthetic._texture``)
PATTERNS = (("mottled", "speckle"), ("striped", "stripes"), ("checkered", "checker"), ("dotted", "dots"),
            ("shaded", "gradient"))
# hue sets: 8 hues (v4a, v4b) put neighbours such as red/orange/pink 0.07-0.11 apart, which the
# study's detector confuses at 256 px; 5 hues (v4c) keep every pair >= 0.18 apart (jitter is +-0.035)
HUES_8 = (("red", 0.0), ("orange", 0.07), ("yellow", 0.15), ("green", 0.32), ("teal", 0.47), ("blue", 0.61),
          ("purple", 0.75), ("pink", 0.89))
HUES_5 = (("red", 0.0), ("yellow", 0.15), ("green", 0.33), ("blue", 0.6), ("purple", 0.79))
CLASSES_PER_BODY = 8
# the voc-like classes: (body index, how many of its classes), 20 in all on 6 of the 10 bodies
VOC_LIKE_BODIES = ((0, 4), (2, 4), (4, 3), (5, 3), (6, 3), (8, 3))
# Scene candidates of the design (docs/world-design.md): objects per image (values, probabilities), object
# radius / image size (log-uniform; whole objects in the frame), and how crowded and camouflaged
# (``synthetic.SceneStyle``). v4a: version 3's scene. v4b: crowded, as COCO's 7 objects per image, objects
# placed against each other so that a box holds much of other objects of other looks: which pixels are
# this object's then depends on its class's look.
SCENES = {
    "v4a": {"count": ((1, 2, 3, 4, 5), (0.15, 0.3, 0.25, 0.18, 0.12)), "radius": (0.09, 0.36), "style": {}},
    "v4b": {"count": ((2, 3, 4, 5, 6, 7), (0.15, 0.25, 0.25, 0.17, 0.1, 0.08)), "radius": (0.10, 0.32),
            "style": {"min_visible": 0.4, "clutter": (2, 7), "own_look_patch": 0.15, "cluster": 0.5}},
}
# The design's candidate worlds (docs/world-design.md): a hue set and a scene.
WORLDS = {"v4a": {"hues": HUES_8, "scene": "v4a"}, "v4b": {"hues": HUES_8, "scene": "v4b"},
          "v4c": {"hues": HUES_5, "scene": "v4b"}}
DEFAULT_WORLD = "v4c"
CLASS_TABLE_SEED = 20180601  # fixes which looks go with which bodies (part of the world's definition)


def class_table(world: str = DEFAULT_WORLD) -> list[tuple[int, int, int]]:
    """The 80 classes as (body, pattern, hue) indices, body-major (class k has body k // 8).

    A body's 8 classes wear 8 different looks (pattern, hue); every look is worn by the same number
    of classes (two with 8 hues: 40 looks) or by numbers that differ by at most one (3 or 4 with 5
    hues: 25 looks), always on different bodies."""
    hues = _world(world)["hues"]
    looks = [(p, h) for p in range(len(PATTERNS)) for h in range(len(hues))]
    copies = -(-len(BODIES) * CLASSES_PER_BODY // len(looks))
    rng = np.random.default_rng(CLASS_TABLE_SEED)
    for _ in range(1000):  # rejection: a draw where some body gets a look twice is redrawn
        order = [looks[i] for _ in range(copies) for i in rng.permutation(len(looks))]
        per_body = [order[b * CLASSES_PER_BODY:(b + 1) * CLASSES_PER_BODY] for b in range(len(BODIES))]
        if all(len(set(b)) == CLASSES_PER_BODY for b in per_body):
            return [(b, p, h) for b, group in enumerate(per_body) for p, h in group]
    raise RuntimeError("no class table found")  # not reached for these seeds (tested)


def _world(world: str) -> dict:
    if world not in WORLDS:
        raise ValueError(f"world must be one of {sorted(WORLDS)}, got {world!r}")
    return WORLDS[world]


def class_names(world: str = DEFAULT_WORLD) -> list[str]:
    hues = _world(world)["hues"]
    return [f"{hues[h][0]} {PATTERNS[p][0]} {BODIES[b][0]}" for b, p, h in class_table(world)]


def class_attributes(world: str = DEFAULT_WORLD) -> list[list[str]]:
    """Each class's visual attributes, ``["body:star", "pattern:striped", "hue:red"]``."""
    hues = _world(world)["hues"]
    return [[f"body:{BODIES[b][0]}", f"pattern:{PATTERNS[p][0]}", f"hue:{hues[h][0]}"]
            for b, p, h in class_table(world)]


def categories(world: str = DEFAULT_WORLD) -> list[dict]:
    """The 80 COCO-format categories: COCO's ids, the body as supercategory, the attributes."""
    from .synthetic import COCO_CATEGORY_IDS

    return [{"id": COCO_CATEGORY_IDS[k], "name": name, "supercategory": name.rsplit(" ", 1)[1], "attributes": attrs}
            for k, (name, attrs) in enumerate(zip(class_names(world), class_attributes(world)))]


def voc_like_category_ids() -> list[int]:
    from .synthetic import COCO_CATEGORY_IDS

    return sorted(COCO_CATEGORY_IDS[b * CLASSES_PER_BODY + j] for b, n in VOC_LIKE_BODIES for j in range(n))


def look_family(body: tuple, pattern: int, hue: float) -> Family:
    """The ``Family`` record ``render_scene`` reads for a class of ``body`` (a ``BODIES``-like entry:
    name, outline, parameters, max rotation) wearing ``PATTERNS[pattern]`` in ``hue`` ([0, 1))."""
    name, outline, params, rotate = body
    return Family(name, outline, rotate, hue, PATTERNS[pattern][1], ((name, params),))


def class_families(world: str = DEFAULT_WORLD) -> list[Family]:
    """Per class, the ``Family`` record ``render_scene`` reads: its outline, rotation and look."""
    hues = _world(world)["hues"]
    return [look_family(BODIES[b], p, hues[h][1]) for b, p, h in class_table(world)]


def body_rings(family: Family, rng: np.random.Generator) -> list:
    """Unit rings of one instance of ``family``'s body: its parameters jittered by +-6 %."""
    from .shapes import shape_rings

    return shape_rings(family, family.variants[0][1], rng, 0.06)


def render_classes(rng: np.random.Generator, size: int, families: Sequence[Family], weights: np.ndarray, scene: dict,
                   outline=None) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One scene drawn from ``rng`` of classes given by their ``families`` (look, rotation, body),
    sampled by ``weights``; ``scene``: a ``SCENES``-like entry; ``outline(cls, rng)`` -> unit rings
    (default: ``body_rings``). Clutter wears the classes' looks. Returns RGB uint8 [S, S, 3] and
    (class index, visible mask) pairs."""
    from .synthetic import SceneStyle, render_scene

    looks = sorted({(f.hue, f.texture) for f in families})
    counts, probs = scene["count"]
    return render_scene(rng, size,
                        count=lambda rng: int(rng.choice(counts, p=probs)),
                        pick=lambda rng: int(rng.choice(len(families), p=weights)),
                        family_of=families.__getitem__,
                        outline=outline or (lambda cls, rng: body_rings(families[cls], rng)),
                        radius_range=scene["radius"], margin=1.0, clutter_looks=looks,
                        style=SceneStyle(**scene["style"]))


def render(seed: int, index: int, size: int, version: int, world: str = DEFAULT_WORLD
           ) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Image ``index`` of the dataset with ``seed``: RGB uint8 [S, S, 3] and (class index, visible mask)."""
    from .synthetic import class_weights

    return render_classes(np.random.default_rng([seed, index, version]), size, class_families(world),
                          class_weights(), SCENES[_world(world)["scene"]])


def make_image(job: tuple[int, int, int, int, str, str]) -> tuple[dict, list[dict]]:
    """One image file and its annotations: ``job`` = (seed, index, size, version, world, images folder)."""
    from .synthetic import COCO_CATEGORY_IDS, write_image

    seed, index, size, version, world, images_dir = job
    pixels, instances = render(seed, index, size, version, world)
    return write_image(pixels, instances, index + 1, images_dir, COCO_CATEGORY_IDS)


def generate(out_dir, num_images: int, seed: int = 0, image_size: int = 256, version: int = 4, world: str = DEFAULT_WORLD,
             workers: int = 1, overwrite: bool = False, progress: bool = False) -> dict:
    """Write ``num_images`` images of this world drawn with ``seed`` to ``out_dir`` (COCO format,
    atomically); image ``i`` comes from ``np.random.default_rng([seed, i, version])``."""
    from .synthetic import check_generate_args, summarize, write_dataset

    check_generate_args(num_images, image_size)
    info = {"description": "maskx embedded synthetic dataset (classes as combinations of visual attributes)",
            "generator": "maskx.data.attribute_world", "generator_version": version, "seed": seed,
            "world": world, "image_size": image_size, "num_images": num_images,
            "voc_like_category_ids": voc_like_category_ids()}
    jobs = [(seed, i, image_size, version, world) for i in range(num_images)]
    return summarize(write_dataset(out_dir, jobs, make_image, info, categories(world), workers, overwrite, progress))
