"""ThreadedRPN filters a batch's proposals on threads and gives torchvision's proposals bit for bit."""
from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from maskx.ops import rpn as rpn_module
from maskx.ops.rpn import ThreadedRPN

LEVELS = [1200, 600, 150, 48]  # anchors per level: the first level over the vanilla-NMS size threshold


def _rpn() -> ThreadedRPN:
    anchors = AnchorGenerator(((32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 4)
    return ThreadedRPN(anchors, RPNHead(8, 3), 0.7, 0.3, 256, 0.5, pre_nms_top_n={"training": 500, "testing": 300},
                       post_nms_top_n={"training": 400, "testing": 100}, nms_thresh=0.7)


def _inputs(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = sum(LEVELS)
    xy = torch.rand(n, a, 2, generator=g) * 260 - 10  # some outside the image: clipped
    wh = torch.rand(n, a, 2, generator=g) * 80
    wh[:, ::97] = 1e-4  # smaller than min_size: removed
    proposals = torch.cat([xy, xy + wh], 2)
    objectness = torch.randn(n * a, 1, generator=g)
    objectness[::5] = objectness[3]  # ties in score
    proposals[1:, :50] = proposals[:1, :50]  # images sharing boxes
    return proposals, objectness, [(240, 250), (256, 200), (256, 256)][:n], LEVELS


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("images, threads", [(2, 2), (3, 2), (3, 3), (1, 2), (2, 1)])
def test_same_proposals_as_torchvision(training, images, threads, monkeypatch):
    rpn = _rpn().train(training)
    args = _inputs(images)
    calls = []
    pool = rpn_module.thread_pool
    monkeypatch.setattr(rpn_module, "thread_pool", lambda n: calls.append(n) or pool(n))
    ref_boxes, ref_scores = RegionProposalNetwork.filter_proposals(rpn, *args)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        boxes, scores = rpn.filter_proposals(*args)
    finally:
        torch.set_num_threads(before)
    assert len(boxes) == len(scores) == images
    for b, s, rb, rs in zip(boxes, scores, ref_boxes, ref_scores):
        assert torch.equal(b, rb) and torch.equal(s, rs)
        assert 0 < len(b) <= (400 if training else 100)
    assert calls == ([min(images, threads)] if min(images, threads) >= 2 else [])  # threaded only when it can be


def test_threads_follow_inference_mode_and_record_no_graph():
    rpn = _rpn().eval()
    proposals, objectness, shapes, levels = _inputs(2)
    objectness.requires_grad_(True)
    with torch.inference_mode():
        boxes, _ = rpn.filter_proposals(proposals, objectness, shapes, levels)
    assert all(b.is_inference() for b in boxes)  # made in inference mode, as torchvision's would be
    boxes, scores = rpn.filter_proposals(proposals, objectness, shapes, levels)
    assert not any(t.is_inference() or t.requires_grad for t in boxes + scores)


def test_model_uses_it_and_keeps_torchvisions_state_dict_keys():
    from maskx.config import get_preset
    from maskx.models.maskx_rcnn import build_model

    model = build_model(get_preset("agnostic").replace(backbone="resnet18", pretrained_backbone=False), ["a", "b"])
    assert isinstance(model.rpn, ThreadedRPN)
    assert {k for k in model.state_dict() if k.startswith("rpn.")} == {
        "rpn.head.conv.0.0.weight", "rpn.head.conv.0.0.bias", "rpn.head.cls_logits.weight",
        "rpn.head.cls_logits.bias", "rpn.head.bbox_pred.weight", "rpn.head.bbox_pred.bias"}
