"""`end_of_epoch`: the work after an epoch's training (or a stop inside it) — evaluate when due, then the
run files (best.pth, metrics.jsonl, checkpoint.pth, kept epoch checkpoints, curves.png)."""

from __future__ import annotations

import logging
import random

import numpy as np
import torch

from ..evaluation.evaluate import evaluate
from ..util import distributed
from .dataloaders import eval_loader
from .retention import keep_epoch_checkpoint
from .run import Run
from .run_files import append_metrics, draw_curves, save_best, save_run_checkpoint

logger = logging.getLogger(__name__)
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def end_of_epoch(run: Run) -> bool:
    """After an epoch's training (or a stop inside it): evaluate if due, update best.pth, metrics.jsonl,
    checkpoint.pth and curves.png; a finished epoch moves the position to the next one.

    Order (each file written atomically): checkpoint at the epoch end (so a kill during the
    evaluation does not redo the epoch) -> evaluate -> best.pth -> metrics.jsonl -> checkpoint.
    Returns True when a callback asks to stop training.
    """
    config, state = run.config, run.state
    epoch_done = state.batches_done >= run.batches_per_epoch
    final = run.out_of_budget() or (epoch_done and state.epoch == config.epochs - 1)
    due = final or (epoch_done and config.eval_every and (state.epoch + 1) % config.eval_every == 0)
    stop = False
    record = None
    if due and state.evaluated_step != state.step:
        save_run_checkpoint(run)
        metrics = _evaluate(run)
        record = {**_epoch_record(run, partial=not epoch_done), **metrics}
        state.evaluated_step = state.step
        if run.is_main and metrics.get("AP", -1.0) > state.best_ap:
            state.best_ap, state.best_step = metrics["AP"], state.step
            save_best(run)
        stop = any(callback.after_evaluation(run, record) for callback in run.callbacks)
    elif epoch_done:
        record = _epoch_record(run, partial=False)
    if record is not None:
        state.history.append(record)
        if run.is_main:
            append_metrics(run.output_dir, record)
        _log_record(run, record)
    if epoch_done:
        state.epoch, state.batches_done, state.loss_sums, state.loss_count = state.epoch + 1, 0, {}, 0
    save_run_checkpoint(run)
    if run.is_main and epoch_done:
        keep_epoch_checkpoint(run.output_dir, state.epoch, config.keep)
    if run.is_main and record is not None:
        draw_curves(run)
    return stop


def _evaluate(run: Run) -> dict[str, float]:
    """COCO AP on rank 0 (others wait), broadcast; leaves every RNG as it found it."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    metrics = {}
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        if run.is_main:
            metrics = evaluate(
                run.model_to_evaluate(),
                eval_loader(run.val_set, run.config, run.device),
                run.val_set.coco,
                run.val_set.label_to_category_id,
                run.device,
                run.config.amp,
                run.progress,
            )
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    metrics = distributed.all_gather_objects(metrics)[0]
    run.train_model.train()
    return {k: float(v) for k, v in metrics.items()}


def _epoch_record(run: Run, partial: bool) -> dict:
    """The epoch's line of metrics.jsonl: position, lr of the "rest" group, mean loss terms over all processes."""
    state = run.state
    means = distributed.all_reduce_mean(
        {k: v / max(state.loss_count, 1) for k, v in state.loss_sums.items()}, run.device
    )
    lr = next(
        (g["lr"] for g in run.optimizer.param_groups if g.get("name") == "rest"), run.optimizer.param_groups[0]["lr"]
    )
    record = {"epoch": state.epoch, "step": state.step, "lr": lr, "train_seconds": round(state.train_seconds, 2)}
    if partial:
        record["partial"] = True
    record.update({f"train_{k}": v for k, v in means.items()})
    return record


def _log_record(run: Run, record: dict) -> None:
    if run.progress and run.is_main:
        shown = (
            "lr",
            "train_loss",
            "train_loss_ce",
            "train_loss_bbox",
            "train_loss_giou",
            "train_class_error",
            "train_class_error_objects",  # DETR only
        ) + AP_KEYS
        logger.info(
            "epoch %d%s (step %d, %.0f s): %s",
            record["epoch"],
            " (stopped inside)" if record.get("partial") else "",
            record["step"],
            record["train_seconds"],
            ", ".join(f"{k.removeprefix('train_')}={record[k]:.4g}" for k in shown if k in record),
        )
