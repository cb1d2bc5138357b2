"""Training checkpoints and run files: never half-written, never stale, checked when read.

A checkpoint holds everything `--resume` needs to continue as if training had never stopped: model,
optimizer, the run's position (`state`: epoch, batches consumed in it, optimizer steps, training
seconds spent, best AP and the step it came from, the metrics history), every process's RNG states,
the config, the categories and the state of each training callback. It is written as

    temp file (0644) -> fsync -> keep the previous checkpoint as `checkpoint.prev.pth` -> rename over
    `checkpoint.pth` -> fsync of the folder

so `checkpoint.pth` is always a complete file and a kill at any moment loses at most the steps since
the last write. A CRC32 over every tensor and value (`checksum`) is stored inside the file; on resume a
checkpoint that fails to load or to match it is reported and the previous one is used. Files are
loaded with `weights_only=True`. The writing, the checksum and the safe reading are `deformable_detr.checkpoint`'s;
this module holds what is particular to training: the payload, the run folder, the RNG states, resuming.
"""

from __future__ import annotations

import os
import random
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import files
from ..checkpoint.files import atomic_save, checksum, fsync_dir, verify_checksum
from ..checkpoint.safe_load import load_torch_file
from ..errors import CheckpointError, ConfigError

CHECKPOINT = "checkpoint.pth"
PREVIOUS = "checkpoint.prev.pth"
BEST = "best.pth"
RUN_FILES = (
    CHECKPOINT,
    PREVIOUS,
    BEST,
    "config.json",
    "metrics.jsonl",
    "curves.png",
    "train_batch0.png",
)  # what marks a folder as a run
FORMAT = "deformable-detr-train"


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) RNG states of this process, loadable with weights_only=True."""
    py_version, py_internal, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": py_version, "state": torch.tensor(py_internal, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of `rng_state`; the tensors may be on any device (a checkpoint loaded with map_location="cuda").

    CUDA states are restored for the devices this machine has (a run saved on more GPUs keeps the first ones).
    """
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npst["key"].cpu().numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())  # generator states are CPU ByteTensors, whatever the device
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete leftovers `<run file>.<hex>.tmp` of writes killed half-way; returns what was removed."""
    return files.remove_temp_files(folder, RUN_FILES)


def holds_run(folder: str | Path) -> list[str]:
    """Names of the run files in `folder` (empty: not a run)."""
    folder = Path(folder)
    return [name for name in RUN_FILES if (folder / name).exists()]


def prepare_output_dir(folder: str | Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over an old one unless asked; `overwrite` removes the old run's files only."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder}: exists and is not a folder; choose a folder for the run")
    check_writable_folder(folder)
    existing = holds_run(folder)
    if resume or not existing:
        return
    if not overwrite:
        raise ConfigError(
            f"{folder}: already holds a training run ({', '.join(existing)}); continue it with --resume {folder}, "
            "choose another --out, or pass --overwrite to replace it"
        )
    for name in existing:
        (folder / name).unlink()
    for epoch_file in folder.glob("checkpoint_epoch*.pth"):  # written by --keep
        epoch_file.unlink()
    fsync_dir(folder)


def check_writable_folder(folder: str | Path) -> None:
    """Create `folder` if needed and write (then delete) a probe file in it, so that a read-only place or a
    path under a file is one line before any work, not an OSError when the first checkpoint is saved."""
    folder = Path(folder)
    existing = next((path for path in (folder, *folder.parents) if path.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"--out {folder}: cannot create it: {existing} is a file, not a folder; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write_check_")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise ConfigError(
            f"--out {folder}: cannot write there ({error.strerror or error}); choose a folder you can write to"
        ) from None


def save_checkpoint(path: str | Path, payload: dict, keep_previous: bool = True) -> Path:
    """Write a training checkpoint (`payload` plus `format` and `checksum`), keeping the previous as checkpoint.prev.pth."""
    payload = {"format": FORMAT, **payload}
    payload["checksum"] = checksum(payload)
    path = Path(path)
    return atomic_save(payload, path, keep_previous=path.with_name(PREVIOUS) if keep_previous else None)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint with `weights_only=True` and verify its checksum.

    Raises:
        CheckpointError: missing, unreadable, truncated, not a training checkpoint, or checksum mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found; pass a file written by `deformable-detr train` (OUT/checkpoint.pth)"
        )
    state = load_torch_file(path, map_location=map_location)  # CheckpointError for damaged or unsafe files
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(
            f"{path}: not a training checkpoint (no 'model' entry); pass OUT/checkpoint.pth or OUT/best.pth"
        )
    return verify_checksum(state, path)


def load_latest_checkpoint(folder: str | Path, map_location="cpu") -> tuple[dict, Path]:
    """The newest readable checkpoint of a run: checkpoint.pth, else (with a warning) checkpoint.prev.pth."""
    folder = Path(folder)
    errors = []
    for name in (CHECKPOINT, PREVIOUS):
        path = folder / name
        if not path.is_file():
            continue
        try:
            state = load_checkpoint(path, map_location)
        except CheckpointError as error:
            errors.append(str(error))
            continue
        if errors:
            warnings.warn(
                f"{errors[0]}; resuming from {path} instead (step {state.get('state', {}).get('step', '?')})",
                stacklevel=2,
            )
        return state, path
    if errors:
        raise CheckpointError(
            f"{folder}: no readable checkpoint ({'; '.join(errors)}); start a new run with --overwrite"
        )
    raise CheckpointError(f"{folder}: no {CHECKPOINT} to resume from; start the run without --resume")
