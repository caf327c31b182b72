"""The weight transfer function T (paper §3.1, Table 1b) and the detection weights it reads.

``w_seg = T(w_det)``: T maps a class's detection weights (or a fixed embedding of it) to the
256-d weights of that class's 1x1 mask-logit "conv". T is a small MLP with no final activation;
Table 1b's best is FC 5120→256, LeakyReLU(0.1), FC 256→256.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from ..config import TRANSFER_INITS


class WeightTransfer(nn.Module):
    """T: [N, D] class embeddings → [N, out_dim] mask weights.

    ``layers=1`` is an affine map D→out_dim; 2 and 3 insert hidden layers of ``hidden`` units with
    ReLU or LeakyReLU(0.1) between them. No activation after the last layer (the output is a weight).
    ``init``: "torch" keeps nn.Linear's default; "msra" is the official code's fill (weights
    N(0, sqrt(2 / fan_out)), biases zero), about 11x larger weights in the 5120→256 layer.
    """

    def __init__(self, in_dim: int, out_dim: int = 256, layers: int = 2, hidden: int = 256,
                 activation: str = "leaky_relu", init: str = "torch"):
        super().__init__()
        if layers not in (1, 2, 3):
            raise ValueError(f"T has 1, 2 or 3 layers, got {layers}")
        act = {"relu": lambda: nn.ReLU(inplace=True),
               "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True)}[activation]
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        mods: list[nn.Module] = []
        for i in range(layers):
            mods.append(nn.Linear(dims[i], dims[i + 1]))
            if i < layers - 1:
                mods.append(act())
        self.net = nn.Sequential(*mods)
        if init not in TRANSFER_INITS:
            raise ValueError(f"T's init is one of {TRANSFER_INITS}, got {init!r}")
        if init == "msra":
            for m in self.net:
                if isinstance(m, nn.Linear):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)

    def forward(self, w_det: torch.Tensor) -> torch.Tensor:
        return self.net(w_det)


def detection_weights(box_predictor: FastRCNNPredictor, kind: str,
                      classes: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-class detection weights w_det read from the box predictor, [K+1, D] (or [C, D] for the
    C class indices ``classes``: rows are selected before concatenating, so nothing of size K is built).

    ``cls``: the RoI classifier row, D = box_head_dim (1024); ``box``: the class's 4 box
    regression rows flattened, D = 4 x box_head_dim; ``cls+box``: both concatenated (5120).
    """
    w_cls = box_predictor.cls_score.weight  # [K+1, 1024]
    w_box = box_predictor.bbox_pred.weight.reshape(w_cls.shape[0], -1)  # [K+1, 4*1024], a view

    def pick(w: torch.Tensor) -> torch.Tensor:
        return w if classes is None else w[classes]

    if kind == "cls":
        return pick(w_cls)
    if kind == "box":
        return pick(w_box)
    if kind == "cls+box":
        return torch.cat([pick(w_cls), pick(w_box)], dim=1)
    raise ValueError(f"detection weights kind must be cls, box or cls+box, got {kind!r}")
