"""VG boxes + COCO masks (paper §5): the synset table, set A, box matching, rescaling, errors, export."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from maskx.__main__ import main
from maskx.data.coco import CocoDataset, DatasetError
from maskx.data.splits import info_split_args, resolve_split
from maskx.data.synthetic import COCO_CATEGORY_IDS
from maskx.data.vg_coco import MAPPING_FILE, VGWithCocoMasks, box_iou, load_mapping, match_greedy, vg_set_a

from conftest import COCO_CATS, _rle_str, _rle_uncompressed, coco_fixture, vg_fixture, write_image

COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush")


def _obj(oid, synset, x, y, w, h):
    return {"synsets": [synset], "h": h, "object_id": oid, "merged_object_ids": [], "names": [synset.split(".")[0]],
            "w": w, "y": y, "x": x}


def _poly(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def build(root: Path, coco_edit=None) -> dict:
    """VG (80x60 images, VG 1.4 layout) and COCO 2017-style train/val instances files.

    VG 10 <-> COCO 139 (160x120: scale 2), VG 11 has no COCO photo, VG 12 <-> COCO 285 (100x100:
    another aspect ratio), VG 13 <-> COCO 632 (in val)."""
    vg, coco = root / "vg", root / "coco"
    (vg / "VG_100K").mkdir(parents=True)
    (coco / "annotations").mkdir(parents=True)
    images, objects = [], []
    objs = {10: [_obj(1, "man.n.01", 10, 5, 20, 20), _obj(2, "woman.n.01", 40, 5, 20, 20),
                 _obj(3, "dog.n.01", 10, 35, 30, 20), _obj(4, "dog.n.01", 60, 40, 10, 10),
                 _obj(5, "car.n.01", 50, 35, 20, 20), _obj(6, "tree.n.01", 0, 0, 80, 60),
                 _obj(7, "man.n.01", 62, 2, 16, 16)],
            11: [_obj(8, "man.n.01", 5, 5, 10, 20), _obj(9, "tree.n.01", 30, 0, 20, 40)],
            12: [_obj(10, "man.n.01", 5, 5, 10, 20)],
            13: [_obj(11, "dog.n.01", 5, 5, 30, 30), _obj(12, "tree.n.01", 40, 10, 20, 40)]}
    for k, (iid, coco_id) in enumerate([(10, 139), (11, None), (12, 285), (13, 632)]):
        write_image(vg / "VG_100K" / f"{iid}.jpg", 60, 80, seed=k)
        url = f"https://cs.stanford.edu/people/rak248/VG_100K/{iid}.jpg"
        images.append({"width": 80, "url": url, "height": 60, "image_id": iid, "coco_id": coco_id, "flickr_id": None})
        objects.append({"image_id": iid, "objects": objs[iid], "image_url": url})
    (vg / "image_data.json").write_text(json.dumps(images))
    (vg / "objects.json").write_text(json.dumps(objects))
    (vg / "object_synsets.json").write_text(json.dumps({"man": "man.n.01", "dog": "dog.n.01"}))

    dog = np.zeros((120, 160), bool)
    dog[70:110, 20:80] = True
    crowd = np.zeros((120, 160), bool)
    crowd[4:36, 124:156] = True
    anns = [  # COCO px; persons as polygons, the dog as compressed RLE, a crowd as uncompressed RLE
        {"id": 1, "image_id": 139, "category_id": 1, "iscrowd": 0, "area": 1600.0, "bbox": [82, 12, 40, 40],
         "segmentation": _poly(82, 12, 40, 40)},
        {"id": 2, "image_id": 139, "category_id": 1, "iscrowd": 0, "area": 1600.0, "bbox": [22, 10, 40, 40],
         "segmentation": _poly(22, 10, 40, 40)},
        {"id": 3, "image_id": 139, "category_id": 1, "iscrowd": 0, "area": 900.0, "bbox": [100, 60, 30, 30],
         "segmentation": _poly(100, 60, 30, 30)},
        {"id": 4, "image_id": 139, "category_id": 18, "iscrowd": 0, "area": 2400.0, "bbox": [20, 70, 60, 40],
         "segmentation": _rle_str(dog)},
        {"id": 5, "image_id": 139, "category_id": 1, "iscrowd": 1, "area": 1024.0, "bbox": [124, 4, 32, 32],
         "segmentation": _rle_uncompressed(crowd)},
        {"id": 6, "image_id": 285, "category_id": 1, "iscrowd": 0, "area": 100.0, "bbox": [5, 5, 10, 10],
         "segmentation": _poly(5, 5, 10, 10)}]
    train = {"info": {"description": "fixture in COCO 2017 format"}, "licenses": [],
             "images": [{"id": 139, "file_name": "000000000139.jpg", "height": 120, "width": 160},
                        {"id": 285, "file_name": "000000000285.jpg", "height": 100, "width": 100}],
             "annotations": anns, "categories": json.loads(json.dumps(COCO_CATS))}
    val = {"images": [{"id": 632, "file_name": "000000000632.jpg", "height": 120, "width": 160}],
           "annotations": [], "categories": COCO_CATS}
    if coco_edit:
        coco_edit(train)
    (coco / "annotations" / "instances_train2017.json").write_text(json.dumps(train))
    (coco / "annotations" / "instances_val2017.json").write_text(json.dumps(val))
    return {"vg": vg, "train": coco / "annotations" / "instances_train2017.json",
            "val": coco / "annotations" / "instances_val2017.json"}


def test_mapping_table_covers_cocos_80():
    names, to_coco = load_mapping()
    assert sorted(names) == list(COCO_CATEGORY_IDS) and tuple(names[i] for i in COCO_CATEGORY_IDS) == COCO_NAMES
    assert set(to_coco.values()) == set(COCO_CATEGORY_IDS)  # every category has a synset, each synset one category
    assert all(re.fullmatch(r"[a-z][a-z_]*\.n\.\d\d", s) for s in to_coco)
    assert {s for s, c in to_coco.items() if c == 1} >= {"person.n.01", "man.n.01", "woman.n.01"}
    assert to_coco["fireplug.n.01"] == 11 and to_coco["television_receiver.n.01"] == 72
    assert to_coco["doughnut.n.02"] == 60 and to_coco["sofa.n.01"] == 63
    # the table ships with the package
    assert 'maskx = ["data/*.json"]' in (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert MAPPING_FILE.parent.name == "data" and MAPPING_FILE.is_file()


@pytest.mark.parametrize("edit, msg", [
    (lambda d: d.pop("categories"), "missing list field 'categories'"),
    (lambda d: d["categories"][1]["synsets"].append("person.n.01"), r"categories\[1\] \(bicycle\): synset person.n.01 "
                                                                    "is already mapped to COCO id 1"),
    (lambda d: d["categories"][2]["synsets"].append("Car"), r"categories\[2\] \(car\): 'Car' is not a WordNet"),
    (lambda d: d["categories"][3].update(synsets=[]), r"categories\[3\] \(motorcycle\): 'synsets' must be"),
    (lambda d: d["categories"][4].update(id=1), r"categories\[4\]: duplicate COCO id 1"),
])
def test_bad_mapping_file(tmp_path, edit, msg):
    data = json.loads(MAPPING_FILE.read_text())
    edit(data)
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=rf"m\.json: {msg}"):
        load_mapping(tmp_path / "m.json")


def test_iou_and_greedy_matching():
    iou = box_iou([[0, 0, 10, 10], [0, 0, 10, 20]], [[0, 0, 10, 10], [0, 0, 10, 19], [50, 50, 60, 60]])
    assert iou.shape == (2, 3) and np.isclose(iou[0, 0], 1) and np.isclose(iou[1, 0], 0.5) and iou[0, 2] == 0
    # greedy by descending IoU: (0, 0) first, then row 1 takes column 1 although (1, 0) is also >= 0.5
    assert match_greedy(iou, 0.5) == [(0, 0), (1, 1)]
    assert match_greedy(np.array([[0.6, 0.9], [0.55, 0.7]]), 0.5) == [(0, 1), (1, 0)]
    assert match_greedy(np.array([[0.6, 0.9], [0.55, 0.7]]), 0.6) == [(0, 1)]
    assert match_greedy(np.zeros((0, 3)), 0.5) == []


def test_set_a_and_matching(tmp_path):
    f = build(tmp_path)
    ds = VGWithCocoMasks(f["vg"], f["train"])
    names = ds.categories.names
    assert set(names) == {"man.n.01", "woman.n.01", "dog.n.01", "car.n.01", "tree.n.01"}
    assert {names[k - 1]: c for k, c in ds.set_a.items()} == {"man.n.01": 1, "woman.n.01": 1, "dog.n.01": 18,
                                                              "car.n.01": 3}
    assert ds.set_a == vg_set_a(ds.categories, load_mapping()[1])
    assert ds.ids == [10, 11, 12, 13]
    _, t = ds[0]
    by_obj = dict(zip(t["ann_ids"].tolist(), range(len(t["ann_ids"]))))
    assert t["masks"].shape == (7, 60, 80) and t["masks"].dtype == torch.uint8
    assert [bool(t["has_mask"][by_obj[o]]) for o in range(1, 8)] == [True, True, True, False, False, False, False]
    man, woman, dog = (t["masks"][by_obj[o]].numpy().astype(bool) for o in (1, 2, 3))
    # COCO person 2 at [22, 10, 40, 40] (COCO px) -> VG [11, 5, 20, 20]; person 1 at [82, 12] -> VG [41, 6]
    assert man.sum() == 400 and man[5:25, 11:31].all() and woman.sum() == 400 and woman[6:26, 41:61].all()
    assert dog.sum() == 600 and dog[35:55, 10:40].all()
    assert not t["masks"][~t["has_mask"]].any()
    assert t["boxes"][by_obj[1]].tolist() == [10, 5, 30, 25] and t["area"][by_obj[1]] == 400
    s = ds.summary
    # unmatched set A: the 2nd dog, the car, the man beside a crowd (crowds never match), the man of
    # VG 11 (no COCO photo), VG 12's man (size mismatch) and VG 13's dog (COCO 632 is not in train)
    assert s["with_mask"] == 3 and s["unmatched_set_a"] == 6 and s["set_a_objects"] == 9
    assert s["skipped"] == {"size_mismatch": 1} and s["images_in_coco"] == 2
    for i in range(1, len(ds)):
        assert not ds[i][1]["has_mask"].any()


def test_targets_like_coco_dataset(tmp_path):
    f = build(tmp_path)
    ds = VGWithCocoMasks(f["vg"], f["train"])
    coco = CocoDataset(tmp_path / "coco", f["train"], check_files=False)
    write_image(tmp_path / "coco" / "000000000139.jpg", 120, 160)
    _, t = ds[0]
    _, ct = coco[coco.ids.index(139)]
    assert set(t) == set(ct)
    for k in t:
        if isinstance(t[k], torch.Tensor):
            assert t[k].dtype == ct[k].dtype and t[k].dim() == ct[k].dim(), k


def test_image_selection(tmp_path):
    f = build(tmp_path)
    val_ids = {632}
    ds = VGWithCocoMasks(f["vg"], f["train"], exclude_coco_ids=val_ids)
    assert ds.ids == [10, 11, 12]
    assert VGWithCocoMasks(f["vg"], f["train"], images="coco").ids == [10, 12]
    assert VGWithCocoMasks(f["vg"], f["val"], images="coco").ids == [13]
    strict = VGWithCocoMasks(f["vg"], f["train"], iou_thresh=0.95).summary
    assert strict["with_mask"] == 1  # only the dog's box matches exactly
    with pytest.raises(ValueError, match="images must be"):
        VGWithCocoMasks(f["vg"], f["train"], images="some")
    with pytest.raises(ValueError, match="iou_thresh"):
        VGWithCocoMasks(f["vg"], f["train"], iou_thresh=0)


def test_bad_input(tmp_path):
    f = build(tmp_path / "a", coco_edit=lambda d: d["categories"][2].update(name="doggo"))
    with pytest.raises(DatasetError, match=r"instances_train2017.json: categories: id 18 is 'doggo' here but 'dog'"):
        VGWithCocoMasks(f["vg"], f["train"])
    f = build(tmp_path / "b")
    with pytest.raises(DatasetError, match=r"image id 12 is 80x60 but its COCO image 285 is 100x100: size mismatch \(strict"):
        VGWithCocoMasks(f["vg"], f["train"], strict=True)
    data = json.loads((f["vg"] / "image_data.json").read_text())
    data[0]["coco_id"] = "139"
    (f["vg"] / "image_data.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"image_data.json: image id 10: field 'coco_id' must be an integer"):
        VGWithCocoMasks(f["vg"], f["train"])
    f["train"].write_text("{")
    with pytest.raises(DatasetError, match="instances_train2017.json: not valid JSON"):
        VGWithCocoMasks(tmp_path / "a" / "vg", f["train"])
    with pytest.raises(DatasetError, match="file not found"):
        VGWithCocoMasks(tmp_path / "a" / "vg", tmp_path / "none.json")
    (tmp_path / "a" / "vg" / "VG_100K" / "11.jpg").unlink()
    with pytest.raises(DatasetError, match="image id 11 not found"):
        VGWithCocoMasks(tmp_path / "a" / "vg", build(tmp_path / "c")["train"])


def test_shared_fixtures_real_formats(tmp_path):
    """conftest's VG 1.4 folder (image 1 is COCO 139, 80x60) with conftest's COCO file (139 is 64x48)."""
    coco = coco_fixture(tmp_path / "coco")
    vg_fixture(tmp_path / "vg", extra_objects=[_obj(7, "man.n.01", 12, 6, 25, 25)])  # COCO person [10, 5, 20, 20]
    ds = VGWithCocoMasks(tmp_path / "vg", tmp_path / "coco" / "annotations" / "instances_val2017.json")
    assert ds.summary["with_mask"] == 1 and ds.summary["skipped"] == {"no_synset": 4}
    _, t = ds[0]
    m = t["masks"][t["has_mask"]][0].numpy().astype(bool)
    assert t["ann_ids"][t["has_mask"]].tolist() == [7] and m.shape == (60, 80)
    assert abs(int(m.sum()) - coco["annotations"][0]["area"] / 0.64) < 40 and m[15, 25]


def test_export_trains_through_coco_dataset_and_cli(tmp_path, capsys):
    f = build(tmp_path)
    out = tmp_path / "vg3k_train.json"
    assert main(["data", "vg-coco", "--vg", str(f["vg"]), "--coco-ann", str(f["train"]), "--exclude-coco-ann",
                 str(f["val"]), "--out", str(out), "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 3 and report["with_mask"] == 3
    data = json.loads(out.read_text())
    ds = VGWithCocoMasks(f["vg"], f["train"], exclude_coco_ids={632})
    assert data["info"]["set_A_category_ids"] == sorted(ds.set_a)
    assert {c["name"]: c.get("coco_id") for c in data["categories"]}["dog.n.01"] == 18
    split = resolve_split("coco80", data["categories"], **info_split_args(data["info"]))
    coco = CocoDataset(f["vg"], out, mask_category_ids=split.a_ids)
    assert coco.summary["with_mask"] == 3 and coco.summary["instances"] == ds.summary["instances"]
    for i in range(len(ds)):
        (_, a), (_, b) = ds[i], coco[coco.ids.index(ds.ids[i])]
        order = [b["ann_ids"].tolist().index(x) for x in a["ann_ids"].tolist()]
        assert torch.equal(a["masks"], b["masks"][order]) and torch.equal(a["has_mask"], b["has_mask"][order])
        assert torch.equal(a["labels"], b["labels"][order]) and torch.allclose(a["boxes"], b["boxes"][order])
    assert main(["data", "vg-coco", "--vg", str(f["vg"]), "--coco-ann", str(tmp_path / "x.json"),
                 "--out", str(out)]) == 2
