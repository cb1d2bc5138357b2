"""Run by test_resume.py in a subprocess: `fit` a config, killing itself with SIGKILL at a chosen moment.

    python kill_worker.py CONFIG_JSON MODE N [resume] [fake_clock]

MODE: "none" (run to the end); "step" (SIGKILL inside the N-th criterion call, i.e. mid-step after the
forward); "eval" (inside the N-th `postprocess`, i.e. mid-evaluation); "write" (after writing half of
the N-th `torch.save` of a checkpoint or best.pth, i.e. mid-checkpoint-write). `fake_clock`: every
clock reading advances 0.5 s, so a time-budget run is reproducible. Calls are counted in this process.
"""

import io
import itertools
import json
import os
import signal
import sys

import torch

from deformable_detr.models.detector import DeformableDETR
from deformable_detr.training.config import TrainConfig
from deformable_detr.training.criterion import SetCriterion
from deformable_detr.training.engine import fit


def _kill_on_call(owner, name: str, n: int, before=None) -> None:
    original, calls = getattr(owner, name), itertools.count(1)

    def wrapper(*args, **kwargs):
        if next(calls) == n:
            if before is not None:
                before(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def _write_half(obj, destination, *args, **kwargs) -> None:
    """Write half of what torch.save would write to `destination` (a path or an open binary file)."""
    buffer = io.BytesIO()
    torch.serialization.save(obj, buffer)
    half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    if isinstance(destination, (str, os.PathLike)):
        with open(destination, "wb") as f:
            f.write(half)
    else:
        destination.write(half)
        destination.flush()


def main(config_path: str, mode: str, n: str, *flags: str) -> None:
    torch.set_num_threads(1)
    config = TrainConfig.from_dict(json.loads(open(config_path).read()))
    if mode == "step":
        _kill_on_call(SetCriterion, "forward", int(n))
    elif mode == "eval":
        _kill_on_call(DeformableDETR, "postprocess", int(n))
    elif mode == "write":
        _kill_on_call(torch, "save", int(n), before=_write_half)
    ticks = itertools.count()
    clock = (lambda: next(ticks) * 0.5) if "fake_clock" in flags else None
    fit(config, resume="resume" in flags, progress=False, **({"clock": clock} if clock else {}))


if __name__ == "__main__":
    main(*sys.argv[1:])
