"""save_pretrained / from_pretrained of our own model: config, safetensors, preprocessing, categories; strict."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch

from deformable_detr.checkpoint.format import CheckpointInfo
from deformable_detr.checkpoint.state_dict import CheckpointMismatchError
from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.pipeline.categories import default_categories
from deformable_detr.pipeline.processor import PreprocessConfig

_SMALL = dict(backbone_base_width=8, d_model=32, n_heads=4, dim_feedforward=64, num_queries=5, num_classes=3)


def _random_model(config: ModelConfig, **kwargs) -> DeformableDETR:
    torch.manual_seed(0)
    model = DeformableDETR(config, **kwargs).eval()
    with torch.no_grad():  # non-zero values everywhere (init zeroes several tensors)
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.add_(0.01 * torch.randn_like(value))
    return model


@pytest.mark.parametrize("preset", ["tiny", "tiny-two-stage"])
def test_round_trip(preset, tmp_path):
    preprocess = PreprocessConfig(mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2), min_size=320, max_size=512)
    categories = [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}, {"id": 12, "name": "bird"}]
    model = _random_model(ModelConfig.preset(preset, **_SMALL), preprocess=preprocess, categories=categories)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "categories.json",
        "config.json",
        "model.safetensors",
        "preprocess.json",
    ]
    umask = os.umask(0)
    os.umask(umask)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in tmp_path.iterdir())  # like any file the user writes
    assert "attention_backend" not in json.loads((tmp_path / "config.json").read_text())
    assert model.checkpoint_info is None  # fresh weights
    loaded = DeformableDETR.from_pretrained(tmp_path)
    assert loaded.config == model.config and not loaded.training
    assert loaded.checkpoint_info == CheckpointInfo("pretrained", str(tmp_path), "save_pretrained folder")
    assert loaded.preprocess == preprocess and loaded.categories == categories
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
    with pytest.raises(ValueError, match=r"categories\.json: expected a list of 4 categories \(one per class\), got 3"):
        DeformableDETR.from_pretrained(tmp_path)
    (tmp_path / "categories.json").unlink()
    expected = r"model\.safetensors: .* mis-shaped \(class_heads\.0\.weight: checkpoint \[3, 32\] vs model \[4, 32\]"
    with pytest.raises(CheckpointMismatchError, match=expected), pytest.warns(UserWarning, match="no categories.json"):
        DeformableDETR.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(dict(config, mask_loss_coefficient=1)))
    with pytest.raises(ValueError, match=r"config\.json: unknown ModelConfig field\(s\) mask_loss_coefficient"):
        DeformableDETR.from_pretrained(tmp_path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json: not found"):
        DeformableDETR.from_pretrained(tmp_path)


def test_old_directory_loads_with_defaults_and_one_warning(tmp_path):
    """Written before preprocess.json / categories.json existed, with attention_backend in config.json."""
    model = _random_model(ModelConfig.preset("tiny", **_SMALL))
    model.save_pretrained(tmp_path)
    (tmp_path / "preprocess.json").unlink()
    (tmp_path / "categories.json").unlink()
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, attention_backend="reference")))
    with pytest.warns(UserWarning, match="no preprocess.json or categories.json") as record:
        loaded = DeformableDETR.from_pretrained(tmp_path, attention_backend="auto")
    assert len(record) == 1
    assert loaded.preprocess == PreprocessConfig() and loaded.categories == default_categories(3)
    assert loaded.attention_backend == "auto"  # the saved CPU-only choice is not carried over


def test_no_warning_for_a_current_directory(tmp_path):
    _random_model(ModelConfig.preset("tiny", **_SMALL)).save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DeformableDETR.from_pretrained(tmp_path)


def test_bad_categories_file_names_the_file(tmp_path):
    _random_model(ModelConfig.preset("tiny", **_SMALL)).save_pretrained(tmp_path)
    (tmp_path / "categories.json").write_text(json.dumps([{"id": 1, "name": "a"}]))
    with pytest.raises(ValueError, match="expected a list of 3 categories"):
        DeformableDETR.from_pretrained(tmp_path)
    (tmp_path / "categories.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"categories\.json: not valid JSON"):
        DeformableDETR.from_pretrained(tmp_path)
