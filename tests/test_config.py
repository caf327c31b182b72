"""The configuration (maskx/config.py): bad values, unknown fields and presets refused, overrides parsed,
the JSON round trip."""
from __future__ import annotations

import pytest

from maskx.config import Config, ConfigError, get_preset


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


def test_negative_embedding_norm_is_rejected():
    with pytest.raises(ConfigError, match="embedding_norm"):
        Config(embedding_norm=-1.0)


def test_mask_lr_mult_must_be_positive():
    with pytest.raises(ValueError, match="mask_lr_mult"):
        Config(mask_lr_mult=0.0)


def test_backbone_width_and_trainable_stages_reach_the_model():
    from maskx.models.maskx_rcnn import build_model

    cfg = get_preset("detector").replace(backbone="resnet18", fpn_dim=64, trainable_layers=0, box_head_dim=32)
    model = build_model(cfg, ["a", "b"], pretrained=False)
    assert model.backbone.out_channels == 64
    assert model.roi_heads.box_head.fc6.in_features == 64 * 7 * 7
    trunk = [p for n, p in model.backbone.named_parameters() if not n.startswith("fpn.")]
    assert trunk and not any(p.requires_grad for p in trunk)
    assert all(p.requires_grad for p in model.backbone.fpn.parameters())
    for bad in ({"trainable_layers": 6}, {"trainable_layers": -1}, {"fpn_dim": 0}):
        with pytest.raises(ConfigError):
            get_preset("detector").replace(**bad)
