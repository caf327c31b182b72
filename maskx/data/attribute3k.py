"""The classes and drawing of the 3000-class world's version 2: every class a combination of visual
attributes shared across classes, as in the 80-class attribute world (``attribute_world``).

The paper's premise (§3.1) is that a class's detection weights "can be seen as an
appearance-based visual embedding of the class", so T can map a set-B class's weights to a mask
head that suits it; §5 trains on Visual Genome's 3000 most frequent synsets, which cover COCO's
80 classes (set A, with masks; the other 2920 are set B). Version 1 (``vocab3k``) gave its classes
no shared look a detector could use (they differ by star-point counts and small edge cuts that a
detector barely encodes at 256 px), so its detection weights carried no similarity structure
(issue 31). Here every class is

    body (25) x pattern (5) x hue (8) x proportion (3) = 3000 classes, e.g. "tapered red striped cup":

- set A = exactly the 80 classes of the 80-class world ``WORLD`` (embedded generator version 4):
  same COCO ids, names, attributes, and the same look, drawn by the same code
  (``attribute_world.look_family``, ``body_rings``, ``render_classes``); all are plain;
- bodies: the 80-class world's 10 (``attribute_world.BODIES``) and ``NEW_BODIES``, 15 coarse
  outlines told apart by the silhouette as a whole (holes, arms, a waist, a missing wedge), not by
  counts of small details (version 1's star points failed). No A class has a new body: the 1800
  B classes on them stay unlike anything in A in their mask, as much of Visual Genome is unlike
  COCO (the hard part of §5 kept); they share their pattern and hue with A classes;
- patterns and hues: the 80-class world's 5 and 8. No two classes differ by hues closer than that
  world's neighbours (0.07 apart), the closest the study's detector was measured on
  (docs/world-design.md); finer hues would make classes a 256 px detector confuses;
- proportion: plain, "stretched" (x ``STRETCH`` along the body's up axis) or "tapered" (narrowed
  at the top, widened at the bottom, its widest part moved down). These change the mask coarsely
  and are B-only (A is plain), as a Visual Genome class may be a known shape in an unknown form.
  Their strengths are ones under which no two of the 75 (body, proportion) shapes look more
  alike than the 80-class world's two most alike bodies, disc and square (IoU of two shapes
  scaled to one area, at the best-matching allowed rotation, averaged over rotations: 0.85 at
  64 px; every pair with a new body <= 0.78; ``shape_similarity`` in tests/test_attribute3k.py);
- so a rare B class's look is made of attributes frequent classes also have: every pattern and
  hue is worn by A classes, and the 1120 B classes on the 10 A bodies share a body with 8 A classes.

Frequencies: ``vocab3k``'s long tail (Zipf exponent 0.7 over frequency ranks; the A classes at
frequent ranks, in the 80-class world's own frequency order, as COCO's classes are among Visual
Genome's most frequent synsets (§5); B a fixed random permutation of the other ranks): a class's
frequency does not depend on its look. Scenes: ``SCENE``, the 80-class world's scene (clutter in the
classes' looks, the same object sizes) with more objects per image, to get more boxes per class from
the same images, and less occlusion, so that what tells 3000 classes apart stays visible.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from . import attribute_world
from .attribute_world import PATTERNS, body_rings, look_family, render_classes
from .shapes import Family, Ring, arch, block, bowtie, chevron, dumbbell, eight, frame, gear, pie, star, window
from .synthetic import COCO_CATEGORY_IDS
from .vocab3k import B_FIRST_ID, NUM_CLASSES, _densify, class_weights3k, frequency_ranks

WORLD = "v4b"  # set A: this attribute world's 80 classes (the 80-class embedded data's version 4)
HUES = attribute_world.WORLDS[WORLD]["hues"]
# bodies A never has: (name, outline, parameters, max rotation in degrees), as ``attribute_world.BODIES``;
# integer parameters are not jittered (counts), block letters are 0.9 thick so that jittered cells overlap
NEW_BODIES = (
    ("tee", block, ("T", 0.9), 15),
    ("cup", block, ("U", 0.9), 15),
    ("comb", block, ("E", 0.9), 15),
    ("gate", block, ("H", 0.9), 15),
    ("frame", frame, (4, 0.5), 20),
    ("delta", frame, (3, 0.45), 20),
    ("window", window, (0.7,), 20),
    ("eight", eight, (0.3,), 90),
    ("cog", gear, (6, 0.35, 0.0), 180),
    ("tripod", star, (3, 0.25), 180),
    ("chevron", chevron, (0.6,), 180),
    ("arch", arch, (0.5,), 180),
    ("bowtie", bowtie, (0.15,), 90),
    ("dumbbell", dumbbell, (0.4, 0.12), 180),
    ("pie", pie, (0.25,), 180),
)
BODIES = attribute_world.BODIES + NEW_BODIES
PROPORTIONS = ("", "stretched", "tapered")  # "": plain (every A class)
STRETCH = 1.6  # stretched: the up axis x 1.6 (disc -> 1.6:1, between disc and bar, 2.6:1)
TAPER = 0.4  # tapered: width x (1 - 0.4) at the top to x (1 + 0.4) at the bottom ...
TAPER_SHIFT = 0.3  # ... and the middle moved down by 0.3 of the half-height (a kite, not a diamond)
# the 80-class world's scene (object sizes, clutter, camouflage), so A's objects look as there, with
# 2-8 objects per image (values, probabilities; 4.85 drawn on average against its 4.06): 4.9 boxes kept
# per image, ~58k training boxes from the default size's 12 000 images; and less occluded than there
# (each object keeps >= 70 % of itself, one in five placed against another, against 40 % and one in
# two): under the 80-class world's occlusion a frozen ImageNet trunk shows a B class's body and
# proportion two times in three, and a head names B 24 % of the time; here 79 % / 73 % and 34 %
# (docs/model-3k-design.md §9). The 80-class world needs its occlusion for masks that depend on the
# class; this world needs its 3000 classes told apart first.
SCENE = {**attribute_world.SCENES[WORLD], "count": ((2, 3, 4, 5, 6, 7, 8), (0.10, 0.15, 0.20, 0.20, 0.15, 0.10, 0.10)),
         "style": {**attribute_world.SCENES[WORLD]["style"], "min_visible": 0.7, "cluster": 0.2}}


@dataclass(frozen=True)
class AttributeClass:
    index: int  # 0..2999; 0..79 are set A in the attribute world's class order
    category_id: int
    body: int  # index into ``BODIES``
    pattern: int  # index into ``attribute_world.PATTERNS``
    hue: int  # index into ``HUES``
    proportion: str  # one of ``PROPORTIONS``

    @property
    def set_a(self) -> bool:
        return self.index < 80

    @property
    def name(self) -> str:
        return " ".join(w for w in (self.proportion, HUES[self.hue][0], PATTERNS[self.pattern][0],
                                    BODIES[self.body][0]) if w)

    @property
    def attributes(self) -> list[str]:
        """``["body:cup", "pattern:striped", "hue:red"]`` (as ``attribute_world``), plus
        ``"proportion:stretched"`` or ``"proportion:tapered"`` where not plain."""
        out = [f"body:{BODIES[self.body][0]}", f"pattern:{PATTERNS[self.pattern][0]}", f"hue:{HUES[self.hue][0]}"]
        return out + ([f"proportion:{self.proportion}"] if self.proportion else [])


@functools.lru_cache(maxsize=1)
def classes() -> tuple[AttributeClass, ...]:
    """All 3000 classes: set A first (the attribute world's 80, its order and COCO's ids), then set B
    body by body, proportion, pattern, hue (category ids 101..3020), skipping A's combinations."""
    table = attribute_world.class_table(WORLD)
    out = [AttributeClass(k, COCO_CATEGORY_IDS[k], b, p, h, "") for k, (b, p, h) in enumerate(table)]
    in_a = set(table)
    for b in range(len(BODIES)):
        for prop in PROPORTIONS:
            for p in range(len(PATTERNS)):
                for h in range(len(HUES)):
                    if not prop and (b, p, h) in in_a:
                        continue
                    k = len(out)
                    out.append(AttributeClass(k, B_FIRST_ID + k - 80, b, p, h, prop))
    assert len(out) == NUM_CLASSES
    return tuple(out)


@functools.lru_cache(maxsize=1)
def families() -> tuple[Family, ...]:
    """Per class, the ``Family`` record ``render_scene`` reads (look, rotation, body); A's equal
    ``attribute_world.class_families(WORLD)``."""
    return tuple(look_family(BODIES[c.body], c.pattern, HUES[c.hue][1]) for c in classes())


def proportioned(rings: list[Ring], proportion: str) -> list[Ring]:
    """Unit rings reshaped by ``proportion`` (see ``PROPORTIONS``) and scaled back into [-1, 1]^2."""
    if not proportion:
        return rings
    if proportion not in PROPORTIONS:
        raise ValueError(f"proportion must be one of {PROPORTIONS}, got {proportion!r}")
    ys = np.concatenate([v[:, 1] for v, fill in rings if fill])
    y0, y1 = float(ys.min()), float(ys.max())
    out = []
    for v, fill in rings:
        v = np.array(v, dtype=np.float64)
        if proportion == "stretched":
            v[:, 1] *= STRETCH
        else:  # tapered: a curved map, so straight edges are resampled first
            v = _densify(v)
            t = 2 * (v[:, 1] - y0) / (y1 - y0) - 1  # -1 at the top, 1 at the bottom
            v[:, 0] *= 1 + TAPER * t
            v[:, 1] += TAPER_SHIFT * (1 - t * t) * (y1 - y0) / 2
        out.append((v, fill))
    scale = 1.0 / max(float(np.abs(v).max()) for v, _ in out)
    return [(v * scale, fill) for v, fill in out]


def outline(cls: int, rng: np.random.Generator) -> list[Ring]:
    """Unit rings of one instance of class ``cls``: its body (``attribute_world.body_rings``, the same
    calls and random draws as the 80-class world's for every plain class), then its proportion."""
    return proportioned(body_rings(families()[cls], rng), classes()[cls].proportion)


def render(seed: int, index: int, size: int, version: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Image ``index`` of seed ``seed`` of this world recorded as 3000-class ``version``: RGB uint8
    [S, S, 3] and [(class index 0..2999, visible mask [S, S] bool)], from
    ``np.random.default_rng([seed, index, 3000, version])``."""
    return render_classes(np.random.default_rng([seed, index, NUM_CLASSES, version]), size, families(),
                          class_weights3k(), SCENE, outline)


def categories3k() -> list[dict]:
    """The 3000 COCO-format categories: id, name, the body as supercategory, ``attributes`` and
    ``frequency_rank`` (1 = most frequent); A's first, equal to ``attribute_world.categories(WORLD)``
    but for the rank."""
    ranks = frequency_ranks()
    return [{"id": c.category_id, "name": c.name, "supercategory": BODIES[c.body][0], "attributes": c.attributes,
             "frequency_rank": int(ranks[c.index])} for c in classes()]


def set_a_category_ids() -> list[int]:
    return sorted(c.category_id for c in classes() if c.set_a)


def voc_like_category_ids() -> list[int]:
    """The 20 A classes that play PASCAL VOC's (``attribute_world``'s, on 6 of A's 10 bodies)."""
    return attribute_world.voc_like_category_ids()
