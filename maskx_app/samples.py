"""The app's sample images: which val images the pages offer first, and at what size they are
rendered when the val folder is absent. The release step saves the shipped model's masks on these
(``examples.json``), so both read these numbers from here.

The shipped 3000-class model's samples are picked by ``pick_sample_ids``, a rule on the annotations
alone (never on the model's predictions): the first val images holding a set-B object of a class
the training split has at least ``SAMPLE_MIN_TRAIN`` instances of, so a sample shows what Figure 5
of the paper shows (set-B objects with masks) for classes the detector had a chance to learn.
``python -m maskx ship`` records the ids it picked in ``examples.json`` (``made_with.image_ids``),
where the app reads them.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

SAMPLE_IMAGES = 8  # how many samples a page offers (the study's saved examples are the first 8 val images)
SAMPLE_SIZE = 256  # side of a rendered sample: val image k + 1 is render(1, k, SAMPLE_SIZE)
SAMPLE_MIN_TRAIN = 10  # a sample's set-B object is of a class with at least this many training instances


def training_counts(train_annotations: Iterable[dict]) -> Counter:
    """{category id: training instances} of a COCO ``annotations`` list."""
    return Counter(int(a["category_id"]) for a in train_annotations)


def pick_sample_ids(val: dict, train_counts: dict, set_a_ids: Iterable[int], n: int = SAMPLE_IMAGES,
                    min_train: int = SAMPLE_MIN_TRAIN) -> list[int]:
    """The ids of the first ``n`` images of COCO-format ``val`` (by id) with at least one object of a
    set-B class (not in ``set_a_ids``) that has ``min_train`` or more instances in ``train_counts``; where
    fewer qualify (a tiny dataset), the first other images follow them."""
    a_ids = {int(i) for i in set_a_ids}
    eligible = {int(a["image_id"]) for a in val["annotations"]
                if int(a["category_id"]) not in a_ids and train_counts.get(int(a["category_id"]), 0) >= min_train}
    others = [int(im["id"]) for im in sorted(val.get("images", []), key=lambda im: im["id"]) if im["id"] not in eligible]
    return (sorted(eligible) + others)[:n]


# The app's default score threshold. A 3001-way softmax spreads a detection's probability over
# similar classes (the shipped model's set-B detections rarely score 0.5), so the Segment page opens
# at this value; its slider goes from 0 to 1. The release step counts its samples at this value.
DEFAULT_SCORE = 0.3
SAMPLE_RULE = (f"the first {SAMPLE_IMAGES} val images (by id) with a set-B object of a class with at least "
               f"{SAMPLE_MIN_TRAIN} training instances (maskx_app.samples.pick_sample_ids)")


def saved_samples(model_dir, n: int = SAMPLE_IMAGES) -> tuple[list[int], str]:
    """(ids, rule): the sample image ids a model folder's ``examples.json`` names (``made_with.image_ids``,
    written by ``python -m maskx ship``) and the rule it says they were picked by ("" if it says none);
    the first ``n`` val images and "" when it names no ids."""
    import json
    from pathlib import Path

    try:
        made_with = json.loads((Path(model_dir) / "examples.json").read_text())["made_with"]
        ids = made_with["image_ids"]
        if isinstance(ids, list) and ids and all(isinstance(i, int) for i in ids):
            rule = made_with.get("rule")
            return ids, rule if isinstance(rule, str) else ""
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return list(range(1, n + 1)), ""


def saved_sample_ids(model_dir, n: int = SAMPLE_IMAGES) -> list[int]:
    """The sample image ids of ``saved_samples``."""
    return saved_samples(model_dir, n)[0]
