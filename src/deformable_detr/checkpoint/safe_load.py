"""Read weights without ever running code they carry: the one place that calls `torch.load` or reads safetensors.

Every checkpoint path of the package (training checkpoints, official `.pth` files, HF `pytorch_model.bin`,
backbone weights) goes through `load_torch_file`. It unpickles with `weights_only=True`, which builds only
tensors, plain containers and numbers, plus the few classes our formats need (`argparse.Namespace`, the
`args` of an official checkpoint). A file that names any other Python callable is refused before anything
is executed, and every failure (missing, truncated, corrupt, not a checkpoint, a pickle that would run
code) becomes one `CheckpointError` line naming the file. The message never advises disabling the check.

    state = load_torch_file("run/checkpoint.pth")              # tensors land on the CPU
    state = load_torch_file("run/checkpoint.pth", map_location="cuda")
    tensors = read_weights("hf/model.safetensors")                 # or a pytorch_model.bin state dict
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import torch

from deformable_detr.errors import CheckpointError

# Classes a checkpoint of ours or of the official implementation may hold besides tensors and plain types.
ALLOWED_GLOBALS = (argparse.Namespace,)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BLOCKED_GLOBAL = re.compile(r"GLOBAL (\S+)")


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or a `torch.save` state dict, on the CPU, without running code.

    Args:
        path: a `.safetensors` file (read with safetensors) or any other file (read with `load_torch_file`).

    Returns:
        name -> tensor.

    Raises:
        CheckpointError: unreadable, refused or truncated file, or one that holds something else than a state dict.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({error}); use a complete copy") from None
    state_dict = load_torch_file(path)
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(state_dict).__name__}")
    return dict(state_dict)


def load_torch_file(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Unpickle a `torch.save` file safely (tensors, plain containers, numbers, `argparse.Namespace`).

    Args:
        path: the file.
        map_location: where tensors go, as `torch.load`'s argument (default "cpu", so a checkpoint
            saved on a GPU loads on a machine without one).

    Returns:
        The saved object.

    Raises:
        CheckpointError: the file is missing, is a directory, is empty, truncated or corrupt, is not a
            `torch.save` file, or holds objects that would run code when unpickled (refused, never run).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file; pass the path of a checkpoint")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory; pass the checkpoint file inside it")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); it was not written completely; use another copy")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
                return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(_unpickling_message(path, str(error))) from None
    # What torch.load raises on a truncated, corrupt or foreign file (found by feeding it random and cut files).
    except (
        RuntimeError,
        EOFError,
        KeyError,
        ValueError,
        IndexError,
        TypeError,
        AttributeError,
        struct.error,
        zipfile.BadZipFile,
        OverflowError,
        MemoryError,
    ) as error:
        if isinstance(error, RuntimeError) and "cuda" in str(error).lower():
            raise CheckpointError(
                f"{path}: cannot place the tensors on {map_location!r} ({_first_line(error)}); "
                "load it with device='cpu' or on a machine with that device"
            ) from None
        raise CheckpointError(_unreadable_message(path)) from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read the file ({error.strerror or error})") from None


# How a torch.save file starts: a zip archive (torch >= 1.6), or the pickled magic number of the legacy format.
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)


def _unreadable_message(path: str) -> str:
    """One line for a file torch.load cannot read, from how the file starts (torch's own text, e.g.
    "PytorchStreamReader failed reading zip archive ... internal miniz error", would only confuse)."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(_LEGACY_MAGIC))
    except OSError:
        head = b""
    size = os.path.getsize(path)
    if head.startswith(_ZIP_MAGIC) and zipfile.is_zipfile(path) and not _has_torch_data(path):
        return (
            f"{path}: not a PyTorch checkpoint (a complete zip archive, but not one torch.save wrote); "
            "pass a .pth/.pt checkpoint"
        )
    if head.startswith(_ZIP_MAGIC) or head == _LEGACY_MAGIC:
        return (
            f"{path}: the file is truncated or corrupt (a torch.save checkpoint of {size} bytes, cut short or "
            "damaged, e.g. by an interrupted download or save); re-download or re-save it"
        )
    return (
        f"{path}: not a PyTorch checkpoint (not a file torch.save wrote: it starts with {head[:8]!r}); "
        "pass a .pth/.pt checkpoint, or re-download or re-save it if this is one"
    )


def _has_torch_data(path: str) -> bool:
    """True for a zip archive holding torch.save's `<name>/data.pkl`."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _unpickling_message(path: str, detail: str) -> str:
    """One line for a file the restricted unpickler rejected, without torch's advice to disable the check."""
    blocked = _BLOCKED_GLOBAL.search(_ANSI.sub("", detail))
    if blocked:
        return (
            f"{path}: refused: the file holds a Python object ({blocked.group(1)}) that would run code when "
            "unpickled; nothing was executed. Use a checkpoint from a source you trust, saved as a state dict "
            "(tensors only) or safetensors"
        )
    return (
        f"{path}: not a readable PyTorch checkpoint: the file is truncated or corrupt, or holds objects other "
        "than tensors (nothing was executed); use a complete copy from a source you trust"
    )


def _first_line(error: BaseException) -> str:
    text = _ANSI.sub("", str(error)).strip()
    return text.splitlines()[0][:200] if text else ""
