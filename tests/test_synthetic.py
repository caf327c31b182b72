"""Version 3 of the embedded generator (the families world) and the writing every world shares:
determinism, COCO validity, the designed structure, atomic writes."""
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from helpers import folder_digest
from maskx.data import synthetic
from maskx.data.shapes import FAMILIES
from maskx.data.synthetic import COCO_CATEGORY_IDS, SIZES, VERSION, generate, render


@pytest.fixture(scope="module")
def tiny_v3(tmp_path_factory) -> Path:
    """The 'tiny' size of this world (train part)."""
    out = tmp_path_factory.mktemp("synth3") / "tiny"
    generate(out, SIZES["tiny"]["train"], seed=0, image_size=SIZES["tiny"]["image_size"])
    return out


def test_same_seed_same_bytes(tmp_path, tiny_v3):
    again = tmp_path / "again"
    generate(again, 24, seed=0, image_size=128)
    assert folder_digest(again) == folder_digest(tiny_v3)


def test_workers_do_not_change_bytes(tmp_path):
    generate(tmp_path / "a", 6, seed=3, image_size=96, workers=1)
    generate(tmp_path / "b", 6, seed=3, image_size=96, workers=2)
    assert folder_digest(tmp_path / "a") == folder_digest(tmp_path / "b")


def test_other_seed_other_images_and_prefix_stable(tmp_path):
    generate(tmp_path / "s1", 4, seed=1, image_size=96)
    generate(tmp_path / "s2", 4, seed=2, image_size=96)
    generate(tmp_path / "s1long", 6, seed=1, image_size=96)
    a = (tmp_path / "s1/images/000001.jpg").read_bytes()
    assert a != (tmp_path / "s2/images/000001.jpg").read_bytes()
    # image i depends on (seed, i) only: a longer dataset starts with the shorter one
    assert a == (tmp_path / "s1long/images/000001.jpg").read_bytes()


def test_categories_are_coco_like(tiny_v3):
    data = json.loads((tiny_v3 / "annotations.json").read_text())
    ids = [c["id"] for c in data["categories"]]
    assert len(ids) == 80 and ids == list(COCO_CATEGORY_IDS)
    assert ids != list(range(1, 81)), "ids must not be contiguous, like COCO's"
    assert len({c["name"] for c in data["categories"]}) == 80
    assert data["info"]["generator_version"] == VERSION == 3
    voc = data["info"]["voc_like_category_ids"]
    assert len(voc) == 20 and set(voc) <= set(ids)
    fams = [c["supercategory"] for c in data["categories"] if c["id"] in voc]
    # spread like VOC's classes over COCO's supercategories: 7, 6, 4, 1, 1, 1 and four families with none
    assert sorted((fams.count(f.name) for f in FAMILIES), reverse=True) == [7, 6, 4, 1, 1, 1, 0, 0, 0, 0]
    assert all(fams.count(f.name) < 8 for f in FAMILIES), "every family keeps a non-voc class (nonvoc2voc's A)"


def test_annotations_match_masks(tiny_v3):
    data = json.loads((tiny_v3 / "annotations.json").read_text())
    assert len(data["annotations"]) > 2 * len(data["images"])
    by_image = {}
    for a in data["annotations"]:
        rle = {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
        m = mask_utils.decode(rle).astype(bool)
        assert m.sum() == a["area"] > 0
        assert np.allclose(mask_utils.toBbox(rle), a["bbox"])
        by_image.setdefault(a["image_id"], []).append(m)
    # visible masks of one image never overlap: occluded parts are removed from the mask
    for masks in by_image.values():
        assert (np.sum(masks, 0) <= 1).all()


def test_render_occlusion_and_variety():
    # over many images: objects get occluded (some visible masks are not their full shape)
    # and every family appears
    seen = set()
    for i in range(40):
        img, inst = render(5, i, 128)
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8
        seen |= {c // 8 for c, _ in inst}
    assert seen == set(range(10))


def test_class_weights_long_tailed():
    w = synthetic.class_weights()
    assert np.isclose(w.sum(), 1) and w.max() / w.min() > 4


def test_refuses_to_overwrite_and_keeps_old(tmp_path):
    out = tmp_path / "d"
    generate(out, 2, seed=0, image_size=64)
    before = folder_digest(out)
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate(out, 3, seed=1, image_size=64)
    assert folder_digest(out) == before


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    def boom(job):
        raise RuntimeError("disk full")
    monkeypatch.setattr(synthetic, "_make_image", boom)
    with pytest.raises(RuntimeError):
        generate(tmp_path / "x", 2, seed=0, image_size=64)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, msg", [({"num_images": 0}, "--images"), ({"image_size": 8}, "--image-size")])
def test_bad_arguments(tmp_path, kwargs, msg):
    args = {"num_images": 2, "image_size": 64} | kwargs
    with pytest.raises(ValueError, match=msg):
        generate(tmp_path / "d", args["num_images"], image_size=args["image_size"])


def test_a_rendered_image_as_stored_is_what_its_file_decodes_to(tmp_path):
    """The app's rendered samples and the shipped examples use ``as_stored``: the same pixels as the
    dataset's file, so saved and live predictions of one sample see one input."""
    from PIL import Image

    from maskx.data.synthetic import as_stored

    generate(tmp_path / "d", 2, seed=1, image_size=64)
    for k in range(2):
        on_disk = np.asarray(Image.open(tmp_path / "d" / "images" / f"{k + 1:06d}.jpg").convert("RGB"))
        assert np.array_equal(as_stored(render(1, k, 64)[0]), on_disk)
