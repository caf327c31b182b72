"""The embedded 3000-class world: vocabulary, long tail, set-A-only train masks, loaders, split, CLI."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import folder_digest
from maskx.__main__ import main
from maskx.data import synthetic, synthetic3k, vocab3k
from maskx.data.coco import CocoDataset, DatasetError
from maskx.data.shapes import FAMILIES, place_rings
from maskx.data.splits import SplitError, info_split_args, resolve_split


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The 'tiny' 3000-class world (train/ and val/), generated once for this module."""
    root = tmp_path_factory.mktemp("synth3k")
    synthetic3k.ensure_dataset3k(root, "tiny", workers=1, progress=False)
    return root


def _load(root: Path, part: str) -> dict:
    return json.loads((root / part / "annotations.json").read_text())


def test_vocabulary_names_ids_families():
    cats = vocab3k.categories3k()
    assert len(cats) == 3000
    names = [c["name"] for c in cats]
    assert len(set(names)) == 3000
    words = {w for c in cats for w in c["name"].split()}
    assert all(re.fullmatch(r"[a-z][a-z-]*", w) for w in words)  # plain readable words, e.g. "upside-down"
    assert all(c["name"].endswith(c["supercategory"]) for c in cats)  # "<attributes> <base> <family>"
    ids = [c["id"] for c in cats]
    assert ids[:80] == list(synthetic.COCO_CATEGORY_IDS) and ids[80:] == list(range(101, 3021))
    assert "nicked stretched five star" in names and "pierced tapered mirrored l block" in names
    # every attribute combination appears on every base: 200 bases x 15
    assert len({c["base"] for c in cats}) == 200
    assert {tuple(c["attributes"]) for c in cats} == {tuple(a for a in (e, p) if a) for e in vocab3k.EDGES
                                                       for p in vocab3k.PROPORTIONS}


def test_set_a_is_the_80_class_set_exactly():
    cats = vocab3k.categories3k()
    a = [{k: c[k] for k in ("id", "name", "supercategory")} for c in cats if c["id"] in vocab3k.set_a_category_ids()]
    assert a == synthetic.categories()  # set A: the version-3 world's 80 classes
    for cls in range(80):  # same outline, same random draws
        r1, r2 = np.random.default_rng(cls), np.random.default_rng(cls)
        got, want = vocab3k.outline(cls, r1), synthetic._outline(cls, r2)
        assert len(got) == len(want) and all(np.array_equal(g[0], w[0]) and g[1] == w[1] for g, w in zip(got, want))
        assert r1.random() == r2.random()


def test_looks_do_not_separate_a_from_b():
    cs = vocab3k.classes()
    a_fams = {c.family for c in cs if c.set_a}
    b_fams = {c.family for c in cs if not c.set_a}
    assert a_fams == b_fams == set(range(len(FAMILIES)))  # A wears every look (hue, texture) B uses
    assert all(sum(c.family == f for c in cs if c.set_a) == 8 for f in a_fams)


def _canonical(cls: int, n: int = 48) -> np.ndarray:
    rings = place_rings(vocab3k.outline(cls, np.random.default_rng(7)), (n / 2, n / 2), n * 0.45, 0, 1.0)
    return synthetic._rasterize(rings, n) >= 0.5


def test_attributes_change_the_shape():
    cs = vocab3k.classes()
    plain = {(c.family, c.base): c.index for c in cs if not c.edge and not c.proportion}
    ious: dict[str, list] = {}
    for c in cs[80::5]:  # every 5th set-B class: each attribute changes its base's mask
        if c.edge or c.proportion:
            m, base = _canonical(c.index), _canonical(plain[(c.family, c.base)])
            iou = (m & base).sum() / (m | base).sum()
            assert iou < 0.99, (c.name, iou)
            for attr in c.attributes:
                ious.setdefault(attr, []).append(iou)
    assert sorted(ious) == sorted(a for a in vocab3k.EDGES + vocab3k.PROPORTIONS if a)
    assert all(np.median(v) < 0.93 for v in ious.values()), {k: np.median(v) for k, v in ious.items()}
    hole = _canonical(next(c.index for c in cs if c.name == "pierced square tile"))
    assert not hole[24, 24] and _canonical(next(c.index for c in cs if c.name == "square tile"))[24, 24]


def test_long_tail_weights():
    w, ranks = vocab3k.class_weights3k(), vocab3k.frequency_ranks()
    assert np.isclose(w.sum(), 1) and sorted(ranks) == list(range(1, 3001))
    assert w.max() / w.min() > 200  # 3000^0.7 = 271
    assert ranks[:80].max() <= vocab3k.A_RANK_POOL and np.median(ranks[:80]) < 100  # A among the frequent
    assert 0.15 < w[:80].sum() < 0.3  # A: ~21 % of the instances
    # A keeps the 80-class set's frequency order
    order80 = np.argsort(-synthetic.class_weights(), kind="stable")
    assert list(np.argsort(ranks[:80], kind="stable")) == list(order80)


def test_train_masks_only_for_a_val_masks_for_all(world):
    train, val = _load(world, "train"), _load(world, "val")
    a_ids = set(train["info"]["set_A_category_ids"])
    assert len(a_ids) == 80 and train["info"]["masks"] == "set_A" and val["info"]["masks"] == "all"
    assert train["info"]["generator_version"] == synthetic3k.GENERATOR_VERSION
    assert len(train["images"]) == 32 and len(val["images"]) == 16
    for a in train["annotations"]:
        if a["category_id"] in a_ids:
            assert "segmentation" in a and "has_mask" not in a
        else:
            assert "segmentation" not in a and a["has_mask"] is False
            assert a["area"] == a["bbox"][2] * a["bbox"][3]
    assert all("segmentation" in a for a in val["annotations"])
    b_count = sum(a["category_id"] not in a_ids for a in train["annotations"])
    assert 0.6 < b_count / len(train["annotations"]) < 0.95  # A is ~21 % of the instances
    assert 3.5 < len(train["annotations"]) / len(train["images"]) < 6.5


def test_coco_dataset_has_mask(world):
    ds = CocoDataset.from_dir(world / "train")  # no split: the file's own has_mask flags decide
    a_ids = set(ds.data["info"]["set_A_category_ids"])
    a_labels = {ds.categories.label(i) for i in a_ids}
    seen_b = False
    for i in range(len(ds)):
        _, t = ds[i]
        is_a = torch.isin(t["labels"], torch.tensor(sorted(a_labels)))
        assert (t["has_mask"] == is_a).all()
        assert t["masks"][~is_a].sum() == 0 and (t["masks"][is_a].flatten(1).sum(1) > 0).all()
        seen_b |= bool((~is_a).any())
    assert seen_b
    split = resolve_split("coco80", ds.data["categories"], **info_split_args(ds.data["info"]))
    val = CocoDataset.from_dir(world / "val", mask_category_ids=split.a_ids)
    assert val.summary["with_mask"] == sum(a["category_id"] in a_ids for a in val.data["annotations"])
    assert CocoDataset.from_dir(world / "val").summary["with_mask"] == val.summary["instances"]


def test_coco_loader_box_only_flag(tmp_path, world):
    data = _load(world, "train")
    a_ids = set(data["info"]["set_A_category_ids"])
    ann = next(a for a in data["annotations"] if a["category_id"] in a_ids)
    ann["has_mask"] = False  # a box-only set-A instance: no mask decoded, whatever the split
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    ds = CocoDataset(world / "train" / "images", bad)
    assert ds.summary["with_mask"] == sum(a["category_id"] in a_ids for a in data["annotations"]) - 1
    ann["has_mask"] = "no"
    bad.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=rf"annotation id {ann['id']}.*'has_mask' must be true or false"):
        CocoDataset(world / "train" / "images", bad)
    b = next(a for a in data["annotations"] if a["category_id"] not in a_ids)
    ann["has_mask"] = True
    b.pop("has_mask")  # a mask-less B instance without the flag is a broken file, as before
    bad.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=rf"annotation id {b['id']}.*without 'segmentation'"):
        CocoDataset(world / "train" / "images", bad)


def test_coco80_split():
    cats = vocab3k.categories3k()
    s = resolve_split("coco80", cats, set_a_ids=vocab3k.set_a_category_ids())
    assert list(s.a_ids) == sorted(synthetic.COCO_CATEGORY_IDS) and len(s.b_ids) == 2920
    assert info_split_args({"set_A_category_ids": [1], "voc_like_category_ids": [2]}) == \
        {"voc_like_ids": [2], "set_a_ids": [1]}
    assert info_split_args(None) == {"voc_like_ids": None, "set_a_ids": None}
    with pytest.raises(SplitError, match="needs the dataset's info.set_A_category_ids"):
        resolve_split("coco80", cats)
    with pytest.raises(SplitError, match=r"\[5000\] are not categories"):
        resolve_split("coco80", cats, set_a_ids=[1, 5000])
    with pytest.raises(SplitError, match="list of integer"):
        resolve_split("coco80", cats, set_a_ids="1,2")
    with pytest.raises(SplitError, match="empty set B"):
        resolve_split("coco80", cats, set_a_ids=[c["id"] for c in cats])


def test_deterministic_and_seeded(tmp_path):
    synthetic3k.generate3k(tmp_path / "a", 3, seed=4, image_size=64)
    synthetic3k.generate3k(tmp_path / "b", 3, seed=4, image_size=64)
    synthetic3k.generate3k(tmp_path / "c", 3, seed=5, image_size=64)
    assert folder_digest(tmp_path / "a") == folder_digest(tmp_path / "b") != folder_digest(tmp_path / "c")
    img, inst = synthetic3k.render3k(4, 1, 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and all(0 <= c < 3000 for c, _ in inst)
    assert not np.array_equal(img, synthetic.render(4, 1, 64)[0])  # its own random stream
    with pytest.raises(FileExistsError):
        synthetic3k.generate3k(tmp_path / "a", 3, seed=4, image_size=64)
    with pytest.raises(ValueError, match="masks must be"):
        synthetic3k.generate3k(tmp_path / "d", 3, masks="some")
    with pytest.raises(ValueError, match="--images"):
        synthetic3k.generate3k(tmp_path / "d", 0)
    assert not (tmp_path / "d").exists()


def test_ensure_reuses_and_cli(world, capsys):
    before = {p: folder_digest(world / p) for p in ("train", "val")}
    assert main(["data", "synth3k", "--out", str(world), "--size", "tiny", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {p: folder_digest(world / p) for p in ("train", "val")} == before  # current: not regenerated
    assert out["train"]["categories"] == 3000 and out["train"]["instances_with_mask"] == out["train"]["set_A_instances"]
    assert out["val"]["instances_with_mask"] == out["val"]["instances"]
    assert main(["data", "summary", str(world / "train"), "--split", "coco80"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["A_classes"] == 80 and s["B_classes"] == 2920 and s["instances_with_mask"] == s["with_mask"]
    with pytest.raises(ValueError, match="unknown dataset size"):
        synthetic3k.ensure_dataset3k(world, "huge")
