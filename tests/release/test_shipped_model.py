"""The committed 3000-class model (models/maskx-3k): loads offline by name, knows its classes and
set A, predicts on an embedded image, and refuses a mismatched class list."""
from __future__ import annotations

import json

import numpy as np
import pytest

import maskx
from maskx.checkpoint import CheckpointError
from maskx.data.synthetic3k import categories3k, render3k, set_a_category_ids
from maskx.hub import shipped_dir
from maskx_release.ship import MAX_BYTES


@pytest.fixture(scope="module")
def shipped():
    return maskx.load("maskx-3k")


def test_the_file_is_small_enough_and_verified(shipped):
    weights = list(shipped_dir("maskx-3k").glob("ckpt_*.safetensors"))
    assert len(weights) == 1 and weights[0].stat().st_size <= MAX_BYTES
    ev = json.loads((shipped_dir("maskx-3k") / "eval.json").read_text())
    assert ev["sha256"] == shipped.meta["sha256"] and ev["B"]["segm_AP"] is not None


def test_3000_classes_and_the_80_of_set_a(shipped):
    assert len(shipped.class_names) == 3000
    assert shipped.class_names == [c["name"] for c in sorted(categories3k(), key=lambda c: c["id"])]
    assert shipped.set_a == set(set_a_category_ids()) and len(shipped.set_a) == 80


def test_predicts_named_instances_with_masks_on_an_embedded_image(shipped):
    image, _ = render3k(1, 0, 256)
    found = shipped.predict(image, score_thresh=0.3)
    assert found, "the shipped model finds nothing on a val image"
    for inst in found:
        assert inst.class_name in shipped.class_names and isinstance(inst.in_A, bool)
        assert inst.mask.shape == image.shape[:2] and inst.mask.dtype == np.bool_
    assert {i.in_A for i in found} <= {True, False}


def test_refuses_a_mismatched_class_list():
    names = [c["name"] for c in sorted(categories3k(), key=lambda c: c["id"])]
    with pytest.raises(CheckpointError, match="classes"):
        maskx.load("maskx-3k", class_names=names[:80])
    with pytest.raises(CheckpointError, match="class lists differ"):
        maskx.load("maskx-3k", class_names=names[:-1] + ["unicorn"])


def test_sparse_roi_align_forward_predicts_the_same_instances(shipped):
    """What the app loads (``roi_align_forward='sparse'``) finds what the default load finds, up to rounding."""
    fast = maskx.load("maskx-3k", roi_align_forward="sparse")
    image, _ = render3k(1, 1, 256)
    a, b = shipped.predict_raw(image), fast.predict_raw(image)
    assert len(a["labels"]) > 0 and fast.config.roi_align_forward == "sparse"
    assert shipped.config.roi_align_forward == "torchvision"
    top = a["scores"] > a["scores"].max() * 0.5  # near-ties among faint detections may swap places
    n = int(top.sum())
    assert np.array_equal(a["labels"][:n].numpy(), b["labels"][:n].numpy())
    assert np.allclose(a["boxes"][:n].numpy(), b["boxes"][:n].numpy(), atol=1e-2)
    assert np.abs(a["masks"][:n].numpy() - b["masks"][:n].numpy()).max() < 1e-3


def test_saved_examples_are_this_models_masks_on_the_app_samples():
    """models/maskx-3k/examples.json (the app draws it before torch loads) holds what the model, loaded
    as the app loads it, predicts on the app's sample images, for the shipped weights."""
    from maskx.instances import image_key, read_saved
    from maskx_release.ship import APP_ROI_ALIGN_FORWARD, example_images

    fast = maskx.load("maskx-3k", roi_align_forward=APP_ROI_ALIGN_FORWARD)
    path = shipped_dir("maskx-3k") / "examples.json"
    saved = read_saved(json.loads(path.read_text()), str(path), fast.meta["sha256"])
    samples = example_images()
    assert set(saved) == {image_key(rgb) for _, rgb in samples}
    for _, rgb in samples[:2]:
        want, got = fast.predict(rgb, score_thresh=0.0), saved[image_key(rgb)]
        assert len(got) == len(want) > 0
        top = [i for i in want if i.score > 0.5 * want[0].score]  # near-ties among faint ones may swap
        for g, w in zip(got[:len(top)], top):
            assert (g.class_name, g.in_A) == (w.class_name, w.in_A) and abs(g.score - w.score) < 1e-3
            assert np.allclose(g.box, w.box, atol=0.05)
            assert (g.mask & w.mask).sum() >= 0.98 * (g.mask | w.mask).sum()


def test_eval_json_counts_the_samples_the_saved_examples_show():
    """eval.json's ``app_samples`` count for the app's sample images is what the saved examples (the app's
    first page) show at the app's default threshold: a set-B object named right with a mask of IoU >= 0.5
    against the ground truth of the image as the generator draws it."""
    from maskx.instances import image_key, read_saved
    from maskx_app.samples import DEFAULT_SCORE, SAMPLE_SIZE
    from maskx_release.ship import example_images, shows_named_b

    folder = shipped_dir("maskx-3k")
    ev = json.loads((folder / "eval.json").read_text())
    apps = ev["app_samples"]
    assert apps["score_thresh"] == DEFAULT_SCORE
    saved = read_saved(json.loads((folder / "examples.json").read_text()), "examples.json", ev["sha256"])
    ids = apps["samples"]["ids"]
    assert len(ids) == apps["samples"]["images"] and len(saved) == len(ids)
    cats, a_ids = categories3k(), set(set_a_category_ids())  # class index k is categories3k()[k]
    shown = []
    for image_id, rgb in example_images(ids):
        _, drawn = render3k(1, image_id - 1, SAMPLE_SIZE)
        gt = [(cats[k]["id"], mask) for k, mask in drawn if cats[k]["id"] not in a_ids]
        shown.append(shows_named_b(saved[image_key(rgb)], gt, a_ids, DEFAULT_SCORE, apps["iou"]))
    assert sum(shown) == apps["samples"]["with_named_B"]
