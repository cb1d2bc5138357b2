"""`--device` of the commands that run a model: checked before anything is loaded."""

from __future__ import annotations


def checked_device(name: str) -> str:
    """`name` if torch knows it and it exists on this machine; else one ConfigError line saying what is available."""
    import torch

    from ..errors import ConfigError

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise ConfigError(
                f"--device {name}: this machine has no CUDA device (or torch was built without CUDA); use --device cpu"
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name}: only cuda:0..cuda:{count - 1} exist")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name!r}: only cpu and cuda are supported")
    return name
