"""Parameter groups and the learning-rate schedule."""

import math

import pytest

from deformable_detr.models.detector import DeformableDETR
from deformable_detr.training.config import TrainConfig
from deformable_detr.training.optim import OptimConfig, build_optimizer, lr_factor, param_groups, shortened_warmup


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


def _cosine(progress, min_lr_ratio=0.05):
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("total", [1, 2, 7, 8, 9, 20, 63, 64, 65, 400, 799, 801, 950, 1100])
@pytest.mark.parametrize("warmup", [1, 3, 100])
def test_warmup_lasts_at_most_an_eighth_of_the_run(total, warmup):
    config = OptimConfig(warmup_steps=warmup, lr_drop=0)  # constant lr after the warm-up: the factor is the warm-up
    factors = [lr_factor(config, step, 0, step / total, total) for step in range(total)]
    full_at = min(warmup, math.ceil(total / 8))  # 1-based step that first runs at the full lr
    assert factors[full_at - 1] == 1.0 and all(f < 1.0 for f in factors[: full_at - 1])
    assert factors[0] == pytest.approx(min(1.0, 1 / min(warmup, total / 8)))  # linear from the first step
    message = shortened_warmup(config, total)
    assert (message is not None) == (full_at < warmup)
    if message:
        assert f"{warmup} steps is more than an eighth of this {total}-step run" in message
        assert f"shortened to {full_at} step{'s' if full_at > 1 else ''}," in message


def test_a_short_finetune_run_peaks_at_its_lr():
    """`train --preset finetune --max-steps 20`: lr 1e-4, 100 warm-up steps, cosine to 5 % over 20 steps."""
    optim = TrainConfig.preset("finetune").optim
    lrs = [optim.lr * lr_factor(optim, step, 0, step / 20, 20) for step in range(20)]
    # warm-up over 20 / 8 = 2.5 steps: step index 2 is the first at full lr, at progress 2 / 20:
    # 0.05 + 0.95 * 0.5 * (1 + cos(0.1 pi)) = 0.05 + 0.95 * 0.975528 = 0.976752
    assert max(lrs) == lrs[2] == pytest.approx(0.976752e-4, rel=1e-6)
    assert lrs[0] == pytest.approx(1e-4 / 2.5, rel=1e-12)  # the configured 100 steps would give 1e-6


def test_a_long_run_keeps_its_warmup():
    optim = TrainConfig.preset("demo").optim  # 100 warm-up steps of 1100 (under an eighth, 137): unchanged
    for step in (0, 49, 98, 99, 500):
        expected = min(1.0, (step + 1) / 100) * _cosine(step / 1100)
        assert lr_factor(optim, step, 0, step / 1100, 1100) == pytest.approx(expected, rel=1e-12)
    assert shortened_warmup(optim, 1100) is None


def test_with_a_time_budget_the_warmup_ends_at_an_eighth_of_it():
    optim = OptimConfig(schedule="cosine", warmup_steps=100, min_lr_ratio=0.05)
    assert lr_factor(optim, 4, 0, 0.0625) == pytest.approx(0.5 * _cosine(0.0625))  # half of the eighth
    assert lr_factor(optim, 9, 0, 0.125) == pytest.approx(_cosine(0.125))  # step 10 of 100, budget 1/8 spent
