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
loaded with `weights_only=True`.
"""

from __future__ import annotations

import os
import random
import secrets
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError
from ..util.safe_load import load_torch_file

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


def fsync_dir(folder: str | Path) -> None:
    """Make a rename or creation inside `folder` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write, keep_previous: str | Path | None = None) -> Path:
    """Write a file through `write(binary_file)` so readers only ever see the old or the complete new file.

    Temp file `NAME.<random>.tmp` in the same folder (mode 0666 & ~umask, like any other output) ->
    flush + fsync -> optionally hard-link the current file to `keep_previous` -> os.replace -> fsync
    of the folder. On an error the temp file is removed and the old file is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            previous_tmp = Path(keep_previous).with_name(f"{Path(keep_previous).name}.{secrets.token_hex(4)}.tmp")
            os.link(path, previous_tmp)
            os.replace(previous_tmp, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_save(obj, path: str | Path, keep_previous: str | Path | None = None) -> Path:
    """`torch.save(obj)` through `atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f), keep_previous)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """A text file through `atomic_write`."""
    return atomic_write(path, lambda f: f.write(text.encode()))


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete leftovers `<run file>.<hex>.tmp` of writes killed half-way; returns what was removed."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for name in RUN_FILES:
            for tmp in folder.glob(f"{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


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


def checksum(obj) -> int:
    """CRC32 over every tensor's bytes, dtype and shape and every other value's repr, in a fixed order."""
    crc = 0

    def visit(value):
        nonlocal crc
        if torch.is_tensor(value):
            tensor = value.detach().cpu().contiguous()
            crc = zlib.crc32(f"T{tensor.dtype}{tuple(tensor.shape)}".encode(), crc)
            if tensor.numel():
                crc = zlib.crc32(tensor.reshape(-1).view(torch.uint8).numpy(), crc)
        elif isinstance(value, dict):
            crc = zlib.crc32(b"{", crc)
            for key in sorted(value, key=repr):
                crc = zlib.crc32(repr(key).encode(), crc)
                visit(value[key])
        elif isinstance(value, (list, tuple)):
            crc = zlib.crc32(b"[", crc)
            for item in value:
                visit(item)
        else:
            crc = zlib.crc32(repr(value).encode(), crc)

    visit(obj)
    return crc


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
    if "checksum" in state:
        stored = state.pop("checksum")
        if checksum(state) != stored:
            raise CheckpointError(f"{path}: checksum mismatch, the file is corrupt; use an intact copy")
    return state


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


def load_trained_model(path: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, TrainConfig, categories) from a checkpoint written by `fit` (checkpoint.pth or best.pth).

    `path` may also be a run folder (its best.pth, else checkpoint.pth). `categories` is the COCO
    category list (`id`, `name`) in label order.
    """
    from ..models.build import model_class
    from .config import TrainConfig

    path = checkpoint_in(path)
    state = load_checkpoint(path, map_location=device)
    if "config" not in state:
        raise CheckpointError(f"{path}: checkpoint has no 'config'; it was not written by `deformable-detr train`")
    config = TrainConfig.from_dict(state["config"])
    categories = state.get("categories") or [{"id": i + 1, "name": str(i)} for i in range(config.model.num_classes)]
    model = model_class(config.model).from_state_dict(config.model, state["model"], str(path), categories=categories)
    return model.to(device), config, categories


def checkpoint_in(path: str | Path) -> Path:
    """A checkpoint file given a file or a run folder (its best.pth if present, else checkpoint.pth)."""
    path = Path(path)
    if path.is_dir():
        for name in (BEST, CHECKPOINT):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"{path}: folder holds no {BEST} or {CHECKPOINT}; pass a run folder written by `deformable-detr train`"
        )
    return path
