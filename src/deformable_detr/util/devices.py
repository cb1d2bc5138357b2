"""The one device check: every command, `load` and `fit` refuse a device this machine lacks with the same line."""

from __future__ import annotations

import torch

from deformable_detr.errors import ConfigError


def checked_device(name: str | torch.device) -> torch.device:
    """`name` as a torch.device if torch knows it and it exists on this machine.

    Args:
        name: "cpu", "cuda" or "cuda:N" (or a torch.device).

    Returns:
        The torch.device.

    Raises:
        ConfigError: one line saying what is wrong and what exists: not a device name, a device type other than
            cpu/cuda, no CUDA device on this machine, or a CUDA index past the last device.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {str(name)!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
            raise ConfigError(
                f"device {str(device)!r}: this machine has no CUDA device (torch {torch.__version__}, {built}); use cpu"
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {str(device)!r}: only cuda:0..cuda:{count - 1} exist on this machine")
    elif device.type != "cpu":
        raise ConfigError(f"device {str(device)!r}: only cpu and cuda are supported")
    return device
