"""Parameter groups and the learning-rate schedule."""

import pytest

from deformable_detr.models.detector import DeformableDETR
from deformable_detr.training.optim import OptimConfig, build_optimizer, lr_factor, param_groups


def test_param_groups_named_and_complete(make_tiny_model_config):
    model = DeformableDETR(make_tiny_model_config(with_box_refine=False))
    config = OptimConfig(lr=1e-3, lr_backbone=1e-5)
    groups = {g["name"]: g for g in param_groups(model, config)}
    assert set(groups) == {"backbone", "linear_proj", "rest"}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith("backbone.") for p in groups["backbone"]["params"])
    linear = [names[id(p)] for p in groups["linear_proj"]["params"]]
    assert linear and all("sampling_offsets" in n or "reference_points" in n for n in linear)
    assert any("transformer.reference_points" in n for n in linear)
    assert groups["backbone"]["lr"] == 1e-5 and groups["rest"]["lr"] == 1e-3
    assert groups["linear_proj"]["lr"] == pytest.approx(1e-4)
    grouped = sum(len(g["params"]) for g in groups.values())
    assert grouped == sum(1 for p in model.parameters() if p.requires_grad)
    assert build_optimizer(model, config).defaults["weight_decay"] == 1e-4


def test_schedules():
    step = OptimConfig(lr_drop=40)
    assert lr_factor(step, 0, 39, 0.0) == 1.0 and lr_factor(step, 0, 40, 0.0) == pytest.approx(0.1)
    warm = OptimConfig(schedule="cosine", warmup_steps=10, min_lr_ratio=0.0)
    assert lr_factor(warm, 0, 0, 0.0) == pytest.approx(0.1)
    assert lr_factor(warm, 100, 0, 0.5) == pytest.approx(0.5)
    assert lr_factor(warm, 100, 0, 1.0) == pytest.approx(0.0, abs=1e-12)
    linear = OptimConfig(schedule="linear", min_lr_ratio=0.1)
    assert lr_factor(linear, 5, 0, 0.5) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="step.*cosine.*linear"):
        OptimConfig(schedule="poly")
