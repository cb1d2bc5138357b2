"""Training checkpoints: written atomically, loaded with `weights_only=True` and strict keys.

A checkpoint holds everything `--resume` needs to continue as if never stopped: model, optimizer,
epoch and step, elapsed training seconds (for time-budget schedules), RNG states (python, numpy,
torch) and the configs as plain dicts. The schedule is a pure function of (step, epoch, progress),
so it has no state; the data order is a function of (seed, epoch).
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..models.state_dict import load_state_dict_strict
from ..util.safe_load import load_torch_file


def rng_state() -> dict:
    """Python, numpy and torch RNG states, as tensors/plain types loadable with weights_only=True."""
    py_version, py_internal, py_gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": {"version": py_version, "state": torch.tensor(py_internal, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    """Inverse of `rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["key"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])


def atomic_save(obj, path: str | Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then os.replace (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, *, epoch: int, step: int,
                    elapsed_s: float, config: dict, best_ap: float, extra: dict | None = None) -> None:
    """Write a resumable checkpoint; `epoch` is the number of completed epochs."""
    atomic_save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "step": step,
            "elapsed_s": float(elapsed_s),
            "best_ap": float(best_ap),
            "rng": rng_state(),
            "config": config,
            **(extra or {}),
        },
        path,
    )


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint with `weights_only=True`; a one-line error when missing or not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found; pass a file written by `deformable-detr train` (OUT/checkpoint.pth)")
    state = load_torch_file(path, map_location=map_location)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a training checkpoint (no 'model' entry)")
    return state


def load_trained_model(path: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, TrainConfig, categories) from a checkpoint written by `fit` (checkpoint.pth or best.pth).

    `categories` is the COCO category list (`id`, `name`) in label order.
    """
    from ..models.detector import DeformableDETR
    from .config import TrainConfig

    state = load_checkpoint(path, map_location=device)
    if "config" not in state:
        raise ValueError(f"{path}: checkpoint has no 'config'; it was not written by `deformable-detr train`")
    config = TrainConfig.from_dict(state["config"])
    model = DeformableDETR(config.model)
    load_state_dict_strict(model, state["model"], str(path))
    categories = state.get("categories") or [{"id": i + 1, "name": str(i)} for i in range(config.model.num_classes)]
    return model.to(device).eval(), config, categories
