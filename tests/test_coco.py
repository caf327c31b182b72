"""COCO-format loading: targets, has_mask for set B, real COCO encodings, and every bad input."""
import copy
import json

import pytest
import torch

from maskx.data.coco import CocoDataset, DatasetError, collate
from maskx.data.splits import resolve_split

from conftest import coco_fixture, write_image


@pytest.fixture
def coco(tmp_path):
    data = coco_fixture(tmp_path)
    return tmp_path, data


def _ds(root, data=None, **kw):
    ann = root / "annotations" / "instances_val2017.json"
    if data is not None:
        data = {k: v for k, v in data.items() if not k.startswith("_")}
        ann.write_text(json.dumps(data))
    return CocoDataset(root / "val2017", ann, **kw)


def test_targets_real_coco_encodings(coco):
    root, data = coco
    ds = _ds(root)
    assert len(ds) == 3 and ds.summary["crowd"] == 1 and ds.summary["skipped"] == {}
    img, t = ds[0]
    assert img.shape == (3, 48, 64) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    assert t["image_id"] == 139
    assert t["boxes"].tolist() == [[10, 5, 30, 25], [40, 30, 60, 40]]
    # contiguous labels: person (id 1) -> 1, dog (id 18) -> 3
    assert t["labels"].tolist() == [1, 3]
    assert ds.categories.category_id(3) == 18 and ds.categories.name(3) == "dog"
    assert t["masks"].shape == (2, 48, 64) and t["masks"].dtype == torch.uint8
    assert t["masks"][0, 5:25, 10:30].float().mean() > 0.9  # polygon
    assert t["masks"][1].sum() == data["_expected_area"][1002]  # compressed RLE
    _, t2 = ds[1]  # crowd RLE left out of instances, kept as a crowd box
    assert t2["labels"].tolist() == [2] and t2["crowd_boxes"].tolist() == [[0, 0, 30, 20]]
    assert t2["masks"][0].sum() > 150  # two-part polygon
    _, t3 = ds[2]
    assert t3["masks"][0].sum() == data["_expected_area"][1005]  # uncompressed RLE
    assert t["has_mask"].all() and t["iscrowd"].sum() == 0


def test_set_b_masks_never_given(coco):
    root, _ = coco
    ds = _ds(root, mask_category_ids={1, 44})  # A = person, bottle; dog, car in B
    _, t = ds[0]
    assert t["has_mask"].tolist() == [True, False]
    assert t["masks"][1].sum() == 0 and t["masks"][0].sum() > 0
    assert ds.summary["with_mask"] == 2 and ds.summary["instances"] == 4


def test_synthetic_split_has_mask(tiny_synth):
    full = CocoDataset.from_dir(tiny_synth)
    split = resolve_split("voc2nonvoc", full.data["categories"], voc_like_ids=full.data["info"]["voc_like_category_ids"])
    ds = CocoDataset.from_dir(tiny_synth, mask_category_ids=split.a_ids)
    n_a = n_b = 0
    for i in range(len(ds)):
        _, t = ds[i]
        ids = [ds.categories.category_id(int(l)) for l in t["labels"]]
        assert t["has_mask"].tolist() == [c in split.a_ids for c in ids]
        assert (t["masks"][~t["has_mask"]].sum() == 0)
        assert (t["masks"][t["has_mask"]].flatten(1).sum(1) > 0).all()
        n_a += int(t["has_mask"].sum())
        n_b += int((~t["has_mask"]).sum())
    assert n_a > 0 and n_b > 0
    images, targets = collate([ds[0], ds[1]])
    assert len(images) == len(targets) == 2


def test_grayscale_and_rgba_become_rgb(coco):
    root, _ = coco
    write_image(root / "val2017" / "000000000139.jpg", 48, 64, mode="L")
    write_image(root / "val2017" / "000000000285.jpg", 48, 64, mode="RGBA", fmt="PNG")  # decoded by content
    ds = _ds(root)
    assert ds[0][0].shape == (3, 48, 64) and ds[1][0].shape == (3, 48, 64)


# ---------------------------------------------------------------- bad input: clear errors

def _mutate(data, fn):
    d = copy.deepcopy({k: v for k, v in data.items() if not k.startswith("_")})
    fn(d)
    return d


@pytest.mark.parametrize("mutation, match", [
    (lambda d: d["annotations"][0].update(category_id=12), "annotation id 1001 .*unknown category id 12"),
    (lambda d: d["annotations"][1].update(id=1001), "duplicate annotation id 1001"),
    (lambda d: d["images"].append(dict(d["images"][0])), "duplicate image id 139"),
    (lambda d: d["annotations"][0].update(image_id=7), "annotation id 1001.*image id 7 is not in 'images'"),
    (lambda d: d["annotations"][0].pop("category_id"), r"annotations\[0\]: field 'category_id'"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "annotation id 1001.*'bbox' must be 4"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, float("nan"), 3]), "annotation id 1001.*'bbox'"),
    (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3]]), "annotation id 1001.*polygon"),
    (lambda d: d["annotations"][0].update(segmentation="person"), "annotation id 1001.*'segmentation'"),
    (lambda d: d["annotations"][0].pop("segmentation"), "annotation id 1001.*without 'segmentation'"),
    (lambda d: d["annotations"][1]["segmentation"].update(size=[10, 10]), "annotation id 1002.*RLE size"),
    (lambda d: d["annotations"][4]["segmentation"]["counts"].append(5), "annotation id 1005.*sum"),
    (lambda d: d["images"][0].update(width="64"), r"images\[0\]: field 'width'"),
    (lambda d: d.pop("categories"), "missing list field 'categories'"),
    (lambda d: d["categories"].append({"id": 1, "name": "again"}), "duplicate category ids"),
])
def test_structural_faults_raise(coco, mutation, match):
    root, data = coco
    with pytest.raises(DatasetError, match=match):
        _ds(root, _mutate(data, mutation))


@pytest.mark.parametrize("mutation, reason", [
    (lambda d: d["annotations"][0].update(bbox=[10, 5, 0, 20]), "zero_area_box"),
    (lambda d: d["annotations"][0].update(bbox=[50, 5, 30, 20]), "box_outside_image"),
    (lambda d: d["annotations"][0].update(segmentation=[]), "empty_segmentation"),
    (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3, 4]]), "empty_segmentation"),
])
def test_geometric_faults_skip_counted_or_strict_error(coco, mutation, reason):
    root, data = coco
    bad = _mutate(data, mutation)
    ds = _ds(root, bad)
    assert ds.summary["skipped"] == {reason: 1}
    assert ds.summary["instances"] == 3  # the other instances are intact
    _, t = ds[0]
    assert t["labels"].tolist() == [3]  # annotation 1001 skipped, never a wrong target
    with pytest.raises(DatasetError, match=f"annotation id 1001.*{reason.replace('_', ' ')}"):
        _ds(root, bad, strict=True)


def test_box_slightly_outside_is_clipped(coco):
    root, data = coco
    ds = _ds(root, _mutate(data, lambda d: d["annotations"][0].update(bbox=[-0.5, 5, 20.5, 20])))
    assert ds[0][1]["boxes"][0].tolist() == [0, 5, 20, 25]


def test_missing_image_file(coco):
    root, _ = coco
    (root / "val2017" / "000000000285.jpg").unlink()
    with pytest.raises(DatasetError, match="1 image file.*missing.*000000000285.jpg"):
        _ds(root)


def test_corrupt_image_file(coco):
    root, _ = coco
    p = root / "val2017" / "000000000285.jpg"
    p.write_bytes(p.read_bytes()[:40])
    ds = _ds(root)
    with pytest.raises(DatasetError, match=r"000000000285.jpg \(image id 140\): cannot decode"):
        ds[1]


def test_image_size_mismatch(coco):
    root, _ = coco
    write_image(root / "val2017" / "000000000139.jpg", 40, 64)
    with pytest.raises(DatasetError, match="image id 139.*64x40 but the annotations say 64x48"):
        _ds(root)[0]


def test_not_json_and_not_a_dataset(coco, tmp_path):
    root, _ = coco
    ann = root / "annotations" / "instances_val2017.json"
    ann.write_text("{\"images\": [")
    with pytest.raises(DatasetError, match="instances_val2017.json: not valid JSON"):
        _ds(root)
    with pytest.raises(DatasetError, match="no annotations.json here"):
        CocoDataset.from_dir(tmp_path / "val2017")


def test_unknown_mask_category(coco):
    root, _ = coco
    with pytest.raises(DatasetError, match=r"mask_category_ids \[2\]"):
        _ds(root, mask_category_ids={1, 2})
