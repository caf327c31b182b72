"""Mask weights and mask branches (maskx/models/mask_heads.py): the K-independent mask path equals the
full K-class path, weights are computed for the batch's classes only, the MLP branch's shape."""
from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from maskx.models.mask_heads import MaskWeights, MLPMaskBranch, all_class_mask_logits, gather_mask_logits
from maskx.models.transfer import WeightTransfer


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


def test_mask_weights_need_only_the_batch_classes():
    torch.manual_seed(0)
    bp = FastRCNNPredictor(16, 11)
    mw = MaskWeights("transfer", 11, 8, "cls+box", WeightTransfer(5 * 16, 8, 2, 8))
    labels = torch.tensor([4, 1, 4, 9])
    w, b = mw(labels, bp)
    w_all, _ = mw.all_classes(bp)
    assert b is None and torch.allclose(w, w_all[labels], atol=1e-6)


def test_mlp_branch_shape():
    assert MLPMaskBranch(32)(torch.randn(3, 32, 14, 14)).shape == (3, 28, 28)


@pytest.mark.parametrize("kind", ["oracle", "transfer"])
def test_mask_weight_gradients_are_the_same_every_run_with_repeated_classes(kind):
    """Many RoIs of few classes (every batch): the gradient of the class rows sums the repeats in a fixed
    order, so a run reproduces bit for bit on 2 threads (advanced indexing's backward does not)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        k1, dim, rois = 3001, 256, 768
        box_pred = FastRCNNPredictor(64, k1)
        transfer = WeightTransfer(320, dim, hidden=1024)
        weights = MaskWeights(kind, k1, dim, "cls+box", transfer if kind == "transfer" else None, None)
        labels = torch.randint(1, 40, (rois,))
        upstream = torch.randn(rois, dim)

        def grads():
            weights.zero_grad()
            w, _ = weights(labels, box_pred)
            (w * upstream).sum().backward()
            return [p.grad.clone() for p in weights.parameters() if p.grad is not None]

        first = grads()
        assert first and all(all(torch.equal(a, b) for a, b in zip(first, grads())) for _ in range(10))
    finally:
        torch.set_num_threads(threads)
