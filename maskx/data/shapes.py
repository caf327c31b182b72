"""Silhouette families of the embedded dataset: 10 families x 8 classes = 80 categories.

Every class is one parameter vector of its family's parametric outline. A shape is a list of
``(vertices [V, 2], fill)`` rings in unit coordinates (the outline fits in [-1, 1]^2), drawn
in order: ``fill=1`` adds the ring, ``fill=0`` cuts it out (holes, a crescent's bite).

Why families: the paper's question (does knowing the class help predict its mask?) needs
classes whose silhouettes differ in ways local pixels cannot reveal (a boundary hidden in a
similar-coloured background, an occluder), and set-B classes that share structure with set-A
classes, as real categories do: a family's classes share one parametric outline and one look.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Ring = tuple[np.ndarray, int]


def _circle(n: int = 64, rx: float = 1.0, ry: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _radial(r: np.ndarray) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, len(r), endpoint=False)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def star(points: float, inner: float) -> list[Ring]:
    n = int(points)
    t = np.arange(2 * n) * math.pi / n - math.pi / 2
    r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return [(np.stack([r * np.cos(t), r * np.sin(t)], 1), 1)]


def gear(teeth: float, depth: float, hole: float) -> list[Ring]:
    t = np.linspace(0, 2 * math.pi, 360, endpoint=False)
    square = np.clip(np.sin(int(teeth) * t) * 4.0, -1, 1)  # flat-topped teeth
    rings = [(_radial(1.0 - depth * (0.5 - 0.5 * square)), 1)]
    if hole > 0:
        rings.append((_circle(48, hole, hole), 0))
    return rings


def tile(sides: float, aspect: float) -> list[Ring]:
    n = int(sides)
    t = np.arange(n) * 2 * math.pi / n - math.pi / 2
    return [(np.stack([np.cos(t) * aspect, np.sin(t)], 1), 1)]


def cross(arm: float, stretch: float, diagonal: float) -> list[Ring]:
    a, s = arm, stretch
    pts = np.array([[-a, -1], [a, -1], [a, -a], [s, -a], [s, a], [a, a], [a, 1], [-a, 1],
                    [-a, a], [-s, a], [-s, -a], [-a, -a]], dtype=float)
    if diagonal:
        c = math.cos(math.pi / 4)
        pts = pts @ np.array([[c, -c], [c, c]])
    return [(pts, 1)]


def moon(offset: float, bite: float) -> list[Ring]:
    return [(_circle(), 1), (_circle(64, bite, bite, cx=offset, cy=-0.1 * offset), 0)]


def donut(hole: float, shift: float, aspect: float) -> list[Ring]:
    return [(_circle(64, aspect, 1.0), 1), (_circle(48, hole * aspect, hole, cx=shift), 0)]


def arrow(head_w: float, head_len: float, shaft: float) -> list[Ring]:
    y0 = 1 - 2 * head_len
    pts = np.array([[0, 1], [head_w, y0], [shaft, y0], [shaft, -1], [-shaft, -1], [-shaft, y0],
                    [-head_w, y0]], dtype=float)
    return [(pts, 1)]


def flower(petals: float, depth: float, aspect: float) -> list[Ring]:
    t = np.linspace(0, 2 * math.pi, 360, endpoint=False)
    r = (1 - depth) + depth * np.abs(np.cos(int(petals) * t / 2)) ** 0.6
    pts = _radial(r)
    return [(pts * [aspect, 1.0], 1)]


# Block letters on a 5x5 grid of cells; 1 = filled.
_LETTERS = {
    "L": ["10000", "10000", "10000", "10000", "11111"],
    "T": ["11111", "00100", "00100", "00100", "00100"],
    "U": ["10001", "10001", "10001", "10001", "11111"],
    "H": ["10001", "10001", "11111", "10001", "10001"],
    "E": ["11111", "10000", "11110", "10000", "11111"],
    "F": ["11111", "10000", "11110", "10000", "10000"],
    "C": ["11111", "10000", "10000", "10000", "11111"],
    "Z": ["11111", "00010", "00100", "01000", "11111"],
}


def block(letter: str, thickness: float) -> list[Ring]:
    """A block letter as one square ring per filled cell (cells widened by ``thickness``)."""
    rings = []
    rows = _LETTERS[letter]
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            if cell == "1":
                x0, y0 = -1 + j * 0.4, -1 + i * 0.4
                g = 0.2 * (1 - thickness)
                rings.append((np.array([[x0 - g, y0 - g], [x0 + 0.4 + g, y0 - g],
                                        [x0 + 0.4 + g, y0 + 0.4 + g], [x0 - g, y0 + 0.4 + g]]), 1))
    # keep the outline inside [-1, 1]^2 whatever the padding
    scale = 1.0 / (1.0 + 0.2 * (1 - thickness))
    return [(np.clip(v * scale, -1, 1), f) for v, f in rings]


def pebble(exponent: float, aspect: float) -> list[Ring]:
    t = np.linspace(0, 2 * math.pi, 180, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    p = 2.0 / exponent
    x = np.sign(c) * np.abs(c) ** p * aspect
    y = np.sign(s) * np.abs(s) ** p
    return [(np.stack([x, y], 1), 1)]


# Outlines of the bodies the 3000-class world (``attribute3k``) adds to the 80-class attribute world's:
# each tells itself apart by its silhouette as a whole (holes, arms, a waist, a missing wedge), not by
# a count of small details.

def frame(sides: int, hole: float) -> list[Ring]:
    """A regular polygon (``tile``) with a concentric hole of the same polygon, ``hole`` times its size."""
    (v, _), = tile(sides, 1.0)
    return [(v, 1), (v * hole, 0)]


def window(pane: float) -> list[Ring]:
    """The square [-1, 1]^2 with 2 x 2 square panes of side ``pane`` cut out, bars between them of equal width."""
    bar = (2 - 2 * pane) / 3
    rings = [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float), 1)]
    for x0 in (-1 + bar, bar / 2):
        for y0 in (-1 + bar, bar / 2):
            rings.append((np.array([[x0, y0], [x0 + pane, y0], [x0 + pane, y0 + pane], [x0, y0 + pane]]), 0))
    return rings


def eight(hole: float) -> list[Ring]:
    """An upright oval (0.6 x 1) with two round holes of radius ``hole``, one above the other."""
    return [(_circle(64, 0.6, 1.0), 1), (_circle(48, hole, hole, cy=-0.45), 0), (_circle(48, hole, hole, cy=0.45), 0)]


def dumbbell(bell: float, bar: float) -> list[Ring]:
    """Two discs of radius ``bell`` at the ends of the x axis joined by a bar of half-height ``bar``."""
    c = 1 - bell
    return [(_circle(48, bell, bell, cx=-c), 1), (_circle(48, bell, bell, cx=c), 1),
            (np.array([[-c, -bar], [c, -bar], [c, bar], [-c, bar]]), 1)]


def bowtie(waist: float) -> list[Ring]:
    """Two triangles meeting at their tips (an hourglass), ``waist`` the half-width where they meet."""
    return [(np.array([[-0.9, -1], [0.9, -1], [waist, 0], [0.9, 1], [-0.9, 1], [-waist, 0]], dtype=float), 1)]


def chevron(thickness: float) -> list[Ring]:
    """A V of arms ``thickness`` thick (vertically), centred on its height."""
    pts = np.array([[-1, -0.6], [0, 0.4], [1, -0.6], [1, -0.6 + thickness], [0, 0.4 + thickness],
                    [-1, -0.6 + thickness]], dtype=float)
    pts[:, 1] -= (pts[:, 1].min() + pts[:, 1].max()) / 2
    return [(pts, 1)]


def arch(inner: float) -> list[Ring]:
    """The upper half of a ring of inner radius ``inner`` (a rainbow), centred on its height."""
    t = np.linspace(math.pi, 2 * math.pi, 33)
    half = np.stack([np.cos(t), np.sin(t)], 1)
    return [(np.concatenate([half, half[::-1] * inner]) + [0, 0.5], 1)]


def pie(gap: float) -> list[Ring]:
    """A disc with a wedge of ``gap`` of the full turn cut out, its opening to the right."""
    t = np.linspace(math.pi * gap, 2 * math.pi * (1 - gap / 2), 48)
    return [(np.concatenate([[[0.0, 0.0]], np.stack([np.cos(t), np.sin(t)], 1)]), 1)]


@dataclass(frozen=True)
class Family:
    name: str
    outline: object  # callable(*params) -> list[Ring]
    rotate: float  # max rotation in degrees applied per instance (180 = any)
    # appearance shared by the family (hue in [0, 1), texture kind): with a look per class, a head
    # trained on set A would learn A's colours rather than objectness, and fail on B for that reason alone
    hue: float
    texture: str
    variants: tuple  # 8 x (class name, params)


FAMILIES: tuple[Family, ...] = (
    Family("star", star, 180, 0.02, "speckle", (
        ("five star", (5, 0.42)), ("four star", (4, 0.36)), ("six star", (6, 0.50)),
        ("eight star", (8, 0.62)), ("three star", (3, 0.30)), ("seven star", (7, 0.45)),
        ("fat star", (5, 0.68)), ("thin star", (6, 0.26)))),
    Family("gear", gear, 180, 0.10, "stripes", (
        ("coarse gear", (6, 0.28, 0.0)), ("fine gear", (16, 0.12, 0.0)), ("hollow gear", (8, 0.22, 0.40)),
        ("deep gear", (9, 0.40, 0.0)), ("shallow gear", (11, 0.10, 0.0)), ("wheel gear", (12, 0.18, 0.55)),
        ("square gear", (4, 0.30, 0.0)), ("nut gear", (6, 0.16, 0.30)))),
    Family("tile", tile, 30, 0.17, "checker", (
        ("triangle tile", (3, 1.0)), ("square tile", (4, 1.0)), ("pentagon tile", (5, 1.0)),
        ("hexagon tile", (6, 1.0)), ("octagon tile", (8, 1.0)), ("narrow triangle tile", (3, 0.55)),
        ("narrow diamond tile", (4, 0.5)), ("wide hexagon tile", (6, 1.0 / 0.6)))),
    Family("cross", cross, 20, 0.33, "dots", (
        ("plus cross", (0.30, 1.0, 0)), ("thin cross", (0.14, 1.0, 0)), ("saltire cross", (0.25, 1.0, 1)),
        ("stubby cross", (0.42, 1.0, 0)), ("latin cross", (0.22, 0.55, 0)), ("wide cross", (0.25, 1.0, 0)),
        ("thin saltire cross", (0.13, 1.0, 1)), ("short cross", (0.30, 0.55, 0)))),
    Family("moon", moon, 180, 0.45, "gradient", (
        ("crescent moon", (0.55, 0.85)), ("thin moon", (0.35, 0.95)), ("half moon", (1.0, 1.0)),
        ("gibbous moon", (1.35, 1.0)), ("new moon", (0.25, 0.90)), ("bitten moon", (1.2, 0.6)),
        ("notched moon", (1.05, 0.35)), ("fat moon", (0.8, 0.75)))),
    Family("donut", donut, 90, 0.55, "speckle", (
        ("thin donut", (0.72, 0.0, 1.0)), ("thick donut", (0.35, 0.0, 1.0)), ("offset donut", (0.45, 0.35, 1.0)),
        ("oval donut", (0.50, 0.0, 0.6)), ("tiny donut", (0.18, 0.0, 1.0)), ("lopsided donut", (0.35, 0.45, 1.0)),
        ("wide donut", (0.55, 0.0, 1.0 / 0.65)), ("washer donut", (0.60, 0.0, 1.0)))),
    Family("arrow", arrow, 180, 0.64, "stripes", (
        ("broad arrow", (0.85, 0.45, 0.30)), ("thin arrow", (0.45, 0.30, 0.10)), ("stubby arrow", (0.95, 0.70, 0.45)),
        ("dart arrow", (0.55, 0.55, 0.16)), ("wide arrow", (1.0, 0.25, 0.20)), ("long arrow", (0.40, 0.18, 0.18)),
        ("spear arrow", (0.30, 0.40, 0.08)), ("flat arrow", (1.0, 0.40, 0.55)))),
    Family("flower", flower, 180, 0.76, "dots", (
        ("three flower", (3, 0.45, 1.0)), ("four flower", (4, 0.40, 1.0)), ("five flower", (5, 0.40, 1.0)),
        ("six flower", (6, 0.35, 1.0)), ("eight flower", (8, 0.30, 1.0)), ("deep four flower", (4, 0.70, 1.0)),
        ("oval five flower", (5, 0.35, 0.65)), ("shallow six flower", (6, 0.15, 1.0)))),
    Family("block", block, 15, 0.86, "checker", (
        ("l block", ("L", 1.0)), ("t block", ("T", 1.0)), ("u block", ("U", 1.0)), ("h block", ("H", 1.0)),
        ("e block", ("E", 1.0)), ("f block", ("F", 1.0)), ("c block", ("C", 1.0)), ("z block", ("Z", 1.0)))),
    Family("pebble", pebble, 180, 0.93, "gradient", (
        ("round pebble", (2.0, 1.0)), ("oval pebble", (2.0, 0.55)), ("square pebble", (5.0, 1.0)),
        ("diamond pebble", (1.0, 1.0)), ("spiky pebble", (0.6, 1.0)), ("slab pebble", (5.0, 0.5)),
        ("long pebble", (2.0, 0.35)), ("cushion pebble", (3.0, 0.8)))),
)

# The "voc-like" subset (20 classes), spread over the families as PASCAL VOC's 20 classes are over
# COCO's supercategories: vehicle 7 of 8, animal 6 of 10, furniture 4 of 6, then one each in
# person, kitchen and electronic, and none in the six others (outdoor, accessory, sports, food,
# appliance, indoor). So, as on COCO, set B (non-voc) holds whole families whose look an A-trained
# class-agnostic head never saw, beside unseen variants of seen families. With A spread over every
# family instead, A covers every look and an A-trained agnostic head segments B about as well as the
# oracle: no gap for transfer to close (paper §4.1's voc→non-voc split; docs/code-notes.md).
VOC_LIKE_VARIANTS = ((0, 1, 2, 3, 4, 5, 6), (0, 1, 2, 3, 4, 5), (0, 1, 2, 3), (0,), (0,), (0,), (), (), (), ())


def shape_rings(family: Family, params: tuple, rng: np.random.Generator, jitter: float) -> list[Ring]:
    """The family outline at ``params`` with numeric parameters jittered by ±``jitter`` (relative)."""
    p = []
    for v in params:
        if isinstance(v, (float,)) and v != 0:
            v = v * (1 + rng.uniform(-jitter, jitter))
        p.append(v)
    return family.outline(*p)


def place_rings(rings: list[Ring], center: tuple[float, float], radius: float, angle_deg: float,
                aspect: float) -> list[Ring]:
    """Rotate, scale (x by ``aspect``) and translate unit rings into pixel coordinates."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    out = []
    for v, fill in rings:
        w = (v * [aspect, 1.0]) @ rot.T * radius + np.asarray(center)
        out.append((w, fill))
    return out
