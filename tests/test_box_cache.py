"""Stage ``box`` (maskx/box_cache.py): the cache holds the detector sampler's RoIs and their pooled
features, its loss is torchvision's Fast R-CNN loss with weighted negatives, only the box head
learns, runs resume exactly, and the result serves as a stage-``mask`` run's detector."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import fastrcnn_loss

from maskx.box_cache import CachedBoxRoIs, CachedBoxTraining, box_cache_meta, box_head_loss, build_box_cache
from maskx.checkpoint import find_checkpoint, list_checkpoints
from maskx.config import ConfigError
from maskx.data.coco import CocoDataset
from maskx.models.maskx_rcnn import build_model
from maskx.roi_cache import ARRAYS as ROI_ARRAYS, adopt_roi_cache, build_roi_cache, cache_meta
from maskx.train import load_detector, run_training

from helpers import assert_bit_identical, model_tensors, tiny_config


@pytest.fixture(scope="module")
def detector(data64, tmp_path_factory):
    out = tmp_path_factory.mktemp("boxdet") / "detector"
    run_training(tiny_config("detector", iters=2, checkpoint_every=2), data64, out, progress=False)
    return out


def box_config(detector, **kw):
    return tiny_config("detector", **{"stage": "box", "detector": str(detector), "optimizer": "adamw", "base_lr": 0.01,
                                      "box_cache_positives": 5, "box_cache_negatives": 3, **kw})


def test_cache_keeps_capped_positives_and_negatives_with_their_targets(data64, tmp_path):
    torch.manual_seed(0)
    cfg = box_config("unused")
    data = CocoDataset(data64 / "images", data64 / "annotations.json")
    model = build_model(cfg, list(data.categories.names))
    meta = box_cache_meta({"sha256": "abc"}, data, cfg)
    cache = CachedBoxRoIs(build_box_cache(model, data, tmp_path / "box_cache", meta, progress=False))
    assert len(cache) == len(data)
    for i in range(len(data)):
        feats, t = cache[i]
        _, target = data[i]
        gt = len(target["boxes"])
        # every ground-truth box first (its own box: regression target 0), then the capped sample
        assert torch.equal(t["labels"][:gt], target["labels"])
        assert not t["regression_targets"][:gt].any() and t["regression_targets"][gt:][t["labels"][gt:] > 0].any(1).all()
        pos, neg = int((t["labels"][gt:] > 0).sum()), int((t["labels"] == 0).sum())
        assert pos <= 5 and neg <= 3 and feats.shape[1:] == (model.backbone.out_channels, 7, 7)
        assert t["regression_targets"].shape == (len(feats), 4)
    assert int((cache.labels > 0).sum()) > 0 and int((cache.labels == 0).sum()) > 0


def test_roi_groups_partition_the_cache_across_images(data64, detector, tmp_path):
    """``box_batch_rois=G``: items are groups of G RoIs drawn from the whole cache, each RoI in one group
    at most, with its own features and targets; the same seed draws the same groups."""
    run_training(box_config(detector, iters=1, checkpoint_every=1, batch_size=2, box_batch_rois=4), data64,
                 tmp_path / "box", progress=False)  # a step reads 2 groups of 4 RoIs
    cache_dir = tmp_path / "box" / "box_cache"
    by_image, groups = CachedBoxRoIs(cache_dir), CachedBoxRoIs(cache_dir, group=4, seed=0)
    rois = int(by_image.offsets[-1])
    assert len(groups) == rois // 4 and rois // 4 > len(by_image)
    rows = np.concatenate(list(groups.order))
    assert len(set(rows.tolist())) == len(rows) == 4 * (rois // 4)
    image_of = np.searchsorted(by_image.offsets, rows, side="right") - 1
    assert len(set(image_of[:4 * 8].tolist())) > 2  # the first 8 groups draw from many images
    for i in (0, len(groups) - 1):
        feats, t = groups[i]
        row = np.sort(groups.order[i])
        assert torch.equal(feats, torch.from_numpy(np.asarray(by_image.features[row], np.float32)))
        assert torch.equal(t["labels"], torch.from_numpy(by_image.labels[row]))
        assert torch.equal(t["regression_targets"], torch.from_numpy(by_image.targets[row]))
    assert np.array_equal(CachedBoxRoIs(cache_dir, group=4, seed=0).order, groups.order)
    assert not np.array_equal(CachedBoxRoIs(cache_dir, group=4, seed=1).order, groups.order)
    with pytest.raises(ConfigError, match="box_batch_rois"):
        box_config(detector, box_batch_rois=-1)


def test_box_head_loss_is_fastrcnn_loss_when_negatives_weigh_one():
    from maskx.box_cache import own_class_regression

    g = torch.Generator().manual_seed(0)
    x, bbox_pred = torch.randn(12, 8, generator=g), torch.nn.Linear(8, 24)
    logits, boxes = torch.randn(12, 6, generator=g), bbox_pred(x)
    labels, reg = torch.tensor([0, 0, 0, 1, 2, 3, 4, 5, 0, 2, 0, 1]), torch.randn(12, 4, generator=g)
    pos = labels > 0
    own = own_class_regression(bbox_pred, x[pos], labels[pos])
    torch.testing.assert_close(own, boxes.reshape(12, 6, 4)[pos, labels[pos]])
    ours = box_head_loss(logits, own, labels, reg, background_weight=1.0)
    cls, box = fastrcnn_loss(logits, boxes, [labels], [reg])
    torch.testing.assert_close(ours["loss_classifier"], cls)
    torch.testing.assert_close(ours["loss_box_reg"], box)
    heavier = box_head_loss(logits, own, labels, reg, background_weight=3.0)["loss_classifier"]
    assert not torch.isclose(heavier, cls)


def test_positives_below_cls_iou_are_regressed_but_not_classified(monkeypatch):
    from torchvision.models.detection._utils import BoxCoder

    from maskx import box_cache

    cfg = box_config("unused")
    model = build_model(cfg, [f"c{k}" for k in range(80)])
    rois = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 8], [0, 0, 10, 6], [0, 0, 10, 10]])  # IoU 1, 0.8, 0.6
    t = {"labels": torch.tensor([3, 3, 3, 0]), "regression_targets": BoxCoder((10.0, 10.0, 5.0, 5.0)).encode_single(boxes, rois)}
    t["regression_targets"][3] = 0
    f = torch.randn(4, model.backbone.out_channels, 7, 7)
    seen = {}
    real = box_cache.box_head_loss
    monkeypatch.setattr(box_cache, "box_head_loss", lambda *a: seen.update(classify=a[5], loss=real(*a)) or seen["loss"])
    for cls_iou, classified in ((0.5, [True, True, True, True]), (0.7, [True, True, False, True]), (1.0, [True, False, False, True])):
        out = CachedBoxTraining(model, hflip=0.0, cls_iou=cls_iou).eval()([f], [t])
        assert seen["classify"].tolist() == classified
        logits = model.roi_heads.box_predictor.cls_score(model.roi_heads.box_head(f))
        keep = torch.tensor(classified)
        weight = torch.ones(logits.shape[1])
        weight[0] = 3.0
        expect = torch.nn.functional.cross_entropy(logits[keep], t["labels"][keep], weight=weight)
        torch.testing.assert_close(out["loss_classifier"], expect)
        assert out["loss_box_reg"] > 0  # all three positives still regressed


def test_a_flip_mirrors_the_features_and_the_x_offset(monkeypatch):
    from maskx import box_cache

    cfg = box_config("unused")
    model = build_model(cfg, [f"c{k}" for k in range(80)])
    seen = {}

    def head(x):
        seen["x"] = x
        return torch.zeros(len(x), cfg.box_head_dim)

    monkeypatch.setattr(model.roi_heads.box_head, "forward", head)
    monkeypatch.setattr(box_cache, "box_head_loss", lambda logits, boxes, labels, regs, w, c: seen.update(regs=regs) or {})
    monkeypatch.setattr(box_cache, "own_class_regression", lambda bbox_pred, x, labels: None)
    f = torch.arange(2 * 3 * 7 * 7, dtype=torch.float32).reshape(2, 3, 7, 7)
    reg = torch.tensor([[0.5, 0.1, 0.2, 0.3], [0.0, 0.0, 0.0, 0.0]])
    t = {"labels": torch.tensor([1, 0]), "regression_targets": reg}
    net = CachedBoxTraining(model, hflip=1.0).train()
    net([f], [t])
    assert torch.equal(seen["x"], f.flip(-1)) and torch.equal(seen["regs"], reg * torch.tensor([-1.0, 1, 1, 1]))
    net = CachedBoxTraining(model, hflip=0.0).train()
    net([f], [t])
    assert torch.equal(seen["x"], f) and torch.equal(seen["regs"], reg)


def test_stage_box_trains_only_the_box_head_resumes_exactly_and_feeds_a_mask_run(data64, detector, tmp_path):
    cfg = box_config(detector, iters=4, checkpoint_every=2, batch_size=4)
    run_training(cfg, data64, tmp_path / "full", progress=False)
    run_training(cfg, data64, tmp_path / "cut", progress=False, stop_after=2)
    run_training(cfg, data64, tmp_path / "cut", resume=True, progress=False)
    full, cut = (model_tensors(list_checkpoints(tmp_path / d)[-1]) for d in ("full", "cut"))
    assert_bit_identical(full, cut)  # AdamW's moments are checkpointed
    before = model_tensors(list_checkpoints(detector)[-1])
    changed = {k for k in full if not torch.equal(full[k], before[k])}
    assert changed and all(k.startswith(("model.roi_heads.box_head.", "model.roi_heads.box_predictor.")) for k in changed)
    meta, tensors = find_checkpoint(tmp_path / "full")
    assert any(k.endswith(".exp_avg_sq") for k in tensors)
    mask = tiny_config("transfer_clsbox_2lrelu", detector=str(tmp_path / "full"), iters=1, checkpoint_every=1)
    run_training(mask, data64, tmp_path / "mask", progress=False)
    after = model_tensors(list_checkpoints(tmp_path / "mask")[-1])
    assert torch.equal(after["model.roi_heads.box_predictor.cls_score.weight"],
                       full["model.roi_heads.box_predictor.cls_score.weight"])


def test_the_box_stage_writes_the_mask_runs_roi_cache_in_its_own_pass(data64, detector, tmp_path, monkeypatch):
    """``box_cache_mask_rois=K``: the box cache's pass also writes the mask RoI cache of the detector the
    box stage trains, row for row what a stage-mask run on it builds alone (same forward, same draw),
    named after the run's checkpoint once it is done; the mask run then trains without a second pass."""
    cfg = box_config(detector, iters=2, checkpoint_every=2, batch_size=4, box_cache_mask_rois=4)
    run_training(cfg, data64, tmp_path / "box", progress=False)
    staged = tmp_path / "box" / "roi_cache"
    box_ckpt, _ = find_checkpoint(tmp_path / "box")
    assert json.loads((staged / "meta.json").read_text())["detector_sha256"] == box_ckpt["sha256"]

    mask_cfg = tiny_config("transfer_clsbox_2lrelu", detector=str(tmp_path / "box"), iters=1, checkpoint_every=1,
                           mask_roi_cache=4)
    every = CocoDataset(data64 / "images", data64 / "annotations.json")
    torch.manual_seed(0)
    model = build_model(mask_cfg, list(every.categories.names))
    load_detector(model, tmp_path / "box", every, mask_cfg)
    alone = build_roi_cache(model, every, tmp_path / "alone", cache_meta(box_ckpt, every, mask_cfg, 4), progress=False)
    for name in ROI_ARRAYS:
        assert np.array_equal(np.load(staged / f"{name}.npy"), np.load(alone / f"{name}.npy")), name
    assert int(np.load(staged / "offsets.npy")[-1]) > 0

    def second_pass(*args, **kwargs):
        raise AssertionError("the mask run rebuilt the RoI cache")

    monkeypatch.setattr("maskx.roi_cache.build_roi_cache", second_pass)
    run_training(mask_cfg, data64, tmp_path / "mask", progress=False)
    assert list_checkpoints(tmp_path / "mask")


def test_a_staged_roi_cache_is_adopted_only_from_the_detector_it_was_built_on(data64, detector, tmp_path):
    cfg = box_config(detector, iters=2, checkpoint_every=2, batch_size=4, box_cache_mask_rois=4)
    run_training(cfg, data64, tmp_path / "box", progress=False)
    meta_path = tmp_path / "box" / "roi_cache" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "detector_sha256": None}))  # staged again
    assert not adopt_roi_cache(tmp_path / "box", tmp_path / "box")  # built from the detector, not from the box run
    assert json.loads(meta_path.read_text())["detector_sha256"] is None
    assert adopt_roi_cache(tmp_path / "box", detector)
    assert not adopt_roi_cache(tmp_path / "box", detector)  # adopted once: no longer staged
    with pytest.raises(ConfigError, match="box_cache_mask_rois"):
        tiny_config("transfer_clsbox_2lrelu", box_cache_mask_rois=4)


def test_stage_box_needs_a_detector(data64, tmp_path):
    with pytest.raises(ConfigError, match="detector"):
        run_training(tiny_config("detector", stage="box"), data64, tmp_path / "box", progress=False)
    with pytest.raises(ConfigError, match="optimizer"):
        tiny_config("detector", optimizer="adam")
    assert np.isfinite(box_config("x").box_background_weight)


def test_box_reinit_starts_the_chosen_layers_afresh(data64, detector, tmp_path):
    before = model_tensors(list_checkpoints(detector)[-1])
    for reinit, fresh in (("predictor", ("box_predictor.",)), ("head", ("box_predictor.", "box_head."))):
        run_training(box_config(detector, iters=1, checkpoint_every=1, base_lr=1e-12, box_reinit=reinit), data64,
                     tmp_path / reinit, progress=False)
        after = model_tensors(list_checkpoints(tmp_path / reinit)[-1])
        for k in after:
            moved = not torch.equal(after[k], before[k])
            assert moved == any(f"model.roi_heads.{f}" in k for f in fresh), k
    with pytest.raises(ConfigError, match="box_reinit"):
        box_config(detector, box_reinit="all")


def test_a_detached_regressor_leaves_the_fcs_to_the_classifier():
    cfg = box_config("unused")
    model = build_model(cfg, [f"c{k}" for k in range(80)])
    f = torch.randn(6, model.backbone.out_channels, 7, 7, generator=torch.Generator().manual_seed(0))
    t = {"labels": torch.tensor([3, 5, 0, 7, 0, 2]), "regression_targets": torch.randn(6, 4)}
    fc6 = model.roi_heads.box_head.fc6.weight
    grads = {}
    for detach in (False, True):
        net = CachedBoxTraining(model, hflip=0.0, detach_regression=detach).train()
        model.zero_grad()
        net([f], [t])["loss_box_reg"].backward()
        grads[detach] = (fc6.grad.abs().sum().item() if fc6.grad is not None else 0.0,
                         model.roi_heads.box_predictor.bbox_pred.weight.grad.abs().sum().item())
    assert grads[False][0] > 0 and grads[True][0] == 0.0  # the FCs get no regression gradient ...
    assert grads[True][1] > 0  # ... and the regressor still learns


def test_own_class_regression_gradients_are_the_same_every_run_with_repeated_classes():
    """The regressor's class rows get each repeat's gradient in a fixed order: stage box reproduces bit
    for bit on 2 threads (advanced indexing's backward sums repeats in a thread-dependent order)."""
    from maskx.box_cache import own_class_regression

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        reg = torch.nn.Linear(512, 3001 * 4)
        x, labels, upstream = torch.randn(768, 512), torch.randint(1, 40, (768,)), torch.randn(768, 4)

        def grads():
            reg.zero_grad()
            (own_class_regression(reg, x, labels) * upstream).sum().backward()
            return reg.weight.grad.clone(), reg.bias.grad.clone()

        first = grads()
        assert all(all(torch.equal(a, b) for a, b in zip(first, grads())) for _ in range(10))
    finally:
        torch.set_num_threads(threads)


def test_iou_from_targets_is_the_iou_of_the_roi_with_its_box():
    from torchvision.models.detection._utils import BoxCoder
    from torchvision.ops import box_iou

    from maskx.box_cache import iou_from_targets

    g = torch.Generator().manual_seed(0)
    rois = torch.rand(200, 2, generator=g) * 100
    rois = torch.cat([rois, rois + 5 + torch.rand(200, 2, generator=g) * 50], 1)
    boxes = rois + torch.randn(200, 4, generator=g) * 8
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    boxes[0] = rois[0]  # the ground-truth box itself as a RoI
    targets = BoxCoder((10.0, 10.0, 5.0, 5.0)).encode_single(boxes, rois)
    iou = iou_from_targets(targets)
    assert torch.allclose(iou, box_iou(rois, boxes).diag(), atol=1e-5)
    assert iou[0] == pytest.approx(1.0) and (iou < 1).sum() == 199 and (iou == 0).any()
