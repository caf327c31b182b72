"""Mask^X RoI heads (maskx/models/roi_heads.py): the mask RoIs (positive, set A, capped), the mask loss
against projected targets, and post-processing equal to torchvision's."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from maskx.models.roi_heads import cap_rois, maskx_loss, project_mask_targets, select_mask_rois


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
