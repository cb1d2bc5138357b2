"""`--resume`: put a freshly built `Run` back where its newest good checkpoint left it.

Restores model, optimizer, position (`TrainState`), this process's RNG states and each callback's
state, then makes the run files agree with the checkpoint (metrics.jsonl rewritten from its history,
best.pth checked). Two checkpoint formats are read:

    current  `state` (the whole `TrainState`, mid-epoch positions included) and `rng` (one entry per rank)
    legacy   written only at an epoch's end, before `TrainState` existed: `epoch`, `step`, `elapsed_s`,
             `best_ap`, one `rng` entry; the history comes from metrics.jsonl's lines before that epoch
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..checkpoint.state_dict import load_state_dict_strict
from ..util import distributed
from .checkpoint import CHECKPOINT, PREVIOUS, load_latest_checkpoint, set_rng_state
from .run import Run, TrainState
from .run_files import check_best, rewrite_metrics

logger = logging.getLogger(__name__)


def restore(run: Run) -> None:
    """Load model, optimizer, position, RNG states and callback states from the run's newest good checkpoint.

    A run stopped before its first checkpoint (config.json only) starts from the beginning.
    """
    if (
        not any((run.output_dir / name).exists() for name in (CHECKPOINT, PREVIOUS))
        and (run.output_dir / "config.json").is_file()
    ):
        logger.warning(
            "%s: no checkpoint yet (stopped before the first one); starting from the beginning", run.output_dir
        )
        if run.is_main:
            rewrite_metrics(run.output_dir, [])
        return
    saved, path = load_latest_checkpoint(run.output_dir, map_location=run.device)
    load_state_dict_strict(run.model, saved["model"], str(path))
    run.optimizer.load_state_dict(saved["optimizer"])
    if "state" in saved:
        run.state = TrainState(**saved["state"])
        rngs = saved["rng"]
        set_rng_state(rngs[distributed.rank()] if distributed.rank() < len(rngs) else rngs[0])
    else:
        run.state = _legacy_state(saved, run.output_dir)
        set_rng_state(saved["rng"])
    for callback in run.callbacks:
        callback.load_state_dict(saved.get("callbacks", {}).get(callback.name, {}))
    if run.is_main:  # the checkpoint is the truth: later lines were written after it, by the killed run
        rewrite_metrics(run.output_dir, run.state.history)
    check_best(run)
    logger.info(
        "resumed %s at epoch %d, batch %d, step %d (%.0f s trained)",
        path,
        run.state.epoch,
        run.state.batches_done,
        run.state.step,
        run.state.train_seconds,
    )


def _legacy_state(saved: dict, output_dir: Path) -> TrainState:
    """The position of a checkpoint of the epoch-level format (always written at an epoch's end)."""
    return TrainState(
        epoch=saved["epoch"],
        step=saved["step"],
        train_seconds=saved["elapsed_s"],
        best_ap=saved["best_ap"],
        history=_history_before(output_dir / "metrics.jsonl", saved["epoch"]),
    )


def _history_before(path: Path, epochs_done: int) -> list[dict]:
    """metrics.jsonl's records of the first `epochs_done` epochs (later ones were written after the checkpoint)."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("epoch", 0) < epochs_done]
