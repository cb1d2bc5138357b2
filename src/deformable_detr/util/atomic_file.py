"""Write an output file whole or not at all: a temporary file in the same folder, then a rename.

    write_atomic(out / "detections.json", lambda path: path.write_text(text))
    write_atomic(out / "drawing.png", lambda path: image.save(path, format="PNG"))

Readers (and a user who interrupts the run) only ever see the old file or the complete new one.
Training checkpoints, which are also fsynced and keep a previous copy, use `training.checkpoint.atomic_write`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(temporary path)` in `path`'s folder, then rename the result to `path` (mode 0644).

    On any error (or an interrupt) the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
