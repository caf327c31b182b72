"""The 3000-class world's version 2 (maskx.data.attribute3k, drawn through maskx.data.synthetic3k):
classes made of shared attributes, set A the 80-class world v4's classes drawn by the same code,
shapes a detector can tell apart, the long tail, deterministic set-A-only train data; version 1
still drawn byte for byte."""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from helpers import folder_digest
from maskx.data import attribute3k as w
from maskx.data import attribute_world, embedded, synthetic, synthetic3k, vocab3k
from maskx.data.coco import CocoDataset
from maskx.data.shapes import place_rings
from maskx.data.splits import info_split_args, resolve_split
from maskx.diagnostics import attribute_matrix, category_attributes, similarity_index

# ``_v1_digest`` of a tiny version-1 generation: version 1 is frozen (models/maskx-3k was trained on it)
V1_DIGEST = "cd614ff0acc70985303e15e616da322b87ec2aa9bc4f92ac91b5f0937e77a0bc"


def test_3000_classes_each_one_combination_of_attributes():
    cs, cats = w.classes(), w.categories3k()
    assert len(cs) == len(cats) == 3000 and [c.index for c in cs] == list(range(3000))
    assert len({c["name"] for c in cats}) == 3000
    assert all(re.fullmatch(r"[a-z]+( [a-z]+){2,3}", c["name"]) for c in cats)  # "[proportion] hue pattern body"
    combos = Counter((c.body, c.pattern, c.hue, c.proportion) for c in cs)
    assert len(combos) == 3000 == len(w.BODIES) * len(attribute_world.PATTERNS) * len(w.HUES) * len(w.PROPORTIONS)
    ids = [c["id"] for c in cats]
    assert ids[:80] == list(synthetic.COCO_CATEGORY_IDS) and ids[80:] == list(range(101, 3021))
    assert all(c["supercategory"] == c["attributes"][0].split(":")[1] for c in cats)
    assert all(c["frequency_rank"] == r for c, r in zip(cats, vocab3k.frequency_ranks()))
    kinds = Counter(a.split(":")[0] for c in cats for a in c["attributes"])
    assert kinds == {"body": 3000, "pattern": 3000, "hue": 3000, "proportion": 2000}
    assert w.set_a_category_ids() == sorted(synthetic.COCO_CATEGORY_IDS) == synthetic3k.set_a_category_ids(2)
    assert synthetic3k.categories3k(2) == cats and synthetic3k.categories3k(1) == vocab3k.categories3k()


def test_set_a_is_the_80_class_world_v4_drawn_by_the_same_code():
    keys = ("id", "name", "supercategory", "attributes")
    assert [{k: c[k] for k in keys} for c in w.categories3k()[:80]] == [{k: c[k] for k in keys}
                                                                         for c in embedded.categories(4)]
    assert embedded.WORLDS[4] == w.WORLD and list(w.families()[:80]) == attribute_world.class_families(w.WORLD)
    assert all(not c.proportion and c.set_a for c in w.classes()[:80]) and not any(c.set_a for c in w.classes()[80:])
    # a scene of A's classes drawn with this world's outlines is the 80-class world's image, byte for byte
    for index in range(2):
        got = attribute_world.render_classes(np.random.default_rng([6, index, 4]), 96, w.families()[:80],
                                             synthetic.class_weights(), attribute_world.SCENES[w.WORLD], w.outline)
        want = embedded.render(6, index, 96, 4)
        assert np.array_equal(got[0], want[0]) and [c for c, _ in got[1]] == [c for c, _ in want[1]]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got[1], want[1]))


def test_rare_classes_are_made_of_attributes_frequent_classes_have():
    cats = w.categories3k()
    a_attrs = {x for c in cats[:80] for x in c["attributes"]}
    a_bodies = {x for x in a_attrs if x.startswith("body:")}
    assert {f"pattern:{p}" for p, _ in attribute_world.PATTERNS} | {f"hue:{h}" for h, _ in w.HUES} <= a_attrs
    covered = [c for c in cats[80:] if c["attributes"][0] in a_bodies]
    unseen = [c for c in cats[80:] if c["attributes"][0] not in a_bodies]
    # every B class shares its pattern and hue with A classes; B on A's 10 bodies shares a body with 8 A classes
    assert all(len(set(c["attributes"]) & a_attrs) >= 2 for c in cats[80:])
    assert len(covered) == 10 * 120 - 80 and all(set(c["attributes"][:1]) <= a_attrs for c in covered)
    # the designed unseen part: B classes on the 15 bodies no A class has (as much of VG is unlike COCO)
    assert len(unseen) == 15 * 120 and {c["supercategory"] for c in unseen} == {b[0] for b in w.NEW_BODIES}
    a_body_count = Counter(c["attributes"][0] for c in cats[:80])
    assert set(a_body_count.values()) == {8}


def test_the_diagnostics_read_the_attributes():
    cats = w.categories3k()
    m, names = attribute_matrix(category_attributes(cats))
    assert len(names) == 25 + 5 + 8 + 2 and not any(n.startswith(("family:", "base:")) for n in names)
    rows = list(range(80)) + list(range(80, 3000, 4))  # A and a quarter of B: a few seconds less
    m = m[rows]
    out = similarity_index(m.astype(float), m, np.arange(len(rows)) >= 80)  # the attributes as an embedding
    assert out["rho"] > 0.95 and out["nearest_a_shares"] == 1.0  # not 1: plain classes have 3, others 4


def _views(rings, rotate: float, n: int = 32, step: float = 10.0) -> np.ndarray:
    """[views, n*n] masks of unit ``rings`` at the rotations a class may be drawn at, each centred on
    its centroid and scaled to one area (a detector sees any size)."""
    angles = np.arange(0, 360, step) if rotate >= 180 else np.linspace(-rotate, rotate, int(2 * rotate // step) + 1)
    out = []
    for a in angles:
        m = synthetic._rasterize(place_rings(rings, (n / 2, n / 2), n * 0.3, a, 1.0), n) >= 0.5
        ys, xs = np.nonzero(m)
        s = math.sqrt(0.12 * n * n / len(ys))
        ctr = (n / 2 + (n / 2 - xs.mean() - 0.5) * s, n / 2 + (n / 2 - ys.mean() - 0.5) * s)
        out.append(synthetic._rasterize(place_rings(rings, ctr, n * 0.3 * s, a, 1.0), n).ravel() >= 0.5)
    return np.array(out, np.float32)


def shape_similarity(shapes: dict) -> tuple[list, np.ndarray]:
    """For {name: (unit rings, max rotation)}: how alike two shapes look to a detector that sees any
    size: the IoU of a's views with b's best-matching view, averaged over a's views, the larger of
    (a, b) and (b, a)."""
    names = list(shapes)
    views = [_views(*shapes[k]) for k in names]
    starts = np.cumsum([0] + [len(v) for v in views[:-1]])
    v = np.concatenate(views)
    inter = v @ v.T
    iou = inter / (v.sum(1)[:, None] + v.sum(1)[None] - inter)
    best = np.maximum.reduceat(iou, starts, axis=1)  # [view of a, shape b]: IoU with b's best view
    sim = np.add.reduceat(best, starts, axis=0) / np.array([len(x) for x in views])[:, None]
    return names, np.maximum(sim, sim.T)


def test_shapes_differ_as_much_as_the_80_class_worlds_bodies():
    shapes = {(name, prop): (w.proportioned(outline(*params), prop), rotate)
              for name, outline, params, rotate in w.BODIES for prop in w.PROPORTIONS}
    names, sim = shape_similarity(shapes)
    ref = sim[names.index(("disc", "")), names.index(("square", ""))]  # the 80-class world's closest bodies
    a_bodies = [(b[0], "") for b in attribute_world.BODIES]
    iu = np.triu_indices(len(names), 1)
    assert ref == max(sim[names.index(x), names.index(y)] for x in a_bodies for y in a_bodies if x < y)
    worst = int(np.argmax(sim[iu]))
    assert sim[iu][worst] <= ref + 0.01, (names[iu[0][worst]], names[iu[1][worst]], sim[iu][worst], ref)


def test_long_tail_with_a_at_frequent_ranks():
    w8, ranks = vocab3k.class_weights3k(), vocab3k.frequency_ranks()
    assert np.isclose(w8.sum(), 1) and w8.max() / w8.min() > 200
    assert ranks[:80].max() <= vocab3k.A_RANK_POOL and 0.15 < w8[:80].sum() < 0.3
    order80 = np.argsort(-synthetic.class_weights(), kind="stable")  # the 80-class world's frequency order
    assert list(np.argsort(ranks[:80], kind="stable")) == list(order80)
    # looks do not decide frequency: the 100 most frequent B classes spread over bodies and proportions
    top = [w.classes()[k] for k in np.argsort(-w8, kind="stable") if k >= 80][:100]
    assert len({c.body for c in top}) >= 15 and {c.proportion for c in top} == set(w.PROPORTIONS)


def test_render_draws_both_sets_within_the_frame():
    seen = Counter()
    for index in range(6):
        img, inst = synthetic3k.render3k(3, index, 96, version=2)
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8 and 1 <= len(inst) <= 8
        seen.update("A" if c < 80 else "B" for c, _ in inst)
        assert all(0 <= c < 3000 and m.sum() >= 16 for c, m in inst)
    assert seen["A"] > 0 and seen["B"] > seen["A"]
    assert not np.array_equal(img, synthetic3k.render3k(3, 5, 96, version=1)[0])
    for c in (0, 85, 1500, 2999):  # every proportion keeps the outline in the unit square
        rings = w.outline(c, np.random.default_rng(c))
        assert max(float(np.abs(v).max()) for v, _ in rings) <= 1.0 + 1e-9


def test_train_masks_only_for_a_val_masks_for_all_deterministic(tmp_path):
    synthetic3k.generate3k(tmp_path / "train", 4, seed=2, image_size=64, version=2)
    synthetic3k.generate3k(tmp_path / "again", 4, seed=2, image_size=64, version=2, workers=2)
    synthetic3k.generate3k(tmp_path / "val", 4, seed=2, image_size=64, masks="all", version=2)
    synthetic3k.generate3k(tmp_path / "other", 4, seed=3, image_size=64, version=2)
    assert folder_digest(tmp_path / "train") == folder_digest(tmp_path / "again") != folder_digest(tmp_path / "other")
    train = json.loads((tmp_path / "train" / "annotations.json").read_text())
    val = json.loads((tmp_path / "val" / "annotations.json").read_text())
    info = train["info"]
    assert info["generator_version"] == 2 and info["set_A_world"] == "v4b" and info["masks"] == "set_A"
    assert info["voc_like_category_ids"] == attribute_world.voc_like_category_ids()
    a_ids = set(info["set_A_category_ids"])
    assert a_ids == set(synthetic.COCO_CATEGORY_IDS) and train["categories"] == w.categories3k()
    assert {a["category_id"] in a_ids for a in train["annotations"]} == {True, False}
    for a in train["annotations"]:
        if a["category_id"] in a_ids:
            assert "segmentation" in a and "has_mask" not in a
        else:
            assert "segmentation" not in a and a["has_mask"] is False and a["area"] == a["bbox"][2] * a["bbox"][3]
    assert [a["bbox"] for a in val["annotations"]] == [a["bbox"] for a in train["annotations"]]
    assert all("segmentation" in a for a in val["annotations"])
    split = resolve_split("coco80", train["categories"], **info_split_args(info))
    assert len(split.a_ids) == 80 and len(split.b_ids) == 2920
    ds = CocoDataset.from_dir(tmp_path / "train")
    assert ds.summary["with_mask"] == sum(a["category_id"] in a_ids for a in train["annotations"])


def test_version_1_is_drawn_as_before(tmp_path):
    assert 1 in synthetic3k.VERSIONS  # still drawable after the shipped model moved to version 2
    assert _v1_digest(tmp_path) == V1_DIGEST


def _v1_digest(out: Path) -> str:
    """Images, annotations and categories of 4 version-1 images (seed 3, 96 px), train and val masks."""
    h = hashlib.sha256()
    for masks in ("set_A", "all"):
        d = out / masks
        synthetic3k.generate3k(d, 4, seed=3, image_size=96, masks=masks, version=1)
        data = json.loads((d / "annotations.json").read_text())
        h.update(json.dumps([data["images"], data["annotations"], data["categories"]], sort_keys=True).encode())
        for f in sorted((d / "images").iterdir()):
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_ensure_regenerates_another_version_only(tmp_path, monkeypatch):
    monkeypatch.setitem(synthetic3k.SIZES, "t", {"train": 2, "val": 1, "image_size": 64})
    paths = synthetic3k.ensure_dataset3k(tmp_path, "t", workers=1, progress=False, version=1)
    assert json.loads(paths["train"].read_text())["info"]["generator_version"] == 1
    paths = synthetic3k.ensure_dataset3k(tmp_path, "t", workers=1, progress=False, version=2)
    before = {p: folder_digest(tmp_path / p) for p in ("train", "val")}
    assert json.loads(paths["val"].read_text())["info"]["generator_version"] == 2
    synthetic3k.ensure_dataset3k(tmp_path, "t", workers=1, progress=False, version=2)
    assert {p: folder_digest(tmp_path / p) for p in ("train", "val")} == before  # current: left alone


@pytest.mark.parametrize("bad", [0, 3, None])
def test_unknown_versions_are_refused(tmp_path, bad):
    msg = r"3000-class generator version must be one of \[1, 2\]"
    with pytest.raises(ValueError, match=msg):
        synthetic3k.render3k(0, 0, 64, version=bad)
    with pytest.raises(ValueError, match=msg):
        synthetic3k.categories3k(bad)
    with pytest.raises(ValueError, match=msg):
        synthetic3k.generate3k(tmp_path / "d", 2, image_size=64, version=bad)
    with pytest.raises(ValueError, match=msg):
        synthetic3k.ensure_dataset3k(tmp_path / "e", "tiny", version=bad)
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()
    with pytest.raises(ValueError, match="proportion must be one of"):
        w.proportioned(w.BODIES[0][1](*w.BODIES[0][2]), "squashed")
