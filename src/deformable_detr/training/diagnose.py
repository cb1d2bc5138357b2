"""What a run tells the user when the first evaluation finds nothing: AP ~0 while the loss has not fallen.

The per-split summary lines and `OUT/train_batch0.png` rule out the data problems one can see; this
lists the usual causes that they cannot.
"""

from __future__ import annotations

import logging

from .callbacks import TrainCallback

logger = logging.getLogger(__name__)

ZERO_AP = 0.01
USUAL_CAUSES = (
    "look at OUT/train_batch0.png: boxes must sit on the objects with the right names (wrong box format or label ids "
    "off by one show there)",
    "the learning rate: the paper's 2e-4 is for 16 images per step; scale it to your batch (the finetune preset "
    "uses 1e-4 for 4), and lower it if the loss jumps",
    "too few steps: DETR-family models need thousands of steps from scratch; start from a trained model with --init",
    "a backbone frozen at random weights: pass --backbone-weights or --init",
    "classes with very few boxes (see the summary line per split)",
)


class ZeroAPHint(TrainCallback):
    """After the first evaluation: if AP < 0.01 and the epoch's mean loss is above 90 % of the first
    step's, log the usual causes once (stateless across resumes: it only looks at the first evaluation)."""

    name = "zero_ap_hint"

    def __init__(self):
        self.first_loss: float | None = None
        self.checked = False

    def after_step(self, run) -> None:
        if self.first_loss is None and run.state.loss_count:
            self.first_loss = run.state.loss_sums.get("loss", 0.0) / run.state.loss_count

    def after_evaluation(self, run, record: dict) -> bool:
        if self.checked:
            return False
        self.checked = True
        if should_warn(record.get("AP", 1.0), self.first_loss, record.get("train_loss")) and run.is_main:
            logger.warning(
                "AP %.3f after the first evaluation and the loss fell by less than 10 %% (%.3g -> %.3g); usual causes: %s",
                record["AP"],
                self.first_loss,
                record["train_loss"],
                "; ".join(USUAL_CAUSES),
            )
        return False


def should_warn(ap: float, first_loss: float | None, current_loss: float | None) -> bool:
    """AP ~0 and the loss still above 90 % of where it started."""
    return 0 <= ap < ZERO_AP and first_loss is not None and current_loss is not None and current_loss > 0.9 * first_loss
