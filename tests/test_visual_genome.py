"""Visual Genome: VG's own file layout, top-K synsets, boxes only, bad input."""
import json

import pytest

from maskx.data.coco import DatasetError
from maskx.data.visual_genome import VisualGenomeDataset

from conftest import vg_fixture


def test_top_k_synsets_by_frequency(tmp_path):
    vg_fixture(tmp_path)
    ds = VisualGenomeDataset(tmp_path, num_classes=3)
    assert ds.categories.names == ("man.n.01", "tree.n.01", "window.n.01")
    assert ds.synset_counts == {"man.n.01": 8, "tree.n.01": 6, "window.n.01": 4}
    assert ds.outside_vocabulary == 4  # 3 shirts + 1 car
    assert ds.summary["skipped"] == {"no_synset": 4}  # "thing" has no synset and no alias
    assert len(ds) == 4 and ds.summary["instances"] == 18
    img, t = ds[0]
    assert img.shape == (3, 60, 80)
    assert set(t["labels"].tolist()) <= {1, 2, 3} and not t["has_mask"].any()
    assert (t["boxes"][:, 2:] > t["boxes"][:, :2]).all()
    ds[1]  # found in VG_100K_2


def test_alias_clip_duplicate(tmp_path):
    extra = [
        {"synsets": [], "names": ["Guy"], "object_id": 1, "x": 70, "y": 50, "w": 30, "h": 30},  # alias, clipped
        {"synsets": ["man.n.01"], "names": ["man"], "object_id": 1, "x": 0, "y": 0, "w": 5, "h": 5},  # repeat id
        {"synsets": ["man.n.01"], "names": ["man"], "object_id": 2, "x": 90, "y": 0, "w": 5, "h": 5},  # outside
        {"synsets": ["man.n.01"], "names": ["man"], "object_id": 3, "x": 1, "y": 1, "w": 0, "h": 5},  # zero
    ]
    vg_fixture(tmp_path, extra)
    ds = VisualGenomeDataset(tmp_path, num_classes=3000)
    assert len(ds.categories.ids) == 5
    assert ds.summary["skipped"] == {"no_synset": 4, "duplicate_object_id": 1, "zero_area_box": 2}
    _, t = ds[0]
    guy = t["ann_ids"].tolist().index(1)
    assert t["boxes"][guy].tolist() == [70, 50, 80, 60] and ds.categories.name(int(t["labels"][guy])) == "man.n.01"
    with pytest.raises(DatasetError, match=r"object id 1006: no synset \(strict mode\)"):
        VisualGenomeDataset(tmp_path, strict=True)
    coco = ds.to_coco()
    assert len(coco["categories"]) == 5 and len(coco["annotations"]) == ds.summary["instances"]
    assert coco["annotations"][0]["bbox"][2] > 0


def test_bad_vg_input(tmp_path):
    vg_fixture(tmp_path)
    (tmp_path / "VG_100K_2" / "2.jpg").unlink()
    with pytest.raises(DatasetError, match="image id 2 not found"):
        VisualGenomeDataset(tmp_path)
    data = json.loads((tmp_path / "image_data.json").read_text())
    (tmp_path / "image_data.json").write_text(json.dumps(data + [data[0]]))
    with pytest.raises(DatasetError, match="duplicate image id 1"):
        VisualGenomeDataset(tmp_path, check_files=False)
    (tmp_path / "image_data.json").write_text(json.dumps(data[1:]))
    with pytest.raises(DatasetError, match="objects.json: \\[0\\]: image id 1 is not in image_data.json"):
        VisualGenomeDataset(tmp_path, check_files=False)
    (tmp_path / "objects.json").write_text("[")
    with pytest.raises(DatasetError, match="objects.json: not valid JSON"):
        VisualGenomeDataset(tmp_path, check_files=False)
    with pytest.raises(ValueError, match="num_classes"):
        VisualGenomeDataset(tmp_path, num_classes=0)
