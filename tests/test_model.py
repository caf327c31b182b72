"""The whole model (maskx/models/maskx_rcnn.py) and the paper's claims as tests: stop-grad, A-only mask
loss, stages; targets checked, every preset builds, inference settings, fixed embeddings.

Its parts have their own files: tests/test_roi_heads.py, test_mask_heads.py (the K-independent mask path
equals the full one), test_transfer.py, test_backbones.py, test_embeddings.py; the config: test_config.py.
"""
from __future__ import annotations

import pytest
import torch

from maskx.config import Config, ConfigError, get_preset
from maskx.models.maskx_rcnn import TargetError, build_model
from maskx.models.transfer import WeightTransfer

NAMES = [f"class{i}" for i in range(6)]
SIZE = 96


def _cfg(preset: str, **kw) -> Config:
    detector = None if get_preset(preset).stage == "detector" else "unused"
    return get_preset(preset).replace(image_size=SIZE, rois_per_image=64, detector=detector, **kw)


def _batch(has_mask=(True, False), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, SIZE, SIZE, generator=g) for _ in range(2)]
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.uint8)
    masks[0, 10:40, 8:50] = 1
    masks[1, 50:90, 55:80] = 1
    target = {"boxes": torch.tensor([[8.0, 10, 50, 40], [55, 50, 80, 90]]), "labels": torch.tensor([1, 4]),
              "masks": masks, "has_mask": torch.tensor(has_mask)}
    return images, [dict(target), dict(target)]


def _model(preset: str, **kw):
    torch.manual_seed(0)
    return build_model(_cfg(preset, **kw), NAMES).train()


def _mask_loss(model, images, targets, seed: int = 1):
    torch.manual_seed(seed)  # same RoI sampling for compared runs
    return model(images, targets)["loss_mask"]


@pytest.mark.parametrize("stop_grad", [True, False])
def test_stop_grad_blocks_mask_gradient_to_w_det(stop_grad):
    model = _model("transfer_clsbox_2lrelu_e2e", stop_grad=stop_grad)
    images, targets = _batch()
    _mask_loss(model, images, targets).backward()
    bp = model.roi_heads.box_predictor
    grads = [bp.cls_score.weight.grad, bp.bbox_pred.weight.grad]
    reached = any(g is not None and g.abs().sum() > 0 for g in grads)
    assert reached is (not stop_grad)
    t = model.roi_heads.mask_predictor.transfer
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in t.parameters() if p.dim() == 2)


def test_set_b_rois_do_not_reach_mask_loss():
    model = _model("transfer_clsbox_2lrelu_e2e")
    images, targets = _batch(has_mask=(True, False))
    base = _mask_loss(model, images, targets)
    # a different mask for the set-B instance changes nothing ...
    for t in targets:
        t["masks"] = t["masks"].clone()
        t["masks"][1] = 1 - t["masks"][1]
    assert torch.equal(_mask_loss(model, images, targets), base)
    # ... while the same change to a set-A instance does
    for t in targets:
        t["masks"][0] = 1 - t["masks"][0]
    assert not torch.equal(_mask_loss(model, images, targets), base)


def test_no_set_a_roi_gives_zero_mask_loss_not_nan():
    model = _model("transfer_clsbox_2lrelu_mlp_e2e")
    images, targets = _batch(has_mask=(False, False))
    loss = _mask_loss(model, images, targets)
    assert loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()  # the graph stays valid


def test_stagewise_mask_stage_trains_only_the_mask_branch():
    model = _model("transfer_clsbox_2lrelu_mlp")
    images, targets = _batch()
    losses = model(images, targets)
    assert set(losses) == {"loss_mask"}
    losses["loss_mask"].backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained and all(n.startswith(("roi_heads.mask_head", "roi_heads.mask_predictor", "roi_heads.mask_mlp"))
                           for n in trained)
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_detector_stage_has_no_mask_loss_and_no_masks():
    model = _model("detector")
    images, targets = _batch()
    assert "loss_mask" not in model(images, targets)
    model.eval()
    with torch.no_grad():
        assert "masks" not in model(images)[0]


def test_inference_outputs_masks_for_every_detection():
    model = _model("transfer_clsbox_2lrelu_mlp_e2e", score_thresh=0.0).eval()
    images, _ = _batch()
    with torch.no_grad():
        out = model(images)
    for det in out:
        n = det["boxes"].shape[0]
        assert n > 0 and det["masks"].shape == (n, 1, SIZE, SIZE)
        assert 0 <= det["masks"].min() and det["masks"].max() <= 1


def test_rpn_test_proposals_caps_what_the_box_head_sees():
    model = _model("agnostic_e2e", score_thresh=0.0, rpn_test_proposals=7, detections_per_img=5).eval()
    images, _ = _batch()
    with torch.no_grad():
        out = model(images)
        proposals, _ = model.rpn(*_rpn_inputs(model, images))
    assert all(len(p) <= 7 for p in proposals) and all(len(d["boxes"]) <= 5 for d in out)
    with pytest.raises(ConfigError, match="rpn_test_proposals must be positive"):
        Config(rpn_test_proposals=0)
    trained = Config(stage="mask", split="all", mask_head="oracle", iters=9)
    evaluated = trained.with_inference_of(Config(detections_per_img=7, rpn_test_proposals=300, iters=1))
    assert (evaluated.detections_per_img, evaluated.rpn_test_proposals, evaluated.iters) == (7, 300, 9)
    assert evaluated.replace(detections_per_img=100, rpn_test_proposals=1000) == trained


def _rpn_inputs(model, images):
    batch, _ = model.transform(images)
    return batch, model.backbone(batch.tensors)


def test_bad_targets_rejected():
    model = _model("agnostic_e2e")
    images, targets = _batch()
    bad = [dict(t) for t in targets]
    bad[0]["boxes"] = torch.tensor([[8.0, 10, 8, 40], [55, 50, 80, 90]])
    with pytest.raises(TargetError, match="no area"):
        model(images, bad)
    bad = [dict(t) for t in targets]
    bad[1]["labels"] = torch.tensor([1, 99])
    with pytest.raises(TargetError, match="labels must be in"):
        model(images, bad)
    bad = [dict(t) for t in targets]
    del bad[0]["has_mask"]
    with pytest.raises(TargetError, match="has_mask"):
        model(images, bad)


def test_every_preset_builds():
    from maskx.config import PRESETS

    for name, cfg in PRESETS.items():
        if cfg.transfer_input == "text" and cfg.has_fixed_embedding:
            continue  # the sentence model takes seconds to load: test_text_embedding_model below
        torch.manual_seed(0)
        build_model(cfg.replace(image_size=SIZE), ["dog", "hot dog", "dining table", "zebra", "kite", "cat"])


@pytest.mark.slow
def test_text_embedding_model_feeds_t_with_384d_rows():
    model = build_model(get_preset("transfer_text_2lrelu").replace(image_size=SIZE), NAMES)
    emb = model.roi_heads.mask_predictor.embedding
    assert emb.shape == (len(NAMES) + 1, 384) and emb[0].abs().sum() == 0
    assert model.roi_heads.mask_predictor.transfer.net[0].in_features == 384


@pytest.mark.parametrize("norm", [1.0, 2.5])
def test_fixed_embedding_rows_are_scaled_to_embedding_norm(norm):
    """randn rows are ~sqrt(5120) = 71.6 raw; T sees every class row at the same norm, background zero."""
    from maskx.models.maskx_rcnn import fixed_embedding

    names = ["cat", "dog", "traffic light"]
    cfg = Config(transfer_input="randn", embedding_norm=norm)
    emb = fixed_embedding(cfg, names)
    assert emb.shape == (4, 5120) and torch.all(emb[0] == 0)
    torch.testing.assert_close(emb[1:].norm(dim=1), torch.full((3,), norm))
    raw = fixed_embedding(cfg.replace(embedding_norm=0.0), names)
    assert 60 < raw[1:].norm(dim=1).min() and raw[1:].norm(dim=1).max() < 85
    # the same directions: scaling only
    torch.testing.assert_close(emb[1:], raw[1:] / raw[1:].norm(dim=1, keepdim=True) * norm)


def test_transfer_init_is_checked_and_reaches_the_model():
    with pytest.raises(ConfigError, match="transfer_init"):
        Config(transfer_init="xavier")
    with pytest.raises(ValueError, match="init"):
        WeightTransfer(16, 8, init="xavier")
    cfg = Config(transfer_init="msra", mask_dim=32, box_head_dim=64)
    model = build_model(cfg, ["a", "b"], pretrained=False)
    assert all(torch.all(m.bias == 0) for m in model.roi_heads.mask_predictor.transfer.net
               if isinstance(m, torch.nn.Linear))
    assert "transfer_init" in Config(mask_head="agnostic").unused_fields()
    assert "transfer_init" not in cfg.unused_fields()
