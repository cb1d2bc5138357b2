"""Optimizer and learning-rate schedule: named parameter groups, AdamW, step drop / warm-up / cosine.

Groups (official Deformable DETR `main.py`): the backbone at `lr_backbone`; every parameter whose
name contains `sampling_offsets` or `reference_points` (`lr_linear_proj_names`) at `lr * 0.1`;
everything else at `lr`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..util.config_fields import check_fields

LINEAR_PROJ_NAMES = ("sampling_offsets", "reference_points")
SCHEDULES = ("step", "cosine", "linear")
# A warm-up ends after `warmup_steps` steps or once this fraction of the run is done, whichever comes first, so a
# run shorter than its warm-up still reaches its lr (the demo's 100 of 1100 steps is under the fraction: unchanged).
WARMUP_MAX_FRACTION = 1 / 8


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and schedule settings (paper: lr 2e-4, backbone 2e-5, ×0.1 linear projections, wd 1e-4,
    clip 0.1, lr dropped ×0.1 at epoch 40 of 50).

    schedule: "step" (×`lr_drop_factor` at `lr_drop` epochs), "cosine" or "linear" decay to
    `min_lr_ratio * lr` over training (over the time budget when training has `max_minutes`).
    warmup_steps: linear warm-up from 0 over this many optimizer steps (0 = none), and over at most an eighth
    of the run (`WARMUP_MAX_FRACTION` of max_steps, of all epochs' steps, or of the time budget).
    """

    lr: float = 2e-4
    lr_backbone: float = 2e-5
    lr_linear_proj_mult: float = 0.1
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    clip_max_norm: float = 0.1
    schedule: str = "step"
    lr_drop: int = 40
    lr_drop_factor: float = 0.1
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def __post_init__(self):
        check_fields(self)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"OptimConfig.schedule = {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        for name in (
            "lr",
            "lr_backbone",
            "lr_linear_proj_mult",
            "weight_decay",
            "clip_max_norm",
            "lr_drop_factor",
            "min_lr_ratio",
            "betas",
        ):
            values = getattr(self, name) if name == "betas" else (getattr(self, name),)
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise ConfigError(f"OptimConfig.{name} = {getattr(self, name)} must be finite")
        if self.lr <= 0 or self.lr_backbone < 0:
            raise ConfigError(
                f"OptimConfig: lr = {self.lr}, lr_backbone = {self.lr_backbone}; need lr > 0, lr_backbone >= 0"
            )
        if (
            min(self.lr_linear_proj_mult, self.weight_decay, self.clip_max_norm, self.lr_drop_factor, self.min_lr_ratio)
            < 0
        ):
            raise ConfigError(
                "OptimConfig: lr_linear_proj_mult, weight_decay, clip_max_norm, lr_drop_factor and min_lr_ratio must be >= 0"
            )
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"OptimConfig.betas = {self.betas} must lie in [0, 1)")
        if self.warmup_steps < 0:
            raise ConfigError(f"OptimConfig.warmup_steps = {self.warmup_steps} must be >= 0")

    def with_lr(self, lr: float) -> OptimConfig:
        """This config with `lr` and the backbone lr scaled by the same factor (validated like any config)."""
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"lr = {lr} must be a finite number > 0 (e.g. 2e-4)")
        return dataclasses.replace(self, lr=lr, lr_backbone=self.lr_backbone * lr / self.lr)


def param_groups(model: nn.Module, config: OptimConfig) -> list[dict]:
    """Split trainable parameters into named groups.

    Returns:
        list of dicts with `name` ("backbone", "linear_proj", "rest"), `params`, `lr` and
        `base_lr` (the schedule scales `base_lr`); empty groups are left out.
    """
    groups = {"backbone": [], "linear_proj": [], "rest": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("backbone.") or ".backbone." in name:
            groups["backbone"].append(param)
        elif any(key in name for key in LINEAR_PROJ_NAMES):
            groups["linear_proj"].append(param)
        else:
            groups["rest"].append(param)
    lrs = {"backbone": config.lr_backbone, "linear_proj": config.lr * config.lr_linear_proj_mult, "rest": config.lr}
    return [
        {"name": name, "params": params, "lr": lrs[name], "base_lr": lrs[name]}
        for name, params in groups.items()
        if params
    ]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over `param_groups(model, config)`."""
    return torch.optim.AdamW(
        param_groups(model, config), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )


def lr_factor(config: OptimConfig, step: int, epoch: int, progress: float, total_steps: int | None = None) -> float:
    """Multiplier of each group's base lr.

    The linear warm-up lasts `warmup_steps` steps, or `WARMUP_MAX_FRACTION` of the run when that is shorter:
    of `total_steps` when given, else (a time budget) until `progress` reaches that fraction.

    Args:
        step: optimizer steps done so far (for warm-up).
        epoch: current epoch (for the step schedule).
        progress: fraction of training done in [0, 1] (steps or time budget), for cosine/linear.
        total_steps: the run's length in steps, when it is known (not with a time budget).
    """
    progress = min(max(progress, 0.0), 1.0)
    warmup = 1.0
    if config.warmup_steps > 0:
        done = (step + 1) / total_steps if total_steps else progress  # of the run, after this step
        warmup = min(1.0, max((step + 1) / config.warmup_steps, done / WARMUP_MAX_FRACTION))
    if config.schedule == "step":
        decay = config.lr_drop_factor ** (epoch // config.lr_drop) if config.lr_drop > 0 else 1.0
    elif config.schedule == "cosine":
        decay = config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    else:
        decay = config.min_lr_ratio + (1 - config.min_lr_ratio) * (1 - progress)
    return warmup * decay


def shortened_warmup(config: OptimConfig, total_steps: int) -> str | None:
    """A line saying so when a run of `total_steps` steps ends its warm-up early (see `lr_factor`), else None."""
    full_at = math.ceil(total_steps * WARMUP_MAX_FRACTION)  # 1-based step with the full lr
    if config.warmup_steps == 0 or full_at >= config.warmup_steps:
        return None
    return (
        f"warm-up: {config.warmup_steps} steps is more than an eighth of this {total_steps}-step run; it is shortened "
        f"to {full_at} step{'s' if full_at > 1 else ''}, so the lr reaches {config.lr:g} at step {full_at}"
    )


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Set every group's lr to base_lr * factor; returns the `rest` group's lr (for logging)."""
    logged = 0.0
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
        if group.get("name") == "rest":
            logged = group["lr"]
    return logged
