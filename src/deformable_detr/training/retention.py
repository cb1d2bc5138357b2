"""Which checkpoints a run keeps (`--keep N`) and when it stops early (`--patience K`).

Keep: after each epoch's `checkpoint.pth` is written, it is also linked as
`checkpoint_epoch{E}.pth` (a hard link: `checkpoint.pth` is replaced by rename, so the link keeps the
epoch's file without a copy), and epoch files beyond the newest N are deleted. `checkpoint.pth` and
`best.pth` are never deleted.

Patience: training stops once K evaluations in a row have not improved the best AP.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..checkpoint.files import link_atomic
from .callbacks import TrainCallback

logger = logging.getLogger(__name__)
_EPOCH_FILE = re.compile(r"^checkpoint_epoch(\d+)\.pth$")


def keep_epoch_checkpoint(
    output_dir: str | Path, epoch: int, keep: int, checkpoint: str = "checkpoint.pth"
) -> list[Path]:
    """Link `checkpoint` as `checkpoint_epoch{epoch}.pth` and delete epoch files beyond the newest `keep`.

    Args:
        epoch: the number of completed epochs the checkpoint holds.
        keep: epoch files to keep (0 = none are made).

    Returns:
        The epoch files deleted.
    """
    output_dir = Path(output_dir)
    if keep <= 0:
        return []
    target = output_dir / f"checkpoint_epoch{epoch}.pth"
    link_atomic(output_dir / checkpoint, target)  # a hard link: no second copy on disk
    epochs = sorted(int(m[1]) for p in output_dir.iterdir() if (m := _EPOCH_FILE.match(p.name)))
    deleted = []
    for old in epochs[:-keep]:
        path = output_dir / f"checkpoint_epoch{old}.pth"
        path.unlink()
        deleted.append(path)
    return deleted


def evaluations_since_best(history: list[dict]) -> int:
    """How many evaluations (records with "AP") in a row, at the end of `history`, did not beat the best before them."""
    best, since = float("-inf"), 0
    for record in history:
        if "AP" not in record:
            continue
        if record["AP"] > best:
            best, since = record["AP"], 0
        else:
            since += 1
    return since


def should_stop_early(history: list[dict], patience: int) -> bool:
    """True when `patience` > 0 evaluations in a row have not improved the best AP."""
    return patience > 0 and evaluations_since_best(history) >= patience


class EarlyStopping(TrainCallback):
    """Ends training once `patience` evaluations in a row have not improved the best AP (stateless:
    it reads the run's history, which checkpoints keep)."""

    name = "early_stopping"

    def __init__(self, patience: int):
        self.patience = patience

    def after_evaluation(self, run, record: dict) -> bool:
        stop = should_stop_early(run.state.history + [record], self.patience)
        if stop:
            logger.info("stopping: no better AP in the last %d evaluations (--patience)", self.patience)
        return stop
