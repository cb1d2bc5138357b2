"""`fit`: one training run from start (or resume) to result, in the order a newcomer reads the parts:

    setup.py      build the `Run` (data, model, criterion, optimizer, DDP; with --resume, resume.py)
    loop.py       per epoch: the optimizer steps (set lr -> forward -> criterion -> backward -> clip -> step)
    epoch_end.py  after it: evaluate when due, then the run files (run_files.py)

Data order and augmentation are functions of (seed, epoch, image) (`dataloaders.py`), dropout's RNG state
is saved in every checkpoint together with the position inside the epoch, so `fit(config, resume=True)`
continues bit for bit from any checkpoint, including ones written mid-epoch.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..util import distributed
from .callbacks import TrainCallback
from .checkpoint import CHECKPOINT
from .config import TrainConfig
from .epoch_end import end_of_epoch
from .loop import seed_epoch, train_one_epoch
from .progress_bar import open_bar
from .run import Run
from .run_files import save_run_checkpoint
from .setup import setup

logger = logging.getLogger(__name__)
_METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class TrainResult:
    """What `fit` returns: final metrics, where the files are, and how far training went."""

    output_dir: Path
    metrics: dict[str, float]
    best_ap: float
    epochs: int
    steps: int
    train_seconds: float
    history: list[dict] = field(default_factory=list)
    nonfinite_steps: int = 0

    @property
    def checkpoint(self) -> Path:
        return self.output_dir / CHECKPOINT


def fit(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    *,
    overwrite: bool = False,
    callbacks: Sequence[TrainCallback] = (),
    clock: Callable[[], float] = time.perf_counter,
) -> TrainResult:
    """Train `config.model` on `config.data_dir`; writes checkpoints, metrics.jsonl, curves.png to `output_dir`.

    Under torchrun every process calls `fit`; only rank 0 writes files. With `resume`, continues
    from the newest good checkpoint in `output_dir` exactly where it stopped (mid-epoch included);
    raising `epochs`, `max_steps` or `max_minutes` there extends a finished run. Without `resume`, a
    folder that already holds a run is refused unless `overwrite` (which deletes that run's files).

    Args:
        callbacks: explicit collaborators (EMA, early stopping, ...); see `TrainCallback`.
        clock: seconds counter for the time budget (a fake clock makes budget runs reproducible).

    Returns:
        TrainResult with the last evaluation's metrics.

    Raises:
        NonFiniteLossError: more than `max_nonfinite_steps` steps with a non-finite loss or gradient.
        ConfigError: the folder holds a run (neither resume nor overwrite), or a bad device.
    """
    run = setup(config, resume=resume, overwrite=overwrite, callbacks=callbacks, clock=clock, progress=progress)
    state = run.state
    with open_bar(run) as bar, _stop_cleanly_on_ctrl_c(run):
        while state.epoch < run.config.epochs:
            if state.batches_done == 0 and not run.out_of_budget():
                seed_epoch(run.config.seed, state.epoch, distributed.rank())
            train_one_epoch(run, bar)
            if run.interrupted:
                save_run_checkpoint(run)  # at a step boundary: `--resume` continues bit for bit from here
                logger.warning("interrupted: checkpoint written at step %d; continue with --resume", state.step)
                raise KeyboardInterrupt
            if state.batches_done < run.batches_per_epoch and state.evaluated_step == state.step:
                break  # stopped inside an epoch and already evaluated there (e.g. a finished run resumed unchanged)
            if end_of_epoch(run) or run.out_of_budget():
                break
    distributed.barrier()
    evaluated = [r for r in state.history if "AP" in r]
    metrics = {k: v for k, v in evaluated[-1].items() if k in _METRIC_KEYS} if evaluated else {}
    epochs = state.epoch + (1 if state.batches_done else 0)
    return TrainResult(
        run.output_dir,
        metrics,
        state.best_ap,
        epochs,
        state.step,
        state.train_seconds,
        list(state.history),
        state.nonfinite_steps,
    )


@contextlib.contextmanager
def _stop_cleanly_on_ctrl_c(run: Run):
    """While training, a first Ctrl-C (SIGINT) asks the loop to stop after the step in progress and write a
    checkpoint there; a second one interrupts at once. Single process, main thread only: under torchrun
    the processes could stop at different steps, so there Ctrl-C interrupts at once as before."""
    if distributed.world_size() > 1 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        if run.interrupted:
            raise KeyboardInterrupt
        run.interrupted = True
        print(
            "\nstopping after this step and writing a checkpoint (Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
