"""The optimizer steps of one epoch: `train_one_epoch`, read top to bottom like nanoGPT's loop.

Per optimizer step: set lr -> forward under autocast -> criterion -> backward (x grad_accum_steps
micro-batches) -> clip -> step (skipped if anything is non-finite) -> log. Data order and
augmentation are functions of (seed, epoch, image) (`dataloaders.py`) and dropout's RNG is seeded per
epoch (`seed_epoch`) and saved in every checkpoint, so a resumed epoch draws what the first run drew.
"""

from __future__ import annotations

import contextlib
import math
import random
import warnings

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..errors import DeformableDetrError
from ..util import distributed
from .criterion import SetCriterion
from .dataloaders import train_loader
from .optim import lr_factor, set_lr
from .progress_bar import advance_bar
from .run import Run
from .run_files import save_run_checkpoint


class NonFiniteLossError(DeformableDetrError, FloatingPointError):
    """Too many optimizer steps had a non-finite loss or gradient; training stopped, the last checkpoint is intact."""


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """python, numpy and torch (dropout) RNGs as a function of (seed, epoch, rank), at each epoch's start."""
    value = (seed * 1_000_003 + epoch * 1009 + rank) % (2**31)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def _targets_to(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


def compute_losses(
    model: nn.Module,
    criterion: SetCriterion,
    images: torch.Tensor,
    padding_mask: torch.Tensor,
    targets: list[dict],
    amp: bool = False,
) -> dict[str, torch.Tensor]:
    """Forward (bf16 autocast if `amp`) and the criterion's loss terms for one micro-batch.

    The criterion supplies the model's training-only input: denoising queries when it makes them (None for a
    model without denoising, DETR included; see `setup.build_criterion`).

    Args:
        model: the model in train mode (or its DDP wrapper).
        images: (B, 3, H, W) normalized, on the model's device; padding_mask: (B, H, W) bool, True = padding.
        targets: B dicts with `labels` (T_b,) int64 and `boxes` (T_b, 4) cxcywh in [0, 1].

    Returns:
        The criterion's unweighted terms (`criterion.weighted_sum` combines them).
    """
    with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=amp):
        outputs = model(images, padding_mask, denoising=criterion.denoising_queries(targets))
    return criterion(outputs, targets)


def train_one_epoch(run: Run, bar: tqdm) -> None:
    """Optimizer steps of epoch `run.state.epoch`, from its `batches_done`-th batch to its end or a stop.

    A step averages the gradients of `grad_accum_steps` micro-batches (fewer for the epoch's last
    step when the batches do not divide evenly). A step whose loss or gradient norm is not finite
    is skipped (no update, a warning); the step after `max_nonfinite_steps` such steps raises.
    Writes a checkpoint every `checkpoint_every` steps.
    """
    config, state, model = run.config, run.state, run.model
    run.train_model.train()
    batches = iter(train_loader(run.train_set, config, state.epoch, state.batches_done, run.device, run.pad_multiple))
    while state.batches_done < run.batches_per_epoch and not run.out_of_budget() and not run.interrupted:
        started = run.clock()
        lr = set_lr(
            run.optimizer, lr_factor(config.optim, state.step, state.epoch, run.schedule_progress(), run.schedule_steps)
        )
        micro_batches = min(config.grad_accum_steps, run.batches_per_epoch - state.batches_done)
        sums, finite = {}, True
        for micro in range(micro_batches):
            images, padding_mask, targets = next(batches)
            images, padding_mask, targets = (  # non_blocking: on CUDA the loader pins memory, the copies overlap
                images.to(run.device, non_blocking=True),
                padding_mask.to(run.device, non_blocking=True),
                _targets_to(targets, run.device),
            )
            last = micro == micro_batches - 1
            with contextlib.nullcontext() if last or run.train_model is model else run.train_model.no_sync():
                losses = compute_losses(run.train_model, run.criterion, images, padding_mask, targets, config.amp)
                loss = run.criterion.weighted_sum(losses)
                (loss / micro_batches).backward()
            finite = finite and math.isfinite(loss.item())
            for name, value in (*losses.items(), ("loss", loss)):
                sums[name] = sums.get(name, 0.0) + value.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_max_norm or math.inf)
        if _all_finite(finite and math.isfinite(grad_norm.item()), run.device):
            run.optimizer.step()
            state.loss_sums = {k: state.loss_sums.get(k, 0.0) + v for k, v in sums.items()}
            state.loss_count += micro_batches
        else:
            _skip_non_finite(run, sums, grad_norm.item())
        run.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.batches_done += micro_batches
        state.train_seconds += _synced(run.clock() - started)
        for callback in run.callbacks:
            callback.after_step(run)
        advance_bar(run, bar, sums, lr)
        at_end = state.batches_done >= run.batches_per_epoch or run.out_of_budget()  # end_of_epoch writes one then
        if config.checkpoint_every and state.step % config.checkpoint_every == 0 and not at_end:
            save_run_checkpoint(run)


def _skip_non_finite(run: Run, sums: dict[str, float], grad_norm: float) -> None:
    run.state.nonfinite_steps += 1
    terms = ", ".join(f"{k}={v:.4g}" for k, v in sums.items())
    message = f"step {run.state.step}: non-finite loss or gradient (grad norm {grad_norm:.4g}; terms: {terms})"
    if run.state.nonfinite_steps > run.config.max_nonfinite_steps:
        raise NonFiniteLossError(
            f"{message}; that is {run.state.nonfinite_steps} such steps (max_nonfinite_steps = "
            f"{run.config.max_nonfinite_steps}), so training stopped; the last checkpoint in "
            f"{run.output_dir} is intact: lower --lr or check the data, then --resume"
        )
    warnings.warn(
        f"{message}; step skipped ({run.state.nonfinite_steps} of at most {run.config.max_nonfinite_steps})",
        stacklevel=3,
    )


def _all_finite(finite: bool, device: torch.device) -> bool:
    """True on every process only if it is True on every process (so all skip the same steps)."""
    if not distributed.is_initialized():
        return finite
    flag = torch.tensor([0.0 if finite else 1.0], device=device)
    return float(distributed.all_reduce_sum(flag).item()) == 0.0


def _synced(seconds: float) -> float:
    """Time-budget clock agreed across processes (the max), so all ranks stop on the same step."""
    if not distributed.is_initialized():
        return seconds
    value = torch.tensor([seconds], dtype=torch.float64)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return float(value.item())
