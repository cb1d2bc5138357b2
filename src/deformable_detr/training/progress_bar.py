"""The one tqdm bar of a training run (rank 0, `progress=True`), with its ETA: over optimizer steps, or over
the seconds of the time budget when the run has `max_minutes` and no `max_steps`."""

from __future__ import annotations

from tqdm import tqdm

from .run import Run


def _counts_seconds(run: Run) -> bool:
    return bool(run.budget_seconds) and not run.config.max_steps


def open_bar(run: Run) -> tqdm:
    """One bar for the whole run, starting where the run is (a resumed run's bar starts part-way)."""
    disable = not (run.progress and run.is_main)
    if _counts_seconds(run):
        return tqdm(
            total=round(run.budget_seconds),
            initial=round(run.state.train_seconds),
            unit="s",
            desc="train",
            disable=disable,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} s budget [{elapsed}<{remaining}{postfix}]",
        )
    return tqdm(total=run.total_steps, initial=run.state.step, unit="step", desc="train", disable=disable)


def advance_bar(run: Run, bar: tqdm, sums: dict[str, float], lr: float) -> None:
    """After a step: move the bar on; every `log_every` steps show the epoch, the step's loss and the lr."""
    if _counts_seconds(run):
        # the last step ends past the budget: the bar stops at its total (tqdm drops a total that n overshoots)
        bar.update(min(round(run.state.train_seconds), bar.total) - bar.n)
    else:
        bar.update(1)
    if run.state.step % run.config.log_every == 0:
        bar.set_postfix(epoch=run.state.epoch, loss=f"{sums.get('loss', float('nan')):.3f}", lr=f"{lr:.2e}")
