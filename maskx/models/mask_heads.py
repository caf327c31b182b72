"""Mask heads: the FCN, the class-agnostic MLP branch (paper §3.4), and the sources of w_seg.

The mask logit of RoI r for its class c is one 1x1 "conv" with that class's weights,

    logit_r[y, x] = <w_seg[c], F_r[:, y, x]> + b[c] (+ mlp_r[y, x]),

computed for the one class of each RoI (``gather_mask_logits``), so time and memory do not grow
with the number of classes K; ``all_class_mask_logits`` is the stock K x 28 x 28 path, kept for
tests and benchmarks.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads

from .transfer import WeightTransfer, detection_weights


class MaskFCN(nn.Module):
    """RoI features [R, C, 14, 14] → (mask features [R, dim, 28, 28], conv features [R, dim, 14, 14]).

    ``convs`` 3x3 conv+ReLU layers (4 in Mask R-CNN), then a 2x transposed conv and ReLU.
    """

    def __init__(self, in_channels: int = 256, dim: int = 256, convs: int = 4):
        super().__init__()
        self.convs = MaskRCNNHeads(in_channels, [dim] * convs, dilation=1)
        self.upsample = nn.ConvTranspose2d(dim, dim, 2, stride=2)
        nn.init.kaiming_normal_(self.upsample.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.upsample.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(x)
        return F.relu(self.upsample(h)), h


class MLPMaskBranch(nn.Module):
    """Class-agnostic MLP mask predictor: conv features [R, dim, 14, 14] → logits [R, 28, 28].

    As in PANet's fused head (which §3.4 follows): a 3x3 conv reducing channels, then fully
    connected layers to M x M = 784 logits, tiled over classes by simply adding to each RoI's
    class logits. ``reduce`` and ``hidden`` keep it small (6.4 M + 0.8 M parameters by default).
    """

    def __init__(self, dim: int = 256, reduce: int = 32, hidden: int = 1024, in_size: int = 14, out_size: int = 28):
        super().__init__()
        self.out_size = out_size
        self.reduce = nn.Conv2d(dim, reduce, 3, padding=1)
        self.fc1 = nn.Linear(reduce * in_size * in_size, hidden)
        self.fc2 = nn.Linear(hidden, out_size * out_size)
        nn.init.normal_(self.fc2.weight, std=0.001)  # start near zero: the FCN leads at first
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.reduce(h)).flatten(1)
        x = F.relu(self.fc1(x))
        return self.fc2(x).view(-1, self.out_size, self.out_size)


class MaskWeights(nn.Module):
    """Where each class's mask weights w_seg [dim] (and bias) come from.

    - ``agnostic``: one learned w_seg and bias shared by every class (the paper's baseline);
    - ``oracle``: a learned w_seg and bias per class (stock Mask R-CNN's class-specific head);
    - ``transfer``: w_seg = T(w_det), no bias; w_det read from the box predictor (``cls``, ``box``,
      ``cls+box``) or a fixed per-class embedding buffer (``randn``, ``glove``, ``text``).
      ``stop_grad`` detaches w_det so the mask loss never reaches the detection weights (§3.2).
    """

    def __init__(self, kind: str, num_classes: int, dim: int = 256, transfer_input: str = "cls+box",
                 transfer: Optional[WeightTransfer] = None, embedding: Optional[torch.Tensor] = None,
                 stop_grad: bool = True):
        super().__init__()
        self.kind, self.num_classes, self.dim = kind, num_classes, dim
        self.transfer_input, self.stop_grad = transfer_input, stop_grad
        self.transfer = transfer
        if kind in ("agnostic", "oracle"):
            rows = 1 if kind == "agnostic" else num_classes
            self.weight = nn.Parameter(torch.empty(rows, dim))
            self.bias = nn.Parameter(torch.zeros(rows))
            # Detectron: class-specific logits use a fan-based fill, the class-agnostic one N(0, 0.001),
            # because a fan-based fill of its single row (std sqrt(2)) is too large and stalls training
            # at the study's 10x mask lr (docs/code-notes.md)
            nn.init.normal_(self.weight, std=0.001 if kind == "agnostic" else (2.0 / dim) ** 0.5)
        elif kind == "transfer":
            if transfer is None:
                raise ValueError("transfer mask weights need a WeightTransfer module")
            if embedding is not None:
                if embedding.shape[0] != num_classes:
                    raise ValueError(f"embedding has {embedding.shape[0]} rows, expected {num_classes} (K + 1)")
                self.register_buffer("embedding", embedding.float().clone())
            elif transfer_input not in ("cls", "box", "cls+box"):
                raise ValueError(f"transfer_input {transfer_input!r} needs a fixed embedding tensor")
        else:
            raise ValueError(f"unknown mask weights kind {kind!r}")

    def w_det(self, box_predictor: FastRCNNPredictor, classes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The input of T for ``classes`` [C] (default: every class), [C or K+1, D].

        Rows are picked before the cls+box concatenation, so the cost follows C, not K.
        """
        if hasattr(self, "embedding"):
            w = self.embedding if classes is None else self.embedding[classes]
        else:
            w = detection_weights(box_predictor, self.transfer_input, classes)
        return w.detach() if self.stop_grad else w

    def forward(self, labels: torch.Tensor, box_predictor: FastRCNNPredictor
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Mask weights of each RoI's class: labels [R] → (w [R, dim], bias [R] or None)."""
        if self.kind == "agnostic":
            return self.weight.expand(labels.shape[0], -1), self.bias.expand(labels.shape[0])
        # index_select, not w[labels]: labels repeat, and advanced indexing's backward accumulates the
        # repeats in a thread-dependent order on CPU (a run would not reproduce bit for bit)
        if self.kind == "oracle":
            return torch.index_select(self.weight, 0, labels), torch.index_select(self.bias, 0, labels)
        # T runs once per distinct class in the batch, not per class of the dataset
        classes, inverse = torch.unique(labels, return_inverse=True)
        w_seg = self.transfer(self.w_det(box_predictor, classes))
        return torch.index_select(w_seg, 0, inverse), None

    def all_classes(self, box_predictor: FastRCNNPredictor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Every class's mask weights: (w [K+1, dim], bias [K+1] or None)."""
        return self(torch.arange(self.num_classes, device=self._device()), box_predictor)

    def _device(self) -> torch.device:
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")


def gather_mask_logits(features: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
    """One class per RoI: features [R, dim, M, M], w [R, dim], b [R] → logits [R, M, M]."""
    logits = torch.einsum("rc,rchw->rhw", w, features)
    return logits if b is None else logits + b[:, None, None]


def all_class_mask_logits(features: torch.Tensor, w_all: torch.Tensor, b_all: Optional[torch.Tensor]) -> torch.Tensor:
    """The stock path: features [R, dim, M, M] and every class's weights [K+1, dim] → [R, K+1, M, M]."""
    return F.conv2d(features, w_all[:, :, None, None], b_all)
