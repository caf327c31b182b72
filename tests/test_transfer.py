"""The weight transfer function T (maskx/models/transfer.py): detection weights' layout (all classes or
some), T's structure and its initialisations."""
from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from maskx.models.transfer import WeightTransfer, detection_weights


def test_detection_weights_layout():
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    bp = FastRCNNPredictor(16, 5)
    w = detection_weights(bp, "cls+box")
    assert w.shape == (5, 16 + 64)
    torch.testing.assert_close(w[3, :16], bp.cls_score.weight[3])
    torch.testing.assert_close(w[3, 16:32], bp.bbox_pred.weight[12])  # class 3's dx row
    with pytest.raises(ValueError):
        detection_weights(bp, "glove")


@pytest.mark.parametrize("kind", ["cls", "box", "cls+box"])
def test_detection_weights_of_some_classes_are_rows_of_all(kind):
    torch.manual_seed(0)
    bp = FastRCNNPredictor(16, 11)
    classes = torch.tensor([0, 3, 10])
    assert torch.equal(detection_weights(bp, kind, classes), detection_weights(bp, kind)[classes])


@pytest.mark.parametrize("layers,act,n_linear", [(1, "relu", 1), (2, "leaky_relu", 2), (3, "relu", 3)])
def test_transfer_structure(layers, act, n_linear):
    t = WeightTransfer(5120, 256, layers, 256, act)
    linears = [m for m in t.net if isinstance(m, torch.nn.Linear)]
    assert len(linears) == n_linear and linears[0].in_features == 5120 and linears[-1].out_features == 256
    assert not isinstance(t.net[-1], (torch.nn.ReLU, torch.nn.LeakyReLU))  # no final activation
    if act == "leaky_relu":
        assert t.net[1].negative_slope == 0.1


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
