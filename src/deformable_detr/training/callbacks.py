"""`TrainCallback`: the explicit collaborators of a training run (EMA weights, early stopping, ...).

`fit(config, callbacks=[...])` calls each callback at fixed points of the loop; a callback
overrides only what it needs. Its `state_dict()` is saved in every checkpoint under its `name` and
given back to `load_state_dict` on resume, so a callback with state resumes exactly too.

    setup(run)                    model, optimizer and (on resume) the checkpoint are loaded
    after_step(run)               after each optimizer step (skipped steps included; see run.state)
    model_to_evaluate(run)        the module evaluated and saved as best.pth (default run.model)
    after_evaluation(run, record) after each evaluation; return True to stop training
"""

from __future__ import annotations

from torch import nn

from .run import Run


class TrainCallback:
    """Base class: every hook is a no-op; `name` keys the callback's state in checkpoints."""

    name = "callback"

    def setup(self, run: Run) -> None:
        """Called once, after the model and optimizer exist and a resumed checkpoint is loaded."""

    def after_step(self, run: Run) -> None:
        """Called after every optimizer step (run.state.step already counts it)."""

    def model_to_evaluate(self, run: Run) -> nn.Module | None:
        """The weights to evaluate and save as best.pth instead of `run.model` (None = no opinion)."""
        return None

    def after_evaluation(self, run: Run, record: dict) -> bool:
        """Called with each evaluation's metrics record; return True to end training after it."""
        return False

    def state_dict(self) -> dict:
        """State to save in checkpoints (tensors and plain types only)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
