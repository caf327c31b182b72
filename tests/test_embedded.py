"""The front door to the embedded dataset's versions (maskx.data.embedded): each version draws its
frozen world, byte for byte; unknown versions are refused; ensure_dataset regenerates another
version's folder and leaves a current one alone."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import folder_digest
from maskx.data import attribute_world, embedded, synthetic


def test_the_current_version_is_frozen_and_every_version_stays_drawable():
    assert embedded.GENERATOR_VERSION == max(embedded.WORLDS) and embedded.WORLDS[3] is None
    assert embedded.WORLDS[4] in attribute_world.WORLDS
    for v in embedded.WORLDS:
        cats = embedded.categories(v)
        assert len(cats) == 80 and [c["id"] for c in cats] == list(synthetic.COCO_CATEGORY_IDS)
        assert len(embedded.voc_like_category_ids(v)) == 20
    assert embedded.categories(3) == synthetic.categories()
    assert all(len(c["attributes"]) == 3 for c in embedded.categories(4))
    for bad in (2, 99, None):
        with pytest.raises(ValueError, match="generator version must be one of"):
            embedded.categories(bad)
    with pytest.raises(ValueError, match="generator version must be one of"):
        embedded.render(0, 0, 64, 5)


def test_each_version_draws_its_world_byte_for_byte(tmp_path):
    a = embedded.render(2, 3, 96, 3)
    b = synthetic.render(2, 3, 96)
    assert np.array_equal(a[0], b[0]) and len(a[1]) == len(b[1])
    c = embedded.render(2, 3, 96, 4)
    d = attribute_world.render(2, 3, 96, 4, embedded.WORLDS[4])
    assert np.array_equal(c[0], d[0]) and not np.array_equal(a[0], c[0])
    embedded.generate(tmp_path / "v4", 3, seed=5, image_size=64)
    attribute_world.generate(tmp_path / "direct", 3, seed=5, image_size=64, version=4, world=embedded.WORLDS[4])
    assert folder_digest(tmp_path / "v4") == folder_digest(tmp_path / "direct")
    info = json.loads((tmp_path / "v4" / "annotations.json").read_text())["info"]
    assert info["generator_version"] == 4 and info["world"] == embedded.WORLDS[4]
    embedded.generate(tmp_path / "v3", 3, seed=5, image_size=64, version=3)
    synthetic.generate(tmp_path / "v3direct", 3, seed=5, image_size=64)
    assert folder_digest(tmp_path / "v3") == folder_digest(tmp_path / "v3direct")


def test_ensure_dataset_regenerates_another_version_only(tmp_path, monkeypatch):
    monkeypatch.setitem(synthetic.SIZES, "t", {"train": 2, "val": 1, "image_size": 64})
    root = tmp_path / "data"
    embedded.ensure_dataset(root, "t", workers=1, progress=False, version=3)
    assert json.loads((root / "val" / "annotations.json").read_text())["info"]["generator_version"] == 3
    paths = embedded.ensure_dataset(root, "t", workers=1, progress=False)
    for part in ("train", "val"):
        assert json.loads(paths[part].read_text())["info"]["generator_version"] == embedded.GENERATOR_VERSION
    before = folder_digest(root)
    calls = []
    monkeypatch.setattr(embedded, "generate", lambda *a, **k: calls.append(a))
    embedded.ensure_dataset(root, "t", workers=1, progress=False)
    assert calls == [] and folder_digest(root) == before
    with pytest.raises(ValueError, match="unknown dataset size"):
        embedded.ensure_dataset(root, "huge")
