"""Training: `fit(TrainConfig.preset(...))` and what it is made of (matcher, criterion, optimizer, loop, checkpoints)."""

from .callbacks import TrainCallback
from .config import TrainConfig
from .engine import TrainResult, fit
from .loop import NonFiniteLossError

__all__ = ["NonFiniteLossError", "TrainCallback", "TrainConfig", "TrainResult", "fit"]
