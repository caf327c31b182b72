"""The paper's claims as tests: stop-grad, A-only mask loss, K-independent = full mask path, stages."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from maskx.config import Config, ConfigError, get_preset
from maskx.models.mask_heads import MaskWeights, MLPMaskBranch, all_class_mask_logits, gather_mask_logits
from maskx.models.maskx_rcnn import TargetError, build_model
from maskx.models.roi_heads import cap_rois, maskx_loss, project_mask_targets, select_mask_rois
from maskx.models.transfer import WeightTransfer, detection_weights

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


def test_select_mask_rois_keeps_only_positive_set_a_and_caps():
    props = [torch.rand(10, 4)]
    labels = [torch.tensor([1, 2, 0, 1, 2, 0, 1, 1, 2, 1])]
    matched = [torch.tensor([0, 1, 0, 0, 1, 0, 0, 0, 1, 0])]
    has_mask = [torch.tensor([True, False])]
    boxes, idxs, labs = select_mask_rois(props, labels, matched, has_mask)
    assert (idxs[0] == 0).all() and (labs[0] == 1).all() and len(boxes[0]) == 5
    boxes, idxs, labs = select_mask_rois(props, labels, matched, has_mask, max_per_image=2)
    assert len(boxes[0]) == 2


def test_maskx_loss_empty_is_zero():
    logits = torch.zeros(0, 28, 28, requires_grad=True)
    targets = project_mask_targets([torch.zeros(1, 8, 8)], [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)], 28)
    loss = maskx_loss(logits, targets)
    assert targets.shape == (0, 28, 28) and loss.item() == 0.0
    loss.backward()  # the zero keeps the graph
    assert logits.grad is not None


def test_maskx_loss_is_bce_of_own_class_logits_against_projected_targets():
    gt = torch.zeros(1, 16, 16)
    gt[0, 4:12, 4:12] = 1
    boxes = [torch.tensor([[4.0, 4.0, 12.0, 12.0], [0.0, 0.0, 16.0, 16.0]])]
    targets = project_mask_targets([gt], boxes, [torch.tensor([0, 0])], 8)
    assert targets[0, :7, :7].min() == 1 and float(targets[0].mean()) > 0.8  # the box is the mask (edges interpolated)
    assert 0.2 < float(targets[1].mean()) < 0.3  # the mask is a quarter of the whole image
    logits = torch.randn(2, 8, 8)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    assert torch.allclose(maskx_loss(logits, targets), expected)


def test_cap_rois_keeps_at_most_the_cap_and_only_given_indices():
    keep = torch.tensor([3, 5, 7, 9, 11])
    assert torch.equal(cap_rois(keep, 0), keep) and torch.equal(cap_rois(keep, 5), keep)
    capped = cap_rois(keep, 2)
    assert len(capped) == 2 and set(capped.tolist()) <= set(keep.tolist()) and len(set(capped.tolist())) == 2


@pytest.mark.parametrize("kind,inp", [("agnostic", "cls+box"), ("oracle", "cls+box"), ("transfer", "cls+box"),
                                      ("transfer", "cls"), ("transfer", "box"), ("transfer", "randn")])
def test_k_independent_mask_path_equals_full_path(kind, inp):
    torch.manual_seed(0)
    k1 = 3001
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    box_pred = FastRCNNPredictor(64, k1)
    emb = torch.randn(k1, 50) if inp == "randn" else None
    transfer = WeightTransfer(50 if emb is not None else {"cls": 64, "box": 256, "cls+box": 320}[inp], 32)
    weights = MaskWeights(kind, k1, 32, inp, transfer if kind == "transfer" else None, emb)
    if kind == "oracle":
        torch.nn.init.normal_(weights.bias)
    feats = torch.randn(7, 32, 28, 28)
    labels = torch.tensor([5, 3000, 5, 1, 77, 1200, 2])
    w, b = weights(labels, box_pred)
    ours = gather_mask_logits(feats, w, b)
    w_all, b_all = weights.all_classes(box_pred)
    full = all_class_mask_logits(feats, w_all, b_all)[torch.arange(7), labels]
    assert ours.shape == (7, 28, 28)
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-5)


def test_detection_weights_layout():
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    bp = FastRCNNPredictor(16, 5)
    w = detection_weights(bp, "cls+box")
    assert w.shape == (5, 16 + 64)
    torch.testing.assert_close(w[3, :16], bp.cls_score.weight[3])
    torch.testing.assert_close(w[3, 16:32], bp.bbox_pred.weight[12])  # class 3's dx row
    with pytest.raises(ValueError):
        detection_weights(bp, "glove")


@pytest.mark.parametrize("layers,act,n_linear", [(1, "relu", 1), (2, "leaky_relu", 2), (3, "relu", 3)])
def test_transfer_structure(layers, act, n_linear):
    t = WeightTransfer(5120, 256, layers, 256, act)
    linears = [m for m in t.net if isinstance(m, torch.nn.Linear)]
    assert len(linears) == n_linear and linears[0].in_features == 5120 and linears[-1].out_features == 256
    assert not isinstance(t.net[-1], (torch.nn.ReLU, torch.nn.LeakyReLU))  # no final activation
    if act == "leaky_relu":
        assert t.net[1].negative_slope == 0.1


def test_mlp_branch_shape():
    assert MLPMaskBranch(32)(torch.randn(3, 32, 14, 14)).shape == (3, 28, 28)


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


def test_config_rejects_bad_values_and_presets():
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("transfer_magic")
    with pytest.raises(ConfigError):
        Config(transfer_layers=4)
    with pytest.raises(ConfigError):
        Config(mask_head="oracle", split="voc2nonvoc")
    with pytest.raises(ConfigError, match="unknown config field"):
        Config().with_overrides(["nope=1"])
    with pytest.raises(ConfigError, match="expected int"):
        Config().with_overrides(["iters=abc"])
    c = Config().with_overrides(["iters=7", "stop_grad=false", "base_lr=1"])
    assert (c.iters, c.stop_grad, c.base_lr) == (7, False, 1.0)
    assert Config.from_json(c.to_json()) == c


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


@pytest.mark.parametrize("num_classes, score_thresh", [(81, 0.05), (3001, 0.001), (2, 0.0), (21, 0.5)])
def test_postprocess_decodes_only_kept_pairs_with_torchvision_output(num_classes, score_thresh):
    """MaskXRoIHeads.postprocess_detections returns exactly torchvision's (bit for bit)."""
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.roi_heads import RoIHeads

    from maskx.models.roi_heads import MaskXRoIHeads

    heads = SimpleNamespace(box_coder=det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0)), nms_thresh=0.5,
                            score_thresh=score_thresh, detections_per_img=50)
    gen = torch.Generator().manual_seed(num_classes)
    proposals = []
    for n in (300, 0, 150):
        xy = torch.rand(n, 2, generator=gen) * 300 - 20
        proposals.append(torch.cat([xy, xy + torch.rand(n, 2, generator=gen) * 120], 1))
    proposals[2][:5, 2:] = proposals[2][:5, :2]  # empty boxes: removed as small
    n = sum(len(p) for p in proposals)
    logits = torch.randn(n, num_classes, generator=gen) * 3
    codes = torch.randn(n, 4 * num_classes, generator=gen) * 4  # large: exp clamped
    shapes = [(256, 320)] * 3
    ref = RoIHeads.postprocess_detections(heads, logits, codes, proposals, shapes)
    out = MaskXRoIHeads.postprocess_detections(heads, logits, codes, proposals, shapes)
    assert sum(len(b) for b in ref[0]) > 0
    for a, b in zip(ref, out):
        for u, v in zip(a, b):
            assert u.shape == v.shape and torch.equal(u, v)


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


def test_negative_embedding_norm_is_rejected():
    with pytest.raises(ConfigError, match="embedding_norm"):
        Config(embedding_norm=-1.0)


def test_transfer_msra_init_is_the_official_fill_and_torch_init_is_unchanged():
    """init="msra": Detectron's MSRAFill (N(0, sqrt(2 / fan_out)), zero biases) in every FC of T;
    init="torch" draws exactly what nn.Linear draws (results recorded before the option still hold)."""
    torch.manual_seed(0)
    t = WeightTransfer(5120, 256, layers=2, init="msra")
    for m in (t.net[0], t.net[2]):
        assert torch.all(m.bias == 0)
        assert abs(m.weight.std().item() - (2.0 / 256) ** 0.5) < 0.003
        assert abs(m.weight.mean().item()) < 0.002
    torch.manual_seed(0)
    default = WeightTransfer(5120, 256, layers=2)
    torch.manual_seed(0)
    ref = [torch.nn.Linear(5120, 256), torch.nn.Linear(256, 256)]
    for got, want in zip((default.net[0], default.net[2]), ref):
        assert torch.equal(got.weight, want.weight) and torch.equal(got.bias, want.bias)
    # the msra rows make T's output about an order of magnitude larger for detection-weight-sized input
    x = torch.randn(8, 5120) * (1.5 / 5120 ** 0.5)
    assert t(x).std() > 5 * default(x).std()


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
