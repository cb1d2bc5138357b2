"""`Run` and `TrainState`: what one training run works with and where it is.

Light on purpose: callbacks (callbacks.py, ema.py, ...) receive a `Run` and import this module, so it
imports nothing that imports them. `setup.py` builds a `Run`; `loop.py`, `epoch_end.py`, `run_files.py`
and `resume.py` read and advance it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.coco import CocoDetection
from ..util import distributed
from . import dataloaders
from .config import TrainConfig
from .criterion import SetCriterion


@dataclass
class TrainState:
    """Where a run is; saved in every checkpoint (`TrainState(**checkpoint["state"])`).

    epoch: the current epoch (0-based); batches_done: its batches consumed so far (all of them =
    the epoch's training is over, its end-of-epoch work may still be pending). step: optimizer steps
    done (skipped ones included). train_seconds: time spent in training steps (the time budget).
    best_ap / best_step: the best evaluation so far and the step it was made at (what best.pth holds).
    evaluated_step: step of the last evaluation. nonfinite_steps: steps skipped for NaN/Inf.
    loss_sums / loss_count: running sums of this epoch's loss terms (for the epoch record).
    history: one record per evaluation or finished epoch (what metrics.jsonl holds).
    """

    epoch: int = 0
    batches_done: int = 0
    step: int = 0
    train_seconds: float = 0.0
    best_ap: float = -1.0
    best_step: int = -1
    evaluated_step: int = -1
    nonfinite_steps: int = 0
    loss_sums: dict[str, float] = field(default_factory=dict)
    loss_count: int = 0
    history: list[dict] = field(default_factory=list)


@dataclass
class Run:
    """Everything one training run works with; built by `setup`, passed explicitly to the loop's parts."""

    config: TrainConfig
    device: torch.device
    model: nn.Module  # DeformableDETR or DETR (deformable_detr.registry picks it)
    train_model: nn.Module  # `model`, or its DistributedDataParallel wrapper
    criterion: SetCriterion  # SetCriterion or DetrCriterion (setup.build_criterion picks it)
    optimizer: torch.optim.Optimizer
    train_set: CocoDetection
    val_set: CocoDetection
    state: TrainState
    output_dir: Path
    callbacks: Sequence[Any] = ()  # TrainCallback objects (callbacks.py imports this module, so not named here)
    clock: Callable[[], float] = time.perf_counter
    progress: bool = True
    interrupted: bool = False  # set by Ctrl-C (see `engine._stop_cleanly_on_ctrl_c`): stop after the current step

    @property
    def batches_per_epoch(self) -> int:
        return dataloaders.batches_per_epoch(self.train_set, self.config)

    @property
    def pad_multiple(self) -> int:
        return dataloaders.padding_multiple(self.model)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.batches_per_epoch / self.config.grad_accum_steps)

    @property
    def total_steps(self) -> int:
        """Length of a step-based schedule: max_steps, else every step of every epoch."""
        return self.config.max_steps or self.config.epochs * self.steps_per_epoch

    @property
    def budget_seconds(self) -> float | None:
        return self.config.max_minutes * 60 if self.config.max_minutes else None

    @property
    def schedule_steps(self) -> int | None:
        """The run's length in steps when the schedule runs over steps (None with a time budget)."""
        return None if self.budget_seconds else self.total_steps

    def schedule_progress(self) -> float:
        """Fraction of training done, for cosine/linear schedules: of the time budget if any, else of the steps."""
        if self.budget_seconds:
            return self.state.train_seconds / self.budget_seconds
        return self.state.step / max(self.total_steps, 1)

    def out_of_budget(self) -> bool:
        """max_steps reached or the time budget spent (checked before each step, so a spent budget does no step)."""
        if self.config.max_steps is not None and self.state.step >= self.config.max_steps:
            return True
        return self.budget_seconds is not None and self.state.train_seconds >= self.budget_seconds

    @property
    def is_main(self) -> bool:
        return distributed.is_main_process()

    def model_to_evaluate(self) -> nn.Module:
        """The weights evaluated and saved as best.pth: the first callback's choice (e.g. EMA), else `model`."""
        return next((m for c in self.callbacks if (m := c.model_to_evaluate(self)) is not None), self.model)
