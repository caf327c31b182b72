"""Stage-2 training on cached RoI features (maskx/roi_cache.py): the cache holds what the frozen
detector shows the mask branch, its loss equals the loss computed from the image, set-B RoIs never
reach it, runs resume exactly, and stale or broken caches are rebuilt or refused clearly."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from torchvision.ops import box_iou

from maskx.checkpoint import list_checkpoints
from maskx.config import Config, ConfigError
from maskx.data.coco import CocoDataset
from maskx.models.maskx_rcnn import build_model
from maskx.roi_cache import (CachedMaskTraining, CachedRoIs, RoICacheError, build_roi_cache, cache_matches,
                             cache_meta, ensure_roi_cache)
from maskx.train import run_training

from helpers import assert_bit_identical, model_tensors, tiny_config

MASK_BRANCH = ("roi_heads.mask_head.", "roi_heads.mask_predictor.", "roi_heads.mask_mlp.")


@pytest.fixture(scope="module")
def built(data64, tmp_path_factory):
    """A tiny stage-2 model (untrained detector: torchvision adds the GT boxes to the proposals, so
    there are positives) and its cache of 6 RoIs per image."""
    torch.manual_seed(0)
    cfg = tiny_config("transfer_clsbox_2lrelu", mask_roi_cache=6)
    data = CocoDataset(data64 / "images", data64 / "annotations.json")
    model = build_model(cfg, list(data.categories.names))  # stage mask: the detector part is frozen
    meta = cache_meta({"sha256": "abc"}, data, cfg, 6)
    cache = build_roi_cache(model, data, tmp_path_factory.mktemp("cache") / "roi_cache", meta, progress=False)
    return cfg, data, model, cache


def test_cache_rows_are_positive_rois_and_their_pooled_features(built):
    cfg, data, model, cache = built
    every = CachedRoIs(cache, range(1, 81))
    assert len(every) == len(data) and int(every.offsets[-1]) > len(data)  # several RoIs per image
    boxes = np.load(cache / "boxes.npy")
    model.eval()
    for i in range(3):
        feats, t = every[i]
        s, e = int(every.offsets[i]), int(every.offsets[i + 1])
        assert 0 < len(feats) <= 6 and feats.shape[1:] == (model.backbone.out_channels, 14, 14)
        image, target = data[i]
        with torch.no_grad():
            images, tgts = model.transform([image], [target])
            pooled = model.roi_heads.mask_roi_pool(model.backbone(images.tensors), [torch.from_numpy(boxes[s:e])],
                                                   images.image_sizes)
        torch.testing.assert_close(feats, pooled, rtol=1e-2, atol=1e-2)  # stored as float16
        iou = box_iou(torch.from_numpy(boxes[s:e]), tgts[0]["boxes"])
        best, gt = iou.max(1)
        assert bool((best >= 0.5).all())  # positives only
        assert torch.equal(t["labels"], tgts[0]["labels"][gt])
        assert float(t["mask_targets"].min()) >= 0 and float(t["mask_targets"].max()) <= 1


def test_images_without_a_mask_label_are_left_out_and_the_others_cached_as_before(built, data64, tmp_path):
    """An image whose objects are all box-only (set B of the 3000-class world) holds no rows: nothing of it
    can reach a mask loss. Every other image's rows are the ones a full build writes."""
    cfg, data, model, cache = built
    masked = sorted({it["ann"]["category_id"] for i in data.ids[:2] for it in data.anns[i]})[:1]
    some = CocoDataset(data64 / "images", data64 / "annotations.json", mask_category_ids=masked)
    part = build_roi_cache(model, some, tmp_path / "roi_cache", cache_meta({"sha256": "abc"}, some, cfg, 6),
                           progress=False)
    full, cut = np.load(cache / "offsets.npy"), np.load(part / "offsets.npy")
    feats_full, feats_cut = np.load(cache / "features.npy", mmap_mode="r"), np.load(part / "features.npy", mmap_mode="r")
    with_masks = [any(it["has_mask"] for it in some.anns[i]) for i in some.ids]
    assert any(with_masks) and not all(with_masks)
    for i, kept in enumerate(with_masks):
        if not kept:
            assert cut[i + 1] == cut[i]
        else:
            assert cut[i + 1] - cut[i] == full[i + 1] - full[i]
            np.testing.assert_array_equal(feats_cut[cut[i]:cut[i + 1]], feats_full[full[i]:full[i + 1]])


def test_cached_loss_equals_the_loss_from_the_image(built):
    cfg, data, model, cache = built
    every = CachedRoIs(cache, range(1, 81))
    boxes = np.load(cache / "boxes.npy")
    feats, t = every[0]
    s, e = int(every.offsets[0]), int(every.offsets[1])
    model.eval()
    with torch.no_grad():
        cached = CachedMaskTraining(model)([feats], [t])["loss_mask"]
    with torch.no_grad():
        images, _ = model.transform([data[0][0]])
        logits = model.roi_heads.mask_logits(model.backbone(images.tensors), [torch.from_numpy(boxes[s:e])],
                                             t["labels"], images.image_sizes)
    live = F.binary_cross_entropy_with_logits(logits, t["mask_targets"])
    assert abs(float(cached) - float(live)) < 1e-3 * max(1.0, float(live))


def test_cached_training_calls_the_models_mask_loss(built, monkeypatch):
    """One mask loss: a change to the model's ``maskx_loss`` reaches cached-RoI training too."""
    from maskx import roi_cache
    from maskx.models import roi_heads

    assert roi_cache.maskx_loss is roi_heads.maskx_loss
    calls = []
    monkeypatch.setattr(roi_cache, "maskx_loss", lambda logits, goal: calls.append(goal.shape) or logits.sum() * 0)
    cfg, data, model, cache = built
    feats, t = CachedRoIs(cache, range(1, 81))[0]
    CachedMaskTraining(model)([feats], [t])
    assert calls == [t["mask_targets"].shape]


def test_set_b_rois_never_reach_the_loss_and_only_the_mask_branch_learns(built):
    cfg, data, model, cache = built
    a_labels = list(range(1, 21))
    only_a = CachedRoIs(cache, a_labels)
    seen = torch.cat([only_a[i][1]["labels"] for i in range(len(only_a))])
    assert len(seen) and set(seen.tolist()) <= set(a_labels)
    every = CachedRoIs(cache, range(1, 81))
    assert sum(len(every[i][0]) for i in range(len(every))) > len(seen)
    # an image with set-B RoIs only gives a zero loss that still backpropagates (no NaN)
    b_only = next(i for i in range(len(every)) if len(every[i][0]) and not len(only_a[i][0]))
    loss = CachedMaskTraining(model)([only_a[b_only][0]], [only_a[b_only][1]])["loss_mask"]
    assert float(loss.detach()) == 0.0
    model.train()
    model.zero_grad(set_to_none=True)
    feats, t = every[0]
    CachedMaskTraining(model, max_per_image=2)([feats], [t])["loss_mask"].backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}
    assert grads and all(n.startswith(MASK_BRANCH) for n in grads)


def test_stale_cache_is_rebuilt_and_broken_cache_refused(built, tmp_path):
    cfg, data, model, cache = built
    meta = json.loads((cache / "meta.json").read_text())
    meta.pop("rois")
    target = tmp_path / "roi_cache"
    ensure_roi_cache(model, data, target, meta, progress=False)
    stamp = os.stat(target / "features.npy").st_mtime_ns
    ensure_roi_cache(model, data, target, meta, progress=False)  # matches: kept
    assert os.stat(target / "features.npy").st_mtime_ns == stamp
    other = {**meta, "detector_sha256": "another detector"}
    ensure_roi_cache(model, data, target, other, progress=False)  # stale: rebuilt in place
    assert json.loads((target / "meta.json").read_text())["detector_sha256"] == "another detector"
    assert not list(tmp_path.glob(".*tmp*")) and not list(tmp_path.glob("*.lock"))
    np.save(target / "labels.npy", np.load(target / "labels.npy")[:-1])
    with pytest.raises(RoICacheError, match="truncated"):
        CachedRoIs(target, [1])
    (target / "offsets.npy").write_bytes(b"not numpy")
    with pytest.raises(RoICacheError, match="unreadable RoI cache"):
        CachedRoIs(target, [1])


def test_a_builder_that_died_does_not_block_and_its_half_cache_is_removed(built, tmp_path, monkeypatch):
    import subprocess

    from maskx import roi_cache

    cfg, data, model, cache = built
    meta = json.loads((cache / "meta.json").read_text())
    meta.pop("rois")
    target = tmp_path / "roi_cache"
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "roi_cache.lock").write_text(str(dead.pid))  # its builder was killed at a session end
    half = tmp_path / ".roi_cache.tmp-x1y2"
    half.mkdir()
    (half / "features.npy").write_bytes(b"half written")

    def no_wait(seconds):
        raise AssertionError("waited for a builder that died")

    monkeypatch.setattr(roi_cache.time, "sleep", no_wait)
    ensure_roi_cache(model, data, target, meta, progress=False)
    assert cache_matches(target, meta)
    assert not half.exists() and not (tmp_path / "roi_cache.lock").exists()
    # a live holder is waited for, then taken over after wait_seconds, its folder left to it
    (tmp_path / "roi_cache.lock").write_text(str(os.getpid()))
    slow = tmp_path / ".roi_cache.tmp-slow"
    slow.mkdir()
    waits = []
    monkeypatch.setattr(roi_cache.time, "sleep", waits.append)
    other = {**meta, "detector_sha256": "another detector"}
    ensure_roi_cache(model, data, target, other, progress=False, wait_seconds=0)
    assert waits == [5] and cache_matches(target, other)
    assert slow.is_dir()


def test_what_a_build_writes_never_makes_a_cache_stale_and_a_build_never_loops(built, tmp_path, monkeypatch):
    from maskx import roi_cache

    cfg, data, model, cache = built
    meta = json.loads((cache / "meta.json").read_text())  # with the fixture build's rois and build_seconds
    meta["build_seconds"] = 12345.6  # a slower build (a loaded machine) writes another value: still a match
    target = tmp_path / "roi_cache"
    ensure_roi_cache(model, data, target, meta, progress=False)
    assert cache_matches(target, meta) and json.loads((target / "meta.json").read_text())["build_seconds"] < 12345
    assert not cache_matches(target, {**meta, "per_image": 7})
    monkeypatch.setattr(roi_cache, "build_roi_cache", lambda *a, **k: None)  # a build that writes nothing
    with pytest.raises(RoICacheError, match="does not match"):
        ensure_roi_cache(model, data, tmp_path / "other", meta, progress=False)
    assert not (tmp_path / "other.lock").exists()


def test_cache_is_for_stage_mask_only():
    with pytest.raises(ConfigError, match="stage 'mask'"):
        Config(stage="e2e", mask_roi_cache=8)
    with pytest.raises(ConfigError, match=">= 0"):
        Config(stage="mask", mask_roi_cache=-1)


def test_cache_is_refused_under_torchrun_before_any_work(data64, tmp_path, monkeypatch):
    import maskx.train as train_mod

    monkeypatch.setattr(train_mod, "_init_distributed", lambda: (0, 2, torch.device("cpu")))
    with pytest.raises(ConfigError, match="under torchrun"):
        run_training(tiny_config("agnostic", mask_roi_cache=4), data64, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # no detector trained, nothing written


@pytest.mark.slow
def test_cached_stagewise_run_trains_and_resumes_exactly(data64, tmp_path):
    cfg = tiny_config("transfer_clsbox_2lrelu", iters=3, checkpoint_every=1, mask_roi_cache=6)
    a = run_training(cfg, data64, tmp_path / "a", detector_iters=1, progress=False)
    det = tmp_path / "a" / "detector"
    assert json.loads((det / "roi_cache" / "meta.json").read_text())["per_image"] == 6
    before, after = model_tensors(list_checkpoints(tmp_path / "a")[0]), model_tensors(a)
    changed = {k for k in after if not torch.equal(before.get(k, after[k]), after[k])}
    assert changed and all(k[6:].startswith(MASK_BRANCH) for k in changed)
    b1 = run_training(cfg, data64, tmp_path / "b", detector_iters=1, stop_after=2, progress=False)
    assert b1.name == "ckpt_0000002.json"
    b = run_training(cfg, data64, tmp_path / "b", detector_iters=1, resume=True, progress=False)
    assert_bit_identical(model_tensors(a), model_tensors(b))
