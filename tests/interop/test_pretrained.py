"""save_pretrained / from_pretrained of our own model: safetensors + config.json, strict."""

from __future__ import annotations

import json

import pytest
import torch

from deformable_detr.models.state_dict import CheckpointMismatchError
from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR

_SMALL = dict(backbone_base_width=8, d_model=32, n_heads=4, dim_feedforward=64, num_queries=5, num_classes=3)


def _random_model(config: ModelConfig) -> DeformableDETR:
    torch.manual_seed(0)
    model = DeformableDETR(config).eval()
    with torch.no_grad():  # non-zero values everywhere (init zeroes several tensors)
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.add_(0.01 * torch.randn_like(value))
    return model


@pytest.mark.parametrize("preset", ["tiny", "tiny-two-stage"])
def test_round_trip(preset, tmp_path):
    model = _random_model(ModelConfig.preset(preset, **_SMALL))
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = DeformableDETR.from_pretrained(tmp_path)
    assert loaded.config == model.config and not loaded.training
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    images = torch.randn(1, 3, 64, 80)  # smallest level 1x2: GroupNorm(32, 32) needs > 1 value per group
    with torch.no_grad():
        expected, actual = model(images), loaded(images)
    torch.testing.assert_close(actual["pred_logits"], expected["pred_logits"], rtol=0, atol=0)
    torch.testing.assert_close(actual["pred_boxes"], expected["pred_boxes"], rtol=0, atol=0)


def test_config_mismatch_is_one_clear_error(tmp_path):
    _random_model(ModelConfig.preset("tiny", **_SMALL)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, num_classes=4)))
    expected = r"model\.safetensors: .* mis-shaped \(class_heads\.0\.weight: checkpoint \[3, 32\] vs model \[4, 32\]"
    with pytest.raises(CheckpointMismatchError, match=expected):
        DeformableDETR.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(dict(config, mask_loss_coefficient=1)))
    with pytest.raises(ValueError, match=r"config\.json: unknown ModelConfig field\(s\) mask_loss_coefficient"):
        DeformableDETR.from_pretrained(tmp_path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json: not found"):
        DeformableDETR.from_pretrained(tmp_path)
