"""Shared fixtures: the tiny embedded dataset, and small fixtures written in COCO's and VG's real formats."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

# Test modules here and in tests/study/, tests/release/ and tests/app/ import this folder's shared modules
# by name (helpers, app_fixtures, conftest). pytest's default "prepend" import mode already puts this folder
# on sys.path when it imports this file; the lines below make that explicit. No folder has an __init__.py,
# so each test file's name must be unique across the folders.
TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from helpers import tiny_config  # noqa: E402
from maskx.data.embedded import generate  # noqa: E402
from maskx.data.synthetic import SIZES  # noqa: E402


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """The 'tiny' embedded dataset (train part), generated once per test session."""
    out = tmp_path_factory.mktemp("synth") / "tiny"
    generate(out, SIZES["tiny"]["train"], seed=0, image_size=SIZES["tiny"]["image_size"])
    return out


@pytest.fixture(scope="session")
def data64(tmp_path_factory) -> Path:
    """4 embedded images at 64 px (80 classes, voc-like ids in ``info``): for small training runs.
    Generator version 3 (frozen): its first 4 images hold 6 voc-like (set-A) instances, which the
    mask losses of a few-step voc2nonvoc run need; version 4's hold 1. Shared by the session: tests
    must not write into it."""
    out = tmp_path_factory.mktemp("data64") / "d"
    generate(out, 4, seed=0, image_size=64, version=3)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Train on one thread (2 shared cores); restore the setting for other modules. The modules that
    train ask for it for every test: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, data64) -> Path:
    """A 2-iteration Mask^X run (scores kept down to 0, so an untrained model still detects), trained on
    one thread. Shared by the session (tests/test_engine.py, test_train.py, test_checkpoint.py,
    test_predictor.py): tests copy it before writing."""
    from maskx.train import run_training

    out = tmp_path_factory.mktemp("runs") / "maskx"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_training(tiny_config(iters=2, checkpoint_every=1, score_thresh=0.0), data64, out, progress=False)
    finally:
        torch.set_num_threads(before)
    return out


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """The tiny scale's gate runs and one end-to-end run, trained once per session (about a minute):
    shared by the slow tests of tests/study/test_runner.py, test_detection_cache.py and test_evaluation.py."""
    import dataclasses

    from maskx_study.runner import SCALES, Run, Study, plan

    root = tmp_path_factory.mktemp("study")
    scale = dataclasses.replace(SCALES["tiny"], data=str(root / "data"))
    study = Study(scale, results_dir=root / "results", runs_dir=root / "runs", progress=False, log=lambda m: None)
    runs = plan(scale, ["gate"]) + [Run("agnostic_e2e", "voc2nonvoc", 0, scale.backbone)]
    written = study.run(runs)
    return study, runs, written


def write_image(path: Path, h: int, w: int, mode: str = "RGB", seed: int = 0, fmt: str | None = None) -> None:
    rng = np.random.default_rng(seed)
    chans = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 255, size=(h, w, chans), dtype=np.uint8)
    Image.fromarray(arr[..., 0] if chans == 1 else arr, mode).save(path, format=fmt)


def _rle_str(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(r["size"]), "counts": r["counts"].decode("ascii")}


def _rle_uncompressed(mask: np.ndarray) -> dict:
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


# A subset of COCO 2017's real categories (real ids and names, supercategories as in COCO).
COCO_CATS = [{"id": 1, "name": "person", "supercategory": "person"},
             {"id": 3, "name": "car", "supercategory": "vehicle"},
             {"id": 18, "name": "dog", "supercategory": "animal"},
             {"id": 44, "name": "bottle", "supercategory": "kitchen"},
             {"id": 62, "name": "chair", "supercategory": "furniture"},
             {"id": 90, "name": "toothbrush", "supercategory": "indoor"}]


def coco_fixture(root: Path) -> dict:
    """A 3-image COCO 2017-style folder: polygons, uncompressed RLE (crowd), compressed RLE.

    Returns the annotation dict (also written to root/annotations/instances_val2017.json)
    and the expected mask areas by annotation id under ``_expected_area``.
    """
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns, expected = [], [], {}
    h, w = 48, 64
    for i, fn in enumerate(["000000000139.jpg", "000000000285.jpg", "000000000632.jpg"]):
        write_image(root / "val2017" / fn, h, w, seed=i)
        images.append({"id": 139 + i, "file_name": fn, "height": h, "width": w, "license": 1})
    # image 139: a polygon person (rectangle 10..30 x 5..25) and a compressed-RLE dog
    anns.append({"id": 1001, "image_id": 139, "category_id": 1, "iscrowd": 0, "area": 400.0,
                 "bbox": [10.0, 5.0, 20.0, 20.0], "segmentation": [[10, 5, 30, 5, 30, 25, 10, 25]]})
    dog = np.zeros((h, w), bool)
    dog[30:40, 40:60] = True
    expected[1002] = int(dog.sum())
    anns.append({"id": 1002, "image_id": 139, "category_id": 18, "iscrowd": 0, "area": float(dog.sum()),
                 "bbox": [40.0, 30.0, 20.0, 10.0], "segmentation": _rle_str(dog)})
    # image 140: a crowd of people as uncompressed RLE, and a car polygon made of two parts
    crowd = np.zeros((h, w), bool)
    crowd[0:20, 0:30] = True
    anns.append({"id": 1003, "image_id": 140, "category_id": 1, "iscrowd": 1, "area": float(crowd.sum()),
                 "bbox": [0.0, 0.0, 30.0, 20.0], "segmentation": _rle_uncompressed(crowd)})
    anns.append({"id": 1004, "image_id": 140, "category_id": 3, "iscrowd": 0, "area": 200.0,
                 "bbox": [20.0, 20.0, 30.0, 20.0],
                 "segmentation": [[20, 20, 30, 20, 30, 30, 20, 30], [40, 30, 50, 30, 50, 40, 40, 40]]})
    # image 141: a bottle as uncompressed RLE, not crowd (COCO allows it)
    bottle = np.zeros((h, w), bool)
    bottle[5:45, 2:8] = True
    expected[1005] = int(bottle.sum())
    anns.append({"id": 1005, "image_id": 141, "category_id": 44, "iscrowd": 0, "area": float(bottle.sum()),
                 "bbox": [2.0, 5.0, 6.0, 40.0], "segmentation": _rle_uncompressed(bottle)})
    data = {"info": {"description": "fixture in COCO 2017 format"}, "licenses": [], "images": images,
            "annotations": anns, "categories": COCO_CATS}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    data["_expected_area"] = expected
    return data


def vg_fixture(root: Path, extra_objects: list | None = None) -> None:
    """A 4-image Visual Genome folder in VG 1.4's exact file layout."""
    (root / "VG_100K").mkdir(parents=True)
    (root / "VG_100K_2").mkdir()
    image_data, objects = [], []
    synsets = ["man.n.01", "tree.n.01", "window.n.01", "shirt.n.01", "car.n.01"]
    rng = np.random.default_rng(0)
    oid = 1000
    for k, iid in enumerate([1, 2, 107899, 2417890]):
        folder = "VG_100K_2" if k % 2 else "VG_100K"
        write_image(root / folder / f"{iid}.jpg", 60, 80, seed=k)
        image_data.append({"width": 80, "url": f"https://cs.stanford.edu/people/rak248/{folder}/{iid}.jpg",
                           "height": 60, "image_id": iid, "coco_id": 139 if k == 0 else None, "flickr_id": None})
        objs = []
        # frequencies: man 8, tree 6, window 4, shirt 3, car 1 (+ one object with no synset)
        for s, n in zip(synsets, [2, 2, 1, 1, 0] if k < 3 else [2, 0, 1, 0, 1]):
            for _ in range(n):
                x, y = int(rng.integers(0, 50)), int(rng.integers(0, 30))
                objs.append({"synsets": [s], "h": 20, "object_id": oid, "merged_object_ids": [],
                             "names": [s.split(".")[0]], "w": 25, "y": y, "x": x})
                oid += 1
        objs.append({"synsets": [], "h": 10, "object_id": oid, "merged_object_ids": [], "names": ["thing"],
                     "w": 10, "y": 0, "x": 0})
        oid += 1
        if k == 0:
            objs.extend(extra_objects or [])
        objects.append({"image_id": iid, "objects": objs,
                        "image_url": f"https://cs.stanford.edu/people/rak248/{folder}/{iid}.jpg"})
    (root / "image_data.json").write_text(json.dumps(image_data))
    (root / "objects.json").write_text(json.dumps(objects))
    (root / "object_synsets.json").write_text(json.dumps({"man": "man.n.01", "guy": "man.n.01",
                                                          "tree": "tree.n.01"}))


# the app's fixtures (a tiny trained model, val images, fake study results), shared by
# tests/app/test_app.py and tests/app/test_app_browser.py so that the model is trained once per session
from app_fixtures import app_val, fake_results, tiny_model  # noqa: E402,F401
