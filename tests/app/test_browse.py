"""Opening a dataset folder for the app (maskx_app/browse.py): COCO and VG folders, other folders refused."""
from __future__ import annotations

import pytest

from maskx.data.coco import DatasetError
from maskx_app.browse import open_dataset


def test_open_dataset_knows_coco_and_vg_and_refuses_other_folders(tiny_synth, tmp_path):
    ds, kind = open_dataset(tiny_synth)
    assert kind == "coco" and len(ds) == 24
    ds, kind = open_dataset(tiny_synth / "annotations.json")
    assert kind == "coco"
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DatasetError, match="not a dataset folder"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such"):
        open_dataset(tmp_path / "missing")
