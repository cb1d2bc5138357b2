"""Training: `fit(TrainConfig.preset(...))` and what it is made of (matcher, criterion, optimizer, loop, checkpoints)."""

from .config import TrainConfig
from .engine import TrainResult, fit

__all__ = ["TrainConfig", "TrainResult", "fit"]
