"""Example instances of a chosen class, drawn fresh from the embedded 3000-class world, and the
masks a model makes for them given their true box and class (the app's Embeddings page).

Any of the 3000 classes can be shown this way, with no dataset on disk: most set-B classes never
appear on the few sample images, and a fresh clone has no val folder. A model whose class list is
the 3000-class world's (``world_of``) gets these; others fall back to the dataset's own examples.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import numpy as np

EXAMPLE_SEED = 3000  # examples are drawn from their own seed, not from the train (0) or val (1) images
EXAMPLE_SIZE = 256
EXAMPLE_RADIUS = (0.14, 0.24)  # of the image side: large enough to see the shape


@functools.lru_cache(maxsize=None)
def _world3k_names(version: int) -> tuple[str, ...]:
    from maskx.data.synthetic3k import categories3k

    return tuple(c["name"] for c in sorted(categories3k(version), key=lambda c: c["id"]))


def world_of(class_names: Sequence[str]) -> Optional[str]:
    """"3k-v<N>" when ``class_names`` are the 3000-class world version N's (in category-id order, as a
    model trained on it lists them), else None."""
    try:
        from maskx.data.synthetic3k import VERSIONS

        for version in VERSIONS:
            if tuple(class_names) == _world3k_names(version):
                return f"3k-v{version}"
    except ImportError:
        pass
    return None


def render_examples(world: str, class_name: str, count: int = 2, seed: int = 0
                    ) -> tuple[np.ndarray, list[np.ndarray]]:
    """One scene of ``world`` (``world_of``) holding ``count`` instances of ``class_name`` (fewer when one
    does not fit), drawn by that world's own code: the RGB image uint8 [S, S, 3] and each instance's
    visible mask bool [S, S]. The same arguments always draw the same scene."""
    from maskx.data.synthetic import render_scene

    if world == "3k-v1":
        from maskx.data.shapes import FAMILIES
        from maskx.data.vocab3k import classes, outline

        def family_of(k):
            return FAMILIES[classes()[k].family]
    elif world == "3k-v2":
        from maskx.data.attribute3k import classes, families, outline

        def family_of(k):
            return families()[k]
    else:
        raise ValueError(f"no renderer for world {world!r}")
    cls = {c.name: c for c in classes()}[class_name]
    rng = np.random.default_rng([EXAMPLE_SEED, cls.index, seed])
    rgb, instances = render_scene(rng, EXAMPLE_SIZE, count=lambda _r: count, pick=lambda _r: cls.index,
                                  family_of=family_of, outline=outline, radius_range=EXAMPLE_RADIUS, margin=1.0)
    return rgb, [m for _, m in instances]


def box_of(mask: np.ndarray) -> list[float]:
    """The tight xyxy box (pixel edges) of a non-empty bool mask."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0


def model_masks(predictor, rgb: np.ndarray, masks: list[np.ndarray], class_name: str
                ) -> list[tuple[list[float], np.ndarray, float]]:
    """For each ground-truth mask of ``class_name`` in ``rgb``: (its box, the mask ``predictor`` makes
    given that box and class, IoU with the ground truth). Detection is taken out, so the mask is the
    mask branch's alone: for a set-B class, what transfer (or the class-agnostic head) draws."""
    from maskx.gt_box_eval import masks_on_boxes

    if not masks:
        return []
    label = predictor.class_names.index(class_name) + 1
    boxes = [box_of(m) for m in masks]
    prob = masks_on_boxes(predictor, rgb, boxes, [label] * len(boxes)).numpy()
    pred = prob >= predictor.mask_threshold
    return [(b, p, iou(p, m)) for b, p, m in zip(boxes, pred, masks)]
