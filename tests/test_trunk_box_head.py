"""box_features="trunk" (maskx/models/trunk_box_head.py): every RoI pooled from the trunk's stride 8/16/32
stages; the RPN and the mask head keep the FPN; the detector → box → mask stages run on it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align

from maskx.checkpoint import list_checkpoints
from maskx.config import ConfigError
from maskx.models.maskx_rcnn import build_model
from maskx.models.trunk_box_head import TrunkBoxHead, TrunkRoIPool
from maskx.train import run_training

from helpers import model_tensors, tiny_config

TRUNK = dict(backbone="efficientnet_lite0", pretrained_backbone=False, box_features="trunk", trainable_layers=0,
             fpn_dim=32)


def test_each_box_is_pooled_from_every_trunk_map_and_reduced_per_map():
    torch.manual_seed(0)
    maps = {"c3": torch.randn(2, 4, 16, 16), "c4": torch.randn(2, 6, 8, 8), "c5": torch.randn(2, 8, 4, 4)}
    boxes = [torch.tensor([[4.0, 4.0, 60.0, 40.0]]), torch.tensor([[0.0, 8.0, 30.0, 30.0], [10.0, 10.0, 20.0, 50.0]])]
    pool = TrunkRoIPool(("c3", "c4", "c5"), (8, 16, 32), (4, 6, 8))
    out = pool(maps, boxes, [(128, 128)] * 2)
    assert out.shape == (3, 18, 7, 7) and pool.out_channels == 18
    want = torch.cat([roi_align(maps[n], boxes, (7, 7), 1 / s, 2, aligned=True) for n, s in (("c3", 8), ("c4", 16), ("c5", 32))], 1)
    assert torch.equal(out, want)
    head = TrunkBoxHead((4, 6, 8), 32, reduce=5)
    assert head(out).shape == (3, 32) and head.fc6.in_features == 3 * 5 * 49
    with pytest.raises(KeyError, match="trunk_maps=True"):
        pool({"c3": maps["c3"]}, boxes)


def test_trunk_box_features_need_efficientnet():
    with pytest.raises(ConfigError, match="efficientnet_lite0"):
        tiny_config("detector", box_features="trunk", backbone="resnet18")
    with pytest.raises(ConfigError, match="box_features"):
        tiny_config("detector", box_features="fpn2")


def test_the_rpn_reads_the_fpn_maps_only():
    model = build_model(tiny_config("detector", **TRUNK), ["a", "b"]).eval()
    images = torch.rand(1, 3, 64, 64)
    feats = model.backbone(images)
    assert {"c3", "c4", "c5"} <= set(feats) and list(feats)[:5] == ["0", "1", "2", "3", "pool"]
    from torchvision.models.detection.image_list import ImageList

    il = ImageList(images, [(64, 64)])
    with torch.no_grad():
        full, _ = model.rpn(il, feats)
        fpn_only, _ = model.rpn(il, {k: feats[k] for k in ["0", "1", "2", "3", "pool"]})
    assert torch.equal(full[0], fpn_only[0])


def test_detector_box_and_mask_stages_on_trunk_features(data64, tmp_path):
    det = tmp_path / "det"
    run_training(tiny_config("detector", iters=2, checkpoint_every=2, **TRUNK), data64, det, progress=False)
    box = tiny_config("detector", stage="box", detector=str(det), optimizer="adamw", base_lr=0.01, iters=2,
                      checkpoint_every=2, batch_size=4, box_cache_positives=5, box_cache_negatives=3, **TRUNK)
    run_training(box, data64, tmp_path / "box", progress=False)
    cache = tmp_path / "box" / "box_cache"
    assert np.load(cache / "features.npy", mmap_mode="r").shape[1:] == (40 + 112 + 320, 7, 7)
    before, after = (model_tensors(list_checkpoints(d)[-1]) for d in (det, tmp_path / "box"))
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert any(k.startswith("model.roi_heads.box_head.reduce.") for k in changed)
    assert all(k.startswith(("model.roi_heads.box_head.", "model.roi_heads.box_predictor.")) for k in changed)
    mask = tiny_config("transfer_clsbox_2lrelu", detector=str(tmp_path / "box"), iters=1, checkpoint_every=1, **TRUNK)
    run_training(mask, data64, tmp_path / "mask", progress=False)
    assert json.loads((tmp_path / "mask" / "run.json").read_text())["config"]["box_features"] == "trunk"
