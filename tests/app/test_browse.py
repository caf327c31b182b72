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


def test_missing_val_knows_how_to_make_an_embedded_worlds_val_folder(tmp_path):
    from maskx_app.browse import missing_val

    m = missing_val(tmp_path / "synth3k" / "val")
    assert (m.world, m.images, m.image_size, m.seed) == ("3000-class", 1000, 256, 1)
    assert m.command.startswith("python -m maskx data synth3k --out ") and m.command.endswith("synth3k")
    m = missing_val(tmp_path / "synth-default" / "val")
    assert m.world == "80-class" and "python -m maskx data synth --out" in m.command and "--seed 1" in m.command
    assert missing_val(tmp_path / "elsewhere" / "val") is None  # nothing the app knows how to make
    assert missing_val(tmp_path / "synth3k" / "train") is None
    (tmp_path / "synth3k" / "val").mkdir(parents=True)
    assert missing_val(tmp_path / "synth3k" / "val") is None  # there: not missing (maybe not a dataset)


def test_generate_val_writes_the_worlds_first_val_images_and_reports_progress(tmp_path):
    from maskx.data.synthetic3k import render3k
    from maskx_app.browse import generate_val, generation_running, missing_val

    m = missing_val(tmp_path / "synth3k" / "val")
    seen = []
    summary = generate_val(m, 3, on_progress=lambda done, total: seen.append((done, total)), poll_s=0.01)
    assert summary["images"] == 3 and seen[-1] == (3, 3)
    assert all(t == 3 for _, t in seen) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    ds, kind = open_dataset(m.path)
    assert kind == "coco" and ds.data["info"]["seed"] == 1 and ds.data["info"]["masks"] == "all"
    assert len(ds.anns[ds.ids[0]]) == len(render3k(1, 0, 256)[1])  # image 1 of the full val set
    assert not generation_running(m.path) and not list(tmp_path.glob("synth3k/.val.tmp-*"))
    assert generate_val(m, 3) == {}  # already there: nothing generated twice
