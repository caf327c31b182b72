"""The attribute world (maskx.data.attribute_world): classes are combinations of shared attributes,
as its contract says, and its images are deterministic COCO-format data."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from maskx.data import attribute_world as w
from maskx.data.coco import CocoDataset
from maskx.data.splits import info_split_args, resolve_split
from maskx.diagnostics import attribute_matrix, category_attributes, similarity_index


@pytest.mark.parametrize("world, wearers, looks", [("v4b", {2}, 40), ("v4c", {3, 4}, 25)])
def test_every_look_is_worn_by_classes_of_different_bodies(world, wearers, looks):
    table = w.class_table(world)
    assert len(table) == 80 and len(set(table)) == 80
    assert [b for b, _, _ in table] == [k // 8 for k in range(80)]  # body-major
    count = Counter((p, h) for _, p, h in table)
    assert set(count.values()) == wearers and len(count) == looks
    for look in count:
        bodies = [b for b, p, h in table if (p, h) == look]
        assert len(set(bodies)) == len(bodies)
    assert len(set(w.class_names(world))) == 80


def test_the_five_hues_are_farther_apart_than_the_jitter():
    hues = sorted(h for _, h in w.HUES_5)
    gaps = [b - a for a, b in zip(hues, hues[1:])] + [1 + hues[0] - hues[-1]]
    assert min(gaps) >= 0.15  # a colour is drawn within +-0.035 of its hue
    with pytest.raises(ValueError, match="world must be one of"):
        w.class_table("v9")


def test_categories_record_attributes_and_the_voc_like_classes_cover_six_bodies():
    cats = w.categories()
    attrs = category_attributes(cats)
    assert all(len(a) == 3 and a[0].startswith("body:") for a in attrs)
    assert all(c["supercategory"] == a[0].split(":")[1] for c, a in zip(cats, attrs))
    voc = set(w.voc_like_category_ids())
    assert len(voc) == 20
    bodies = {a[0] for c, a in zip(cats, attrs) if c["id"] in voc}
    assert len(bodies) == 6  # non-voc keeps 4 bodies no voc-like class has


def test_embeddings_built_from_the_attributes_index_one():
    m, _ = attribute_matrix(w.class_attributes())
    in_b = np.array([c["id"] not in set(w.voc_like_category_ids()) for c in w.categories()])
    out = similarity_index(m.astype(float), m, in_b)
    assert out["rho"] > 0.99 and out["nearest_a_shares"] == 1.0


def test_generate_is_deterministic_and_splits_resolve(tmp_path):
    a = w.generate(tmp_path / "a", 3, seed=5, image_size=96)
    w.generate(tmp_path / "b", 3, seed=5, image_size=96)
    assert a["images"] == 3 and a["generator_version"] == 4
    for name in ("annotations.json", "images/000001.jpg", "images/000003.jpg"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    data = json.loads((tmp_path / "a" / "annotations.json").read_text())
    assert data["info"]["generator"] == "maskx.data.attribute_world"
    ds = CocoDataset.from_dir(tmp_path / "a")
    split = resolve_split("voc2nonvoc", data["categories"], **info_split_args(data["info"]))
    assert len(split.a_ids) == 20 and len(split.b_ids) == 60
    image, target = ds[0]
    assert image.shape[-2:] == (96, 96) and len(target["boxes"]) == len(target["masks"])


def _crowding(world: str, n: int = 16) -> tuple[float, float]:
    """(instances per image, share of instances whose box overlaps another's) over n images at 128 px."""
    per, overlapping, total = 0, 0, 0
    for i in range(n):
        _, inst = w.render(7, i, 128, 4, world)
        boxes = []
        for _, m in inst:
            ys, xs = np.nonzero(m)
            boxes.append((xs.min(), ys.min(), xs.max(), ys.max()))
        per += len(boxes)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            total += 1
            overlapping += any(min(x1, b[2]) > max(x0, b[0]) and min(y1, b[3]) > max(y0, b[1])
                               for j, b in enumerate(boxes) if j != k)
    return per / n, overlapping / max(total, 1)


def test_the_crowded_scene_puts_objects_against_each_other():
    per_a, overlap_a = _crowding("v4a")
    per_b, overlap_b = _crowding("v4b")
    assert per_b > per_a and overlap_b > overlap_a + 0.1
