"""A box head that reads the trunk's mid-level stages instead of one FPN level (``box_features="trunk"``).

Mask R-CNN's box head pools each RoI from one FPN level chosen by its size. With 3000 classes told
apart by body, pattern, hue and proportion, what names a class is in the trunk's stride 8 and 16
stages: a head on a frozen ImageNet EfficientNet-Lite0's stages 3-5 pooled 7 x 7 names set B of the
3000-class world 34 % of the time from ground-truth boxes, stage 4 alone 25 %, stage 5 alone 6 %,
and a detector's own FPN box features 14 % (docs/model-3k-design.md §5, §9). So every RoI is pooled
from all three stages; a 1 x 1 conv per stage reduces each to ``reduce`` channels (the stages differ
in width: 40 / 112 / 320) before the two FCs of torchvision's ``TwoMLPHead``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import roi_align

class TrunkRoIPool(nn.Module):
    """RoIAlign of every box on each of ``names`` (strides ``strides``), concatenated along channels.

    ``forward(features {name: [B, C_l, H/s_l, W/s_l]}, boxes [R_i, 4] per image, image_shapes)`` →
    ``[R, sum C_l, S, S]`` (S = ``output_size``); ``out_channels`` = sum C_l. The same call as
    torchvision's ``MultiScaleRoIAlign``, so ``RoIHeads`` and the RoI caches use it unchanged.
    """

    def __init__(self, names: tuple[str, ...], strides: tuple[int, ...], channels: tuple[int, ...],
                 output_size: int = 7, sampling_ratio: int = 2):
        super().__init__()
        if not len(names) == len(strides) == len(channels):
            raise ValueError("names, strides and channels need one entry per trunk map")
        self.names, self.strides, self.channels = tuple(names), tuple(strides), tuple(channels)
        self.output_size, self.sampling_ratio = (output_size, output_size), sampling_ratio
        self.out_channels = sum(channels)

    def forward(self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes=None) -> Tensor:
        missing = [n for n in self.names if n not in features]
        if missing:
            raise KeyError(f"trunk maps {missing} missing from the backbone's output: build it with "
                           "trunk_maps=True (box_features='trunk')")
        return torch.cat([roi_align(features[n], boxes, self.output_size, 1.0 / s, self.sampling_ratio, aligned=True)
                          for n, s in zip(self.names, self.strides)], 1)


class TrunkBoxHead(nn.Module):
    """``[R, sum C_l, 7, 7]`` (``TrunkRoIPool``) → ``[R, representation_size]``: a ReLU'd 1 x 1 conv per
    stage to ``reduce`` channels, concatenated, then ``fc6`` and ``fc7`` with ReLU as ``TwoMLPHead``."""

    def __init__(self, channels: tuple[int, ...], representation_size: int, reduce: int = 64, pool: int = 7):
        super().__init__()
        self.channels = tuple(channels)
        self.reduce = nn.ModuleList(nn.Conv2d(c, reduce, 1) for c in channels)
        self.fc6 = nn.Linear(reduce * len(channels) * pool * pool, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        parts = torch.split(x, list(self.channels), dim=1)
        x = torch.cat([F.relu(conv(p)) for conv, p in zip(self.reduce, parts)], 1).flatten(1)
        return F.relu(self.fc7(F.relu(self.fc6(x))))
