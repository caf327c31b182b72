"""The 3000 classes of the embedded 3000-class world: names, outlines, frequencies.

Every class is (family, base shape, edge attribute, proportion attribute):
- 10 families (``shapes.FAMILIES``) x 20 base shapes: the family's 8 classes of the 80-class
  set plus 12 new parameter vectors (or mirror images) of the same outline;
- edge attribute: none, "nicked" (a V cut at the top), "pierced" (a round hole at the deepest
  interior point), "wavy" (a rippled outline), "clipped" (the bottom 30 % cut off flat);
- proportion attribute: none, "stretched" (x 1.6 wide), "tapered" (narrow top, wide bottom).
200 bases x 5 x 3 = 3000 classes. The 80 plain original bases are set A, drawn exactly as in
``synthetic`` (same ids, names, outline call and random draws); the 2920 others are set B.

Looks (hue, texture) belong to the family, so set A's 80 classes wear every look B uses: what
separates a B class from its A relatives is shape only, which is the knowledge a class-aware
mask head can transfer (paper §3.1), and not an appearance that no A class shows, which no
transfer could bridge.

Frequencies are Zipf-like, p(rank r) ~ r^-0.7 (VG's synset counts also fall as a power law);
the A classes hold frequent ranks (drawn from the top 240, in the 80-class set's own order),
as COCO's classes are frequent among VG's 3000 synsets.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from .shapes import FAMILIES, Ring, shape_rings
from .synthetic import COCO_CATEGORY_IDS, _rasterize, class_weights

NUM_CLASSES = 3000
B_FIRST_ID = 101  # set-B category ids are 101..3020; set A keeps the 80 ids (COCO's) of ``synthetic``
ZIPF_EXPONENT = 0.7
A_RANK_POOL = 240
EDGES = ("", "nicked", "pierced", "wavy", "clipped")
PROPORTIONS = ("", "stretched", "tapered")

# 12 new bases per family: (name, outline parameters, flip: "" | "x" (mirror) | "y" (upside down))
EXTRA_BASES = {
    "star": (("nine star", (9, 0.55), ""), ("ten star", (10, 0.60), ""), ("twelve star", (12, 0.70), ""),
             ("sharp five star", (5, 0.25), ""), ("sharp four star", (4, 0.20), ""),
             ("sharp eight star", (8, 0.35), ""), ("blunt four star", (4, 0.60), ""),
             ("blunt three star", (3, 0.55), ""), ("blunt seven star", (7, 0.65), ""),
             ("thin ten star", (10, 0.35), ""), ("thin nine star", (9, 0.30), ""), ("fat three star", (3, 0.70), "")),
    "gear": (("tiny-tooth gear", (24, 0.08, 0.0), ""), ("five-tooth gear", (5, 0.35, 0.0), ""),
             ("seven-tooth gear", (7, 0.25, 0.0), ""), ("three-tooth gear", (3, 0.30, 0.0), ""),
             ("ten-tooth gear", (10, 0.28, 0.0), ""), ("hollow fine gear", (16, 0.12, 0.45), ""),
             ("hollow deep gear", (9, 0.40, 0.30), ""), ("ring gear", (20, 0.10, 0.70), ""),
             ("hub gear", (6, 0.28, 0.20), ""), ("hollow square gear", (4, 0.30, 0.40), ""),
             ("hollow coarse gear", (6, 0.28, 0.45), ""), ("deep fine gear", (14, 0.30, 0.0), "")),
    "tile": (("heptagon tile", (7, 1.0), ""), ("nonagon tile", (9, 1.0), ""), ("decagon tile", (10, 1.0), ""),
             ("wide triangle tile", (3, 1.6), ""), ("wide diamond tile", (4, 1.7), ""),
             ("narrow pentagon tile", (5, 0.55), ""), ("wide pentagon tile", (5, 1.6), ""),
             ("narrow hexagon tile", (6, 0.5), ""), ("narrow octagon tile", (8, 0.55), ""),
             ("wide octagon tile", (8, 1.6), ""), ("slim diamond tile", (4, 0.35), ""),
             ("slim triangle tile", (3, 0.35), "")),
    "cross": (("fat cross", (0.50, 1.0, 0), ""), ("stubby saltire cross", (0.42, 1.0, 1), ""),
              ("short saltire cross", (0.30, 0.55, 1), ""), ("latin saltire cross", (0.22, 0.55, 1), ""),
              ("slim short cross", (0.14, 0.55, 0), ""), ("fat saltire cross", (0.50, 1.0, 1), ""),
              ("bar cross", (0.25, 0.32, 0), ""), ("broad short cross", (0.40, 0.70, 0), ""),
              ("needle cross", (0.08, 1.0, 0), ""), ("needle saltire cross", (0.08, 1.0, 1), ""),
              ("slim latin cross", (0.12, 0.55, 0), ""), ("broad short saltire cross", (0.40, 0.70, 1), "")),
    "moon": (("sliver moon", (0.18, 0.97), ""), ("wide crescent moon", (0.55, 0.70), ""),
             ("quarter moon", (0.75, 0.95), ""), ("deep bitten moon", (1.0, 0.75), ""),
             ("small bite moon", (1.3, 0.45), ""), ("side bite moon", (1.45, 0.8), ""),
             ("thick crescent moon", (0.65, 0.80), ""), ("slim crescent moon", (0.45, 0.92), ""),
             ("chunk moon", (1.1, 0.5), ""), ("waning moon", (0.9, 0.9), ""),
             ("edge bite moon", (1.6, 0.9), ""), ("nibbled moon", (1.25, 0.3), "")),
    "donut": (("oval thick donut", (0.30, 0.0, 0.6), ""), ("oval thin donut", (0.70, 0.0, 0.6), ""),
              ("wide thick donut", (0.30, 0.0, 1.5), ""), ("wide thin donut", (0.70, 0.0, 1.5), ""),
              ("slightly offset donut", (0.45, 0.18, 1.0), ""), ("far offset donut", (0.30, 0.60, 1.0), ""),
              ("oval offset donut", (0.40, 0.30, 0.6), ""), ("small hole donut", (0.25, 0.0, 1.0), ""),
              ("hairline donut", (0.82, 0.0, 1.0), ""), ("offset thin donut", (0.65, 0.20, 1.0), ""),
              ("wide offset donut", (0.40, 0.35, 1.5), ""), ("narrow donut", (0.50, 0.0, 0.45), "")),
    "arrow": (("fat arrow", (0.90, 0.35, 0.45), ""), ("needle arrow", (0.25, 0.25, 0.06), ""),
              ("pointer arrow", (0.70, 0.50, 0.25), ""), ("short head arrow", (0.80, 0.15, 0.25), ""),
              ("long head arrow", (0.60, 0.80, 0.20), ""), ("wedge arrow", (0.95, 0.90, 0.30), ""),
              ("barb arrow", (0.65, 0.20, 0.10), ""), ("blunt arrow", (0.60, 0.35, 0.40), ""),
              ("chevron arrow", (1.0, 0.55, 0.12), ""), ("slim dart arrow", (0.40, 0.55, 0.10), ""),
              ("wide spear arrow", (0.50, 0.40, 0.08), ""), ("thick shaft arrow", (0.75, 0.30, 0.50), "")),
    "flower": (("seven flower", (7, 0.35, 1.0), ""), ("ten flower", (10, 0.25, 1.0), ""),
               ("twelve flower", (12, 0.20, 1.0), ""), ("deep three flower", (3, 0.75, 1.0), ""),
               ("deep five flower", (5, 0.65, 1.0), ""), ("deep six flower", (6, 0.60, 1.0), ""),
               ("shallow four flower", (4, 0.15, 1.0), ""), ("shallow eight flower", (8, 0.12, 1.0), ""),
               ("oval four flower", (4, 0.40, 0.60), ""), ("oval six flower", (6, 0.35, 0.60), ""),
               ("wide five flower", (5, 0.35, 1.5), ""), ("deep eight flower", (8, 0.55, 1.0), "")),
    "block": (("mirrored l block", ("L", 1.0), "x"), ("mirrored f block", ("F", 1.0), "x"),
              ("mirrored e block", ("E", 1.0), "x"), ("mirrored c block", ("C", 1.0), "x"),
              ("s block", ("Z", 1.0), "x"), ("upside-down t block", ("T", 1.0), "y"),
              ("upside-down u block", ("U", 1.0), "y"), ("upside-down l block", ("L", 1.0), "y"),
              ("bold l block", ("L", 0.5), ""), ("bold t block", ("T", 0.5), ""),
              ("bold h block", ("H", 0.5), ""), ("bold z block", ("Z", 0.5), "")),
    "pebble": (("egg pebble", (2.0, 0.75), ""), ("thin long pebble", (2.0, 0.22), ""),
               ("rounded square pebble", (3.5, 1.0), ""), ("boxy pebble", (8.0, 1.0), ""),
               ("spiky oval pebble", (0.6, 0.6), ""), ("diamond oval pebble", (1.0, 0.6), ""),
               ("star pebble", (0.4, 1.0), ""), ("flat slab pebble", (5.0, 0.3), ""),
               ("cushion oval pebble", (3.0, 0.5), ""), ("long diamond pebble", (1.0, 0.35), ""),
               ("boxy long pebble", (8.0, 0.4), ""), ("soft diamond pebble", (1.4, 1.0), "")),
}


@dataclass(frozen=True)
class ShapeClass:
    index: int  # 0..2999; 0..79 are set A in ``synthetic``'s order (family * 8 + variant)
    category_id: int
    name: str
    family: int  # index into ``FAMILIES``: the look (hue, texture) and rotation range
    base: str
    params: tuple
    flip: str
    edge: str
    proportion: str

    @property
    def set_a(self) -> bool:
        return self.index < 80

    @property
    def attributes(self) -> list[str]:
        return [a for a in (self.edge, self.proportion) if a]


@functools.lru_cache(maxsize=1)
def classes() -> tuple[ShapeClass, ...]:
    """All 3000 classes: set A first (index = family * 8 + variant, as ``synthetic``), then set B."""
    out = []
    for f, fam in enumerate(FAMILIES):
        for v, (name, params) in enumerate(fam.variants):
            out.append(ShapeClass(f * 8 + v, COCO_CATEGORY_IDS[f * 8 + v], name, f, name, params, "", "", ""))
    for f, fam in enumerate(FAMILIES):
        bases = [(n, p, "", True) for n, p in fam.variants] + [(n, p, fl, False) for n, p, fl in EXTRA_BASES[fam.name]]
        for base, params, flip, original in bases:
            for prop in PROPORTIONS:
                for edge in EDGES:
                    if original and not prop and not edge:
                        continue  # that is the set-A class
                    k = len(out)
                    name = " ".join(w for w in (edge, prop, base) if w)
                    out.append(ShapeClass(k, B_FIRST_ID + k - 80, name, f, base, params, flip, edge, prop))
    assert len(out) == NUM_CLASSES
    return tuple(out)


@functools.lru_cache(maxsize=1)
def frequency_ranks() -> np.ndarray:
    """[3000] int: each class's frequency rank (1 = most frequent), fixed."""
    rng = np.random.default_rng(3000)
    pool = np.arange(1, A_RANK_POOL + 1)
    p = pool ** -0.5
    a_ranks = np.sort(rng.choice(pool, size=80, replace=False, p=p / p.sum()))
    ranks = np.zeros(NUM_CLASSES, np.int64)
    ranks[np.argsort(-class_weights(), kind="stable")] = a_ranks  # A keeps the 80-class set's order
    ranks[80:] = rng.permutation(np.setdiff1d(np.arange(1, NUM_CLASSES + 1), a_ranks))
    return ranks


@functools.lru_cache(maxsize=1)
def class_weights3k() -> np.ndarray:
    """[3000] sampling probabilities (sum 1), Zipf-like in the frequency rank."""
    w = frequency_ranks().astype(np.float64) ** -ZIPF_EXPONENT
    return w / w.sum()


# ---------------------------------------------------------------- outlines

def _densify(v: np.ndarray, step: float = 0.04) -> np.ndarray:
    """A closed ring [V, 2] resampled so that no edge is longer than ``step`` (for the wavy edge)."""
    nxt = np.roll(v, -1, 0)
    out = []
    for a, b in zip(v, nxt):
        n = max(1, int(math.ceil(np.linalg.norm(b - a) / step)))
        out.append(a + (b - a) * np.arange(n)[:, None] / n)
    return np.concatenate(out)


def _reshape(rings: list[Ring], c: ShapeClass, scale: float = 1.0) -> list[Ring]:
    """Flip and proportion attribute, then ``scale`` (which fits the class into [-1, 1]^2)."""
    out = []
    for v, fill in rings:
        v = np.array(v, dtype=np.float64)
        if c.flip == "x":
            v[:, 0] = -v[:, 0]
        elif c.flip == "y":
            v[:, 1] = -v[:, 1]
        if c.proportion == "stretched":
            v[:, 0] *= 1.6
        elif c.proportion == "tapered":  # a curved map: straight edges must be resampled first
            v = _densify(v)
            v[:, 0] *= 1.0 + 0.5 * v[:, 1]
        out.append((v * scale, fill))
    return out


def _erode(m: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion of [n, n] bool (the border erodes away)."""
    e = np.zeros_like(m)
    e[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return e


@functools.lru_cache(maxsize=NUM_CLASSES)
def _edge_geometry(index: int) -> tuple[float, tuple]:
    """(scale into [-1, 1]^2, edge-cut parameters) of a class, from its unjittered outline."""
    c = classes()[index]
    rings = _reshape(FAMILIES[c.family].outline(*c.params), c)
    pts = np.concatenate([v for v, fill in rings if fill])
    scale = 1.0 / max(1.0, float(np.abs(pts).max()))
    pts = pts * scale
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    if c.edge == "nicked":  # V cut at the top, at the topmost vertex nearest the middle
        top = pts[pts[:, 1] <= y0 + 0.03 * (y1 - y0)]
        x = top[np.argmin(np.abs(top[:, 0])), 0]
        return scale, (float(x), float(y0), 0.2 * (x1 - x0), 0.4 * (y1 - y0))
    if c.edge == "clipped":
        return scale, (float(y1 - 0.3 * (y1 - y0)),)
    if c.edge == "pierced":  # the interior point farthest from the outline, by repeated erosion
        n = 64
        inside = _rasterize([((v * scale + 1) * n / 2, fill) for v, fill in rings], n) >= 0.5
        depth, core = 0, inside
        while (e := _erode(core)).any():
            core, depth = e, depth + 1
        ys, xs = np.nonzero(core)
        k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
        cx, cy = (xs[k] + 0.5) * 2 / n - 1, (ys[k] + 0.5) * 2 / n - 1
        return scale, (float(cx), float(cy), max(0.09, 0.6 * (depth + 0.5) * 2 / n))
    return scale, ()


def outline(cls: int, rng: np.random.Generator) -> list[Ring]:
    """Unit rings of one instance of class ``cls`` (its family's parameters jittered by ±6 %).

    Set-A classes make exactly the calls ``synthetic`` makes (same shapes, same random draws).
    """
    c = classes()[cls]
    rings = shape_rings(FAMILIES[c.family], c.params, rng, 0.06)
    if c.set_a:
        return rings
    scale, g = _edge_geometry(cls)
    rings = _reshape(rings, c, scale)
    if c.edge == "nicked":
        x, top, half, depth = g
        rings.append((np.array([[x - half, top - 0.3], [x + half, top - 0.3], [x, top + depth]]), 0))
    elif c.edge == "clipped":
        rings.append((np.array([[-3.0, g[0]], [3.0, g[0]], [3.0, 3.0], [-3.0, 3.0]]), 0))
    elif c.edge == "pierced":
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        rings.append((np.stack([g[0] + g[2] * np.cos(t), g[1] + g[2] * np.sin(t)], 1), 0))
    elif c.edge == "wavy":
        wavy = []
        for v, fill in rings:
            v = _densify(v)
            theta = np.arctan2(v[:, 1], v[:, 0])
            wavy.append((v * (1 + 0.12 * np.sin(9 * theta))[:, None], fill))
        rings = wavy
    return rings


def categories3k() -> list[dict]:
    """The 3000 COCO-format categories (family as supercategory, plus base, attributes, rank)."""
    ranks = frequency_ranks()
    return [{"id": c.category_id, "name": c.name, "supercategory": FAMILIES[c.family].name, "base": c.base,
             "attributes": c.attributes, "frequency_rank": int(ranks[c.index])} for c in classes()]


def set_a_category_ids() -> list[int]:
    return sorted(c.category_id for c in classes() if c.set_a)
