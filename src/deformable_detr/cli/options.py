"""The flags of every command that runs the model, added by one function so names, defaults and help agree.

The convention (README, Command line):
- `--checkpoint CKPT`: the weights to run, any format `deformable_detr.load` reads (training starts from
  weights with `--init CKPT` and continues a run with `--resume OUT`).
- `--out DIR`: always a folder; a command writes fixed names inside it and replaces none of them without
  `--overwrite`.
- `--device`, `--threads`, `--batch-size`, `--amp`: the same four on predict, explain, eval, export, serve,
  train, demo and the bench targets that run the model, with the help below. Commands that run a preset
  (train, demo) default to the preset's (or the resumed run's) values: their flags override it.
- `--threshold` (default 0.5, scores >= it are kept) and `--top-k` on the commands that pick detections.
"""

from __future__ import annotations

import argparse

DEFAULT_BATCH_SIZE = 8  # as inference.predict_files and evaluation.evaluate
# As pipeline.run.DEFAULT_THRESHOLD and DEFAULT_TOP_K (not imported: `--help` stays fast; a test checks them).
DEFAULT_THRESHOLD = 0.5
DEFAULT_TOP_K = 100
THRESHOLD_HELP = f"keep detections scoring >= this, 0..1 (default {DEFAULT_THRESHOLD})"
TOP_K_HELP = f"at most K detections per image, the best (default {DEFAULT_TOP_K})"

DEVICE_HELP = "cpu, cuda or cuda:N (default cpu)"
THREADS_HELP = "torch CPU threads (default: torch's, one per core; 1 while other jobs load the CPU)"
BATCH_SIZE_HELP = f"most images per forward pass (default {DEFAULT_BATCH_SIZE})"
AMP_HELP = "bfloat16 autocast for the forward pass (default off)"

# The same flags on a command that runs a preset: unset, the preset's (or the resumed run's) value stays.
PRESET_DEVICE_HELP = "cpu, cuda or cuda:N (default: the preset's or run's, cpu in every preset)"
PRESET_THREADS_HELP = "torch CPU threads (default: the preset's or run's; 1 while other jobs load the CPU)"
PRESET_BATCH_SIZE_HELP = "images per optimizer micro-step and process (default: the preset's or run's)"
PRESET_AMP_HELP = "bfloat16 autocast, --no-amp off (default: the preset's or run's)"


def _int_at_least(text: str, minimum: int) -> int:
    """`text` as an integer >= `minimum`, else argparse's one-line ArgumentTypeError."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} must be >= {minimum}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (rejects inf and nan)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number > 0")
    return value


def add_detection_options(parser: argparse.ArgumentParser, *, top_k: int = DEFAULT_TOP_K, top_k_help: str = TOP_K_HELP):
    """Add --threshold (the one default, 0.5) and --top-k (`top_k` default; explain draws fewer)."""
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help=THRESHOLD_HELP)
    parser.add_argument("--top-k", type=positive_int, default=top_k, metavar="K", help=top_k_help)


def add_run_options(parser: argparse.ArgumentParser, *, batch_size: bool = True, amp: bool = True) -> None:
    """Add --device, --threads and (unless the command has no batch or no autocast) --batch-size and --amp.

    `batch_size=False`: the command runs one image (explain). `amp=False`: the command runs no autocast
    forward (export traces float32).
    """
    parser.add_argument("--device", default="cpu", help=DEVICE_HELP)
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N", help=THREADS_HELP)
    if batch_size:
        parser.add_argument(
            "--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, metavar="N", help=BATCH_SIZE_HELP
        )
    if amp:
        parser.add_argument("--amp", action="store_true", help=AMP_HELP)


def add_preset_run_options(parser: argparse.ArgumentParser) -> None:
    """The four flags on a command that runs a preset (train, demo): each None unless given, overriding it."""
    parser.add_argument("--device", default=None, help=PRESET_DEVICE_HELP)
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N", help=PRESET_THREADS_HELP)
    parser.add_argument("--batch-size", type=positive_int, default=None, metavar="N", help=PRESET_BATCH_SIZE_HELP)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help=PRESET_AMP_HELP)


def apply_threads(threads: int | None) -> None:
    """Use `threads` torch CPU threads in this process and in the processes it starts (None: leave torch's)."""
    if threads is None:
        return
    import os

    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # server workers and DataLoader workers start with it


def check_out_folder(out_dir) -> None:
    """A one-line ConfigError if --out is a file, or cannot be a folder because a path above it is a file
    (`--out notes.txt/run`); creates nothing. The commands call it before loading a model."""
    from pathlib import Path

    from ..errors import ConfigError

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a folder; choose a folder path")
    existing = next((path for path in out_dir.parents if path.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(
            f"--out {out_dir}: cannot create it: {existing} is a file, not a folder; choose another --out"
        )


def output_file(out_dir, name: str, overwrite: bool):
    """OUT/name, the file a command writes in its --out folder; a one-line ConfigError if --out is a file or
    names a file (`--out metrics.json`), or if OUT/name exists and `overwrite` is off. Creates nothing."""
    from pathlib import Path

    from ..errors import ConfigError

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: is a file; --out is a folder (this command writes OUT/{name})")
    check_out_folder(out_dir)
    if not out_dir.exists() and out_dir.suffix == Path(name).suffix:
        raise ConfigError(
            f"--out {out_dir}: --out is a folder, this command writes OUT/{name}; give a folder, e.g. --out {out_dir.parent / out_dir.stem}"
        )
    path = out_dir / name
    if path.exists() and not overwrite:
        raise ConfigError(f"--out {out_dir}: {path} exists; choose another folder or pass --overwrite")
    return path
