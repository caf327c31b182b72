"""FPN backbones: output shapes, pretrained weights, freezing, norms, anchors, and Mask R-CNN use."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d

from maskx.models.backbones import (BACKBONES, FEATMAP_NAMES, LITE_MEAN, LITE_STD, anchor_generator_for,
                                    build_backbone, efficientnet_lite0_weights_path)

SIZE = 128


def _maskrcnn(backbone: nn.Module, num_classes: int = 4) -> MaskRCNN:
    # fewer proposals/detections than torchvision's defaults: same code paths, a fraction of the CPU time
    return MaskRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchor_generator_for(backbone),
                    min_size=SIZE, max_size=SIZE, image_mean=backbone.image_mean, image_std=backbone.image_std,
                    rpn_pre_nms_top_n_train=400, rpn_post_nms_top_n_train=200,
                    rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100,
                    box_batch_size_per_image=64, box_detections_per_img=20)


@pytest.fixture(scope="module")
def lite_state() -> dict[str, torch.Tensor]:
    return torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)


@pytest.mark.parametrize("name", BACKBONES)
def test_fpn_output_shapes(name):
    torch.manual_seed(0)
    backbone = build_backbone(name).eval()
    assert backbone.out_channels == 256
    with torch.no_grad():
        out = backbone(torch.rand(2, 3, SIZE, SIZE))
    assert list(out) == list(FEATMAP_NAMES) == list(backbone.featmap_names)
    for (key, fmap), stride in zip(out.items(), backbone.strides):
        assert fmap.shape == (2, 256, SIZE // stride, SIZE // stride), key
        assert torch.isfinite(fmap).all()


def test_efficientnet_any_input_size():
    """TF 'SAME' padding is computed per input: odd sizes work, maps are ceil(H/stride)."""
    backbone = build_backbone("efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        out = backbone(torch.rand(1, 3, 100, 75))
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(25, 19), (13, 10), (7, 5), (4, 3), (2, 2)]


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError) as e:
        build_backbone("vgg16")
    for name in BACKBONES:
        assert name in str(e.value)
    with pytest.raises(ValueError):
        anchor_generator_for("vgg16")


def test_efficientnet_pretrained_weights_are_the_package_file(lite_state):
    pre = build_backbone("efficientnet_lite0")
    fresh = build_backbone("efficientnet_lite0", pretrained=False)
    assert pre.pretrained and not fresh.pretrained
    # stem conv, and a frozen BN's statistics, deep in the net
    assert torch.equal(pre.stem[0].weight, lite_state["_conv_stem.weight"])
    assert not torch.allclose(fresh.stem[0].weight, lite_state["_conv_stem.weight"])
    bn = pre.stage5[-1]._bn2  # block 15's projection BN
    assert isinstance(bn, FrozenBatchNorm2d)
    assert torch.equal(bn.running_var, lite_state["_blocks.15._bn2.running_var"])
    assert torch.equal(bn.weight, lite_state["_blocks.15._bn2.weight"])
    assert torch.equal(pre.stage4[2]._depthwise_conv.weight, lite_state["_blocks.7._depthwise_conv.weight"])
    # every trunk tensor (weights and BN statistics) equals the file's
    blocks = [pre.stem[3], *pre.stage2, *pre.stage3, *pre.stage4, *pre.stage5]
    assert len(blocks) == 16
    checked = 0
    for key, value in lite_state.items():
        if key.endswith("num_batches_tracked") or key.startswith(("_conv_head", "_bn1", "_fc")):
            continue  # no BN counter in FrozenBatchNorm2d; the classifier head is dropped
        if key.startswith("_blocks."):
            _, i, rest = key.split(".", 2)
            mine = blocks[int(i)].state_dict()[rest]
        else:
            mine = {"_conv_stem": pre.stem[0], "_bn0": pre.stem[1]}[key.split(".")[0]].state_dict()[key.split(".")[1]]
        assert torch.equal(mine, value), key
        checked += 1
    assert checked > 200
    assert pre.image_mean == LITE_MEAN and pre.image_std == LITE_STD


def test_trainable_layers_and_norms():
    r18 = build_backbone("resnet18")
    assert r18.norm == "gn"
    assert all(p.requires_grad for p in r18.parameters())  # random init: everything trains
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in r18.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in r18.body.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in r18.fpn.modules())

    r18_3 = build_backbone("resnet18", trainable_layers=3, norm="bn", fpn_norm=None)
    assert any(isinstance(m, nn.BatchNorm2d) for m in r18_3.modules())
    assert not any(isinstance(m, nn.GroupNorm) for m in r18_3.modules())
    grads = {n.split(".")[0] for n, p in r18_3.body.named_parameters() if p.requires_grad}
    assert grads == {"layer2", "layer3", "layer4"}

    lite = build_backbone("efficientnet_lite0")  # pretrained: frozen BN, top 3 stages train
    assert lite.norm == "frozen_bn"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in lite.modules())
    trainable = {n.split(".")[0] for n, p in lite.named_parameters() if p.requires_grad}
    assert trainable == {"stage3", "stage4", "stage5", "fpn"}
    lite5 = build_backbone("efficientnet_lite0", trainable_layers=5)
    assert all(p.requires_grad for p in lite5.parameters())
    lite0 = build_backbone("efficientnet_lite0", trainable_layers=0)
    assert {n.split(".")[0] for n, p in lite0.named_parameters() if p.requires_grad} == {"fpn"}


def test_rejected_combinations():
    with pytest.raises(ValueError, match="offline"):
        build_backbone("resnet50", pretrained=True)
    with pytest.raises(ValueError, match="GroupNorm"):
        build_backbone("efficientnet_lite0", norm="gn")
    with pytest.raises(ValueError, match="norm"):
        build_backbone("resnet18", norm="layernorm")
    with pytest.raises(ValueError, match="0..5"):
        build_backbone("resnet18", trainable_layers=6)
    gn_lite = build_backbone("efficientnet_lite0", pretrained=False, norm="gn")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gn_lite.modules())


def test_anchor_generator_matches_feature_maps():
    for name in BACKBONES:
        ag = anchor_generator_for(name)
        assert len(ag.sizes) == len(FEATMAP_NAMES)
        assert ag.num_anchors_per_location() == [3] * len(FEATMAP_NAMES)
    ag = anchor_generator_for(build_backbone("resnet18"), base_size=16)
    assert [s[0] for s in ag.sizes] == [16, 32, 64, 128, 256]
    # a foreign FPN backbone: maps counted with a forward pass (C3..C5 + pool = 4 maps)
    other = resnet_fpn_backbone(backbone_name="resnet18", weights=None, returned_layers=[2, 3, 4])
    assert len(anchor_generator_for(other).sizes) == 4
    assert other.training  # mode restored


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "resnet50" else n
                                  for n in BACKBONES])
def test_maskrcnn_eval_forward(name):
    torch.manual_seed(0)
    model = _maskrcnn(build_backbone(name)).eval()
    with torch.no_grad():
        (det,) = model([torch.rand(3, SIZE, SIZE)])
    n = len(det["boxes"])
    assert det["boxes"].shape == (n, 4) and det["scores"].shape == (n,) and det["labels"].shape == (n,)
    assert det["masks"].shape == (n, 1, SIZE, SIZE)


@pytest.mark.slow
@pytest.mark.parametrize("name", BACKBONES)
def test_maskrcnn_train_step(name):
    torch.manual_seed(0)
    model = _maskrcnn(build_backbone(name)).train()
    masks = torch.zeros(1, SIZE, SIZE, dtype=torch.uint8)
    masks[0, 20:90, 30:80] = 1
    target = {"boxes": torch.tensor([[30.0, 20.0, 80.0, 90.0]]), "labels": torch.tensor([1]), "masks": masks}
    losses = model([torch.rand(3, SIZE, SIZE), torch.rand(3, SIZE, SIZE)], [target, target])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    body = model.backbone
    trainable = [p for p in body.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in body.fpn.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    assert all(p.grad is None for p in body.parameters() if not p.requires_grad)


def test_feature_map_names_of_a_backbone_built_elsewhere():
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    from maskx.models.backbones import feature_map_names

    foreign = resnet_fpn_backbone(backbone_name="resnet18", weights=None)  # no featmap_names attribute
    assert feature_map_names(foreign) == ["0", "1", "2", "3", "pool"]
    assert len(anchor_generator_for(foreign).sizes) == 5
    assert foreign.training  # the probing forward leaves the mode as it was


@pytest.mark.parametrize("box_features", ["fpn", "trunk"])
def test_a_model_whose_weights_follow_normalises_its_input_as_it_was_trained(box_features):
    """``build_model(..., pretrained=False)`` is how a checkpoint is loaded (``maskx.load``): an
    efficientnet_lite0 model trained from ImageNet's weights must see its images normalised as in
    training (the Lite preprocessing), not as a randomly initialised network would."""
    from maskx.config import Config
    from maskx.models.backbones import IMAGENET_MEAN, IMAGENET_STD
    from maskx.models.maskx_rcnn import build_model

    cfg = Config(backbone="efficientnet_lite0", box_features=box_features, fpn_dim=32, box_head_dim=64, mask_dim=16,
                 mlp_hidden=16, trainable_layers=0)
    trained, loaded = build_model(cfg, ["a", "b"]), build_model(cfg, ["a", "b"], pretrained=False)
    for m in (trained, loaded):
        assert m.transform.image_mean == LITE_MEAN and m.transform.image_std == LITE_STD
    loaded.load_state_dict(trained.state_dict())
    trained.eval(), loaded.eval()
    x = torch.rand(3, 64, 64)
    with torch.no_grad():
        a, b = (m.backbone(m.transform([x])[0].tensors) for m in (trained, loaded))
    assert all(torch.equal(a[k], b[k]) for k in a)
    scratch = build_model(cfg.replace(pretrained_backbone=False, box_features="fpn"), ["a", "b"])
    assert scratch.transform.image_mean == IMAGENET_MEAN and scratch.transform.image_std == IMAGENET_STD
