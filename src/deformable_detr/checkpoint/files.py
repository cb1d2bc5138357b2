"""Write a file whole or not at all, and checksum what a checkpoint holds: the one atomic-write family.

Every file the package writes (training checkpoints, run files, save_pretrained folders, detections.json,
drawings, ONNX models, benchmark and experiment results, dataset annotations) goes through `write_atomic`:

    temp file `NAME.<random>.tmp` in the same folder (mode 0666 & ~umask, like any other output) ->
    write -> fsync -> optionally keep the current file as `keep_previous` (a hard link) -> rename over
    `NAME` -> fsync of the folder

so readers (and a user who interrupts the run) only ever see the old file or the complete new one, and a
crash right after the rename does not lose it.

    write_atomic(out / "drawing.png", lambda path: image.save(path, format="PNG"))
    atomic_write_text(out / "detections.json", text)
    atomic_save(payload, run / "checkpoint.pth", keep_previous=run / "checkpoint.prev.pth")

`checksum` is the CRC32 a training checkpoint stores over its own content, checked when it is read.
"""

from __future__ import annotations

import os
import secrets
import shutil
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from deformable_detr.errors import CheckpointError


def fsync_dir(folder: str | os.PathLike) -> None:
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


def _temporary_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link_atomic(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Make `target` a hard link to `source` (a copy where the filesystem has no hard links), atomically:
    `target` is the old file or the complete new one, never absent or partial."""
    source, target = Path(source), Path(target)
    temporary = _temporary_name(target)
    try:
        try:
            os.link(source, temporary)
        except OSError:  # a filesystem without hard links
            shutil.copy2(source, temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target


def write_atomic(
    path: str | os.PathLike, write: Callable[[Path], object], keep_previous: str | os.PathLike | None = None
) -> Path:
    """Call `write(temporary path)` in `path`'s folder (created if needed), then rename the result to `path`.

    Args:
        path: the file to write; an existing one is replaced.
        write: writes the content to the path it is given (an empty file of mode 0666 & ~umask exists there;
            the writer may truncate or replace it).
        keep_previous: where to keep the current `path` (hard link) before it is replaced; None = don't.

    Returns:
        `path`. On any error (or an interrupt) the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_name(path)
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = temporary.stat().st_mode & 0o777  # 0666 & ~umask
    try:
        write(temporary)
        os.chmod(temporary, mode)  # a writer that replaced the file (safetensors writes 0600) gets the same mode
        _fsync_file(temporary)
        if keep_previous is not None and path.exists():
            link_atomic(path, keep_previous)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_save(obj: Any, path: str | os.PathLike, keep_previous: str | os.PathLike | None = None) -> Path:
    """`torch.save(obj)` through `write_atomic`."""
    return write_atomic(path, lambda temporary: torch.save(obj, temporary), keep_previous)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """A UTF-8 text file through `write_atomic`."""
    return write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def remove_temp_files(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete leftovers `<name>.<hex>.tmp` of writes to `folder/<name>` killed half-way; returns what was removed."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for name in names:
            for temporary in folder.glob(f"{name}.*.tmp"):
                temporary.unlink(missing_ok=True)
                removed.append(temporary)
    return removed


def checksum(obj: Any) -> int:
    """CRC32 over every tensor's bytes, dtype and shape and every other value's repr, in a fixed order."""
    crc = 0

    def visit(value: Any) -> None:
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


def verify_checksum(state: dict[str, Any], source: str | os.PathLike) -> dict[str, Any]:
    """`state` without its "checksum" entry, after checking it against `checksum` of the rest (when it has one).

    Raises:
        CheckpointError: the stored checksum does not match the content (bit rot the zip container cannot see).
    """
    if "checksum" not in state:
        return state
    content = {key: value for key, value in state.items() if key != "checksum"}
    if checksum(content) != state["checksum"]:
        raise CheckpointError(f"{source}: checksum mismatch, the file is corrupt; use an intact copy")
    return content
