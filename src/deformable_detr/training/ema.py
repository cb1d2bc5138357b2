"""Exponential moving average of a model's weights (`--ema`), evaluated and saved as the best model.

After optimizer step n (n = 1, 2, ...), with d_n = decay * (1 - exp(-n / warmup_steps)) (or `decay`
when warmup_steps is 0), every floating-point parameter and buffer becomes

    ema = d_n * ema + (1 - d_n) * weight

and integer buffers are copied. The warm-up (as in timm / Ultralytics) keeps the average from
being dominated by the random initial weights in short fine-tuning runs.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..errors import ConfigError
from .callbacks import TrainCallback


class ModelEMA:
    """An averaged copy of a model, updated after each optimizer step.

    Args:
        model: the trained model (unwrapped, not DDP); copied once here.
        decay: in [0, 1); the weight of the old average (e.g. 0.999).
        warmup_steps: time constant of the decay warm-up in steps (0 = none).
    """

    def __init__(self, model: nn.Module, decay: float, warmup_steps: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"EMA decay = {decay} must be in [0, 1), e.g. 0.999")
        if warmup_steps < 0:
            raise ConfigError(f"EMA warmup_steps = {warmup_steps} must be >= 0")
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.updates = 0

    def decay_at(self, updates: int) -> float:
        """d_n of the module docstring for the n-th update."""
        if self.warmup_steps == 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-updates / self.warmup_steps))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (call after each optimizer step)."""
        self.updates += 1
        decay = self.decay_at(self.updates)
        current = model.state_dict()
        for name, average in self.module.state_dict().items():
            value = current[name].detach()
            if average.dtype.is_floating_point:
                average.mul_(decay).add_(value.to(average.dtype), alpha=1.0 - decay)
            else:
                average.copy_(value)

    def state_dict(self) -> dict:
        """The averaged weights and the update count (for checkpoints)."""
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of `state_dict` (strict keys)."""
        from ..checkpoint.state_dict import load_state_dict_strict

        load_state_dict_strict(self.module, state["module"], "EMA state")
        self.updates = int(state["updates"])


class EMACallback(TrainCallback):
    """Keeps a `ModelEMA` of the run's model: updated after every step, evaluated and saved as best.pth,
    stored in checkpoints (so a resumed run continues the same average)."""

    name = "ema"

    def __init__(self, decay: float, warmup_steps: int = 0):
        self.decay, self.warmup_steps = decay, warmup_steps
        self.ema: ModelEMA | None = None
        self._pending: dict | None = None

    def setup(self, run) -> None:
        self.ema = ModelEMA(run.model, self.decay, self.warmup_steps)
        if self._pending:  # load_state_dict runs before setup on resume
            self.ema.load_state_dict(self._pending)
            self._pending = None

    def after_step(self, run) -> None:
        self.ema.update(run.model)

    def model_to_evaluate(self, run) -> nn.Module | None:
        return self.ema.module if self.ema is not None else None

    def state_dict(self) -> dict:
        return self.ema.state_dict() if self.ema is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        if self.ema is None:
            self._pending = state
        else:
            self.ema.load_state_dict(state)
