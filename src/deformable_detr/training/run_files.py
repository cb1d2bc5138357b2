"""The files a run writes into its output folder besides the data it reads: config.json, checkpoint.pth,
best.pth, metrics.jsonl and curves.png. Only rank 0 writes; every write is atomic (checkpoint.py).

    config.json     the run's TrainConfig (rewritten on resume: extended limits are the run's from then on)
    checkpoint.pth  model, optimizer, position (`TrainState`), every rank's RNG states, callback states
    best.pth        the weights of the best evaluation so far (EMA weights with --ema), its AP and step
    metrics.jsonl   one JSON line per evaluation or finished epoch (`TrainState.history`)
    curves.png      loss and AP curves drawn from that history
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

from ..checkpoint.files import atomic_write_text
from ..errors import DeformableDetrError
from ..util import distributed
from ..viz.curves import plot_curves
from .checkpoint import BEST, CHECKPOINT, load_checkpoint, rng_state, save_checkpoint
from .config import TrainConfig
from .run import Run


def write_config(output_dir: Path, config: TrainConfig) -> None:
    """OUT/config.json."""
    atomic_write_text(output_dir / "config.json", json.dumps(config.to_dict(), indent=2))


def save_run_checkpoint(run: Run) -> None:
    """checkpoint.pth (rank 0 writes; every rank's RNG state is gathered into it)."""
    rngs = distributed.all_gather_objects(rng_state())
    if not run.is_main:
        return
    save_checkpoint(
        run.output_dir / CHECKPOINT,
        {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "state": dataclasses.asdict(run.state),
            "rng": rngs,
            "config": run.config.to_dict(),
            "categories": run.train_set.categories,
            "callbacks": {c.name: c.state_dict() for c in run.callbacks},
        },
    )


def save_best(run: Run) -> None:
    """best.pth: the evaluated weights (`Run.model_to_evaluate`) with the AP, step and epoch they reached."""
    save_checkpoint(
        run.output_dir / BEST,
        {
            "model": run.model_to_evaluate().state_dict(),
            "config": run.config.to_dict(),
            "categories": run.train_set.categories,
            "AP": run.state.best_ap,
            "step": run.state.step,
            "epoch": run.state.epoch + 1,
        },
        keep_previous=False,
    )


def check_best(run: Run) -> None:
    """On resume: best.pth must hold the evaluation the checkpoint records as best (or a later one, redone on
    the way); if not, warn and forget the recorded best so the next better evaluation rewrites it."""
    best = run.output_dir / BEST
    if run.state.best_step < 0 or not run.is_main:
        return
    try:
        best_step = load_checkpoint(best).get("step", -1) if best.is_file() else None
    except DeformableDetrError as error:
        best_step = None
        warnings.warn(f"{error}; it will be rewritten at the next better evaluation", stacklevel=3)
    if best_step is None or best_step < run.state.best_step:
        warnings.warn(
            f"{best}: missing or older than the best evaluation the checkpoint records (step {run.state.best_step}); "
            "it will be rewritten at the next better evaluation",
            stacklevel=3,
        )
        run.state.best_ap, run.state.best_step = -1.0, -1


def append_metrics(output_dir: Path, record: dict) -> None:
    """One line appended to OUT/metrics.jsonl, flushed to disk."""
    with open(output_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def rewrite_metrics(output_dir: Path, history: list[dict]) -> None:
    """OUT/metrics.jsonl replaced by `history` (on resume: the checkpoint's history is the truth)."""
    atomic_write_text(output_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def draw_curves(run: Run) -> None:
    """OUT/curves.png from the run's history."""
    plot_curves(run.state.history, run.output_dir / "curves.png")
