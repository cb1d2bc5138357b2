"""The training loop, in three parts read top to bottom: `setup` (build or resume), `train_one_epoch`
(the optimizer steps) and `end_of_epoch` (evaluate, files, best checkpoint); `fit` strings them together.

Per optimizer step: set lr -> forward under autocast -> criterion -> backward (x grad_accum_steps
micro-batches) -> clip -> step (skipped if anything is non-finite) -> log. Data order and
augmentation are functions of (seed, epoch, image) (`dataloaders.py`), dropout's RNG state is saved in
every checkpoint together with the position inside the epoch, so `fit(config, resume=True)`
continues bit for bit from any checkpoint, including ones written mid-epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..data.coco import CocoDetection, DatasetError
from ..errors import ConfigError, DeformableDetrError
from ..evaluation.evaluate import evaluate
from ..models.build import build_model
from ..models.detector import DeformableDETR
from ..models.state_dict import load_state_dict_strict
from ..util import distributed
from . import checkpoint as ckpt
from . import dataloaders, warm_start
from .callbacks import TrainCallback
from .config import TrainConfig
from .criterion import SetCriterion
from .datasets import build_datasets
from .detr_criterion import build_criterion
from .diagnose import ZeroAPHint
from .ema import EMACallback
from .optim import build_optimizer, lr_factor, set_lr, shortened_warmup
from .retention import EarlyStopping, keep_epoch_checkpoint

logger = logging.getLogger(__name__)
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class NonFiniteLossError(DeformableDetrError, FloatingPointError):
    """Too many optimizer steps had a non-finite loss or gradient; training stopped, the last checkpoint is intact."""


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
    model: DeformableDETR
    train_model: nn.Module  # `model`, or its DistributedDataParallel wrapper
    criterion: SetCriterion
    optimizer: torch.optim.Optimizer
    train_set: CocoDetection
    val_set: CocoDetection
    state: TrainState
    output_dir: Path
    callbacks: Sequence[TrainCallback] = ()
    clock: Callable[[], float] = time.perf_counter
    progress: bool = True
    interrupted: bool = False  # set by Ctrl-C (see `_stop_cleanly_on_ctrl_c`): stop after the current step

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

    def finished(self) -> bool:
        return self.out_of_budget() or self.state.epoch >= self.config.epochs

    @property
    def is_main(self) -> bool:
        return distributed.is_main_process()


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
        return self.output_dir / ckpt.CHECKPOINT


# ---------------------------------------------------------------------------------------------- setup


def resolve_device(name: str) -> torch.device:
    """`name` as a torch.device, refusing CUDA where there is none."""
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name}: CUDA is not available here (torch {torch.__version__}, "
                f"built for CUDA: {torch.version.cuda is not None}); use --device cpu"
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s); use cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    return torch.device(name)


def setup(
    config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[TrainCallback] = (),
    clock: Callable[[], float] = time.perf_counter,
    progress: bool = True,
) -> Run:
    """Build data, model, criterion and optimizer; with `resume`, load the run's newest good checkpoint.

    Refuses to start over a folder that holds a run unless `resume` or `overwrite`; removes temp
    files left by a killed write. `model.num_classes` is set from the training annotations.
    """
    resolve_device(config.device)
    device = distributed.init_from_environment(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.output_dir)
    if distributed.is_main_process():
        ckpt.prepare_output_dir(out, resume, overwrite)
        for leftover in ckpt.remove_temp_files(out):
            logger.info("removed %s (left by an interrupted write)", leftover)
    train_set, val_set = build_datasets(config)
    if config.model.num_classes != train_set.num_classes:
        logger.info("%d classes (from %s)", train_set.num_classes, train_set.annotations_file)
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, num_classes=train_set.num_classes))
    if dataloaders.batches_per_epoch(train_set, config) == 0:
        raise DatasetError(
            f"{train_set.annotations_file}: {len(train_set)} images < batch_size {config.batch_size} x "
            f"{distributed.world_size()} processes; lower --batch-size"
        )

    init_source = warm_start.read_init_source(config.init) if config.init and not resume else None  # read once
    if init_source is not None:
        config = warm_start.init_model_config(config, train_set.num_classes, init_source)

    torch.manual_seed(config.seed)
    model = build_model(config.model)  # DeformableDETR or DETR; the criterion below fits it
    if not resume:
        for line in warm_start.prepare_model(model, config, train_set.categories, init_source):
            logger.info("%s", line)
    model = model.to(device)
    callbacks = (
        tuple(callbacks)
        + ((EMACallback(config.ema_decay, config.ema_warmup_steps),) if config.ema_decay else ())
        + ((EarlyStopping(config.patience),) if config.patience else ())
        + (ZeroAPHint(),)
    )
    criterion = build_criterion(config.model, config.model.num_classes, config.loss)
    optimizer = build_optimizer(model, config.optim)
    train_model = DistributedDataParallel(model) if distributed.is_initialized() else model
    run = Run(
        config,
        device,
        model,
        train_model,
        criterion,
        optimizer,
        train_set,
        val_set,
        TrainState(),
        out,
        tuple(callbacks),
        clock,
        progress,
    )
    short_warmup = shortened_warmup(config.optim, run.schedule_steps) if run.schedule_steps else None
    if short_warmup and run.is_main:
        logger.info("%s", short_warmup)
    if resume:
        _restore(run)
        if run.is_main:  # an extension's limits (or other overrides) are the run's from now on: a plain
            ckpt.atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2))  # --resume keeps them
        if run.out_of_budget():
            logger.warning(
                "%s: already at max_steps=%s / max_minutes=%s: nothing left to train; pass a larger --max-steps "
                "or --max-minutes to extend it",
                out,
                config.max_steps,
                config.max_minutes,
            )
    elif distributed.is_main_process():
        ckpt.atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2))
        _draw_first_batch(run)
    for callback in run.callbacks:
        callback.setup(run)
    return run


def _draw_first_batch(run: Run) -> None:
    """OUT/train_batch0.png: the first batch as the model will see it (augmentation is seeded per image, so
    drawing it changes nothing in training)."""
    from ..viz.training_batch import draw_training_batch

    images, padding_mask, targets = next(
        iter(dataloaders.train_loader(run.train_set, run.config, epoch=0, pad_multiple=run.pad_multiple))
    )
    names = [c.get("name", str(c["id"])) for c in run.train_set.categories]
    logger.info(
        "first training batch drawn: %s",
        draw_training_batch(images, padding_mask, targets, names, run.output_dir / "train_batch0.png"),
    )


def _restore(run: Run) -> None:
    """Load model, optimizer, position, RNG states and callback states from the run's newest good checkpoint.

    A run stopped before its first checkpoint (config.json only) starts from the beginning.
    """
    if (
        not any((run.output_dir / name).exists() for name in (ckpt.CHECKPOINT, ckpt.PREVIOUS))
        and (run.output_dir / "config.json").is_file()
    ):
        logger.warning(
            "%s: no checkpoint yet (stopped before the first one); starting from the beginning", run.output_dir
        )
        if run.is_main:
            ckpt.atomic_write_text(run.output_dir / "metrics.jsonl", "")
        return
    saved, path = ckpt.load_latest_checkpoint(run.output_dir, map_location=run.device)
    load_state_dict_strict(run.model, saved["model"], str(path))
    run.optimizer.load_state_dict(saved["optimizer"])
    if "state" in saved:
        run.state = TrainState(**saved["state"])
        rngs = saved["rng"]
        ckpt.set_rng_state(rngs[distributed.rank()] if distributed.rank() < len(rngs) else rngs[0])
    else:  # a checkpoint of the epoch-level format: always written at an epoch's end
        run.state = TrainState(
            epoch=saved["epoch"],
            step=saved["step"],
            train_seconds=saved["elapsed_s"],
            best_ap=saved["best_ap"],
            history=_history_file(run.output_dir / "metrics.jsonl", saved["epoch"]),
        )
        ckpt.set_rng_state(saved["rng"])
    for callback in run.callbacks:
        callback.load_state_dict(saved.get("callbacks", {}).get(callback.name, {}))
    if run.is_main:  # the checkpoint is the truth: later lines were written after it, by the killed run
        ckpt.atomic_write_text(
            run.output_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in run.state.history)
        )
    _check_best(run)
    logger.info(
        "resumed %s at epoch %d, batch %d, step %d (%.0f s trained)",
        path,
        run.state.epoch,
        run.state.batches_done,
        run.state.step,
        run.state.train_seconds,
    )


def _check_best(run: Run) -> None:
    """best.pth must hold the evaluation the checkpoint records as best (or a later one, redone on the way)."""
    best = run.output_dir / ckpt.BEST
    if run.state.best_step < 0 or not run.is_main:
        return
    try:
        best_step = ckpt.load_checkpoint(best).get("step", -1) if best.is_file() else None
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


def _history_file(path: Path, epochs_done: int) -> list[dict]:
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("epoch", 0) < epochs_done]


# --------------------------------------------------------------------------------------- one epoch


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """python, numpy and torch (dropout) RNGs as a function of (seed, epoch, rank), at each epoch's start."""
    value = (seed * 1_000_003 + epoch * 1009 + rank) % (2**31)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def _targets_to(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


def compute_losses(
    run: Run, images: torch.Tensor, padding_mask: torch.Tensor, targets: list[dict]
) -> dict[str, torch.Tensor]:
    """Forward (bf16 autocast if `amp`) and the criterion's loss terms for one micro-batch."""
    with torch.autocast(device_type=run.device.type, dtype=torch.bfloat16, enabled=run.config.amp):
        denoising = (
            run.criterion.denoising_queries(targets) if getattr(run.config.model, "denoising", False) else None
        )  # DETR: none
        outputs = run.train_model(images, padding_mask, denoising=denoising)
    return run.criterion(outputs, targets)


def train_one_epoch(run: Run, bar: tqdm) -> None:
    """Optimizer steps of epoch `run.state.epoch`, from its `batches_done`-th batch to its end or a stop.

    A step averages the gradients of `grad_accum_steps` micro-batches (fewer for the epoch's last
    step when the batches do not divide evenly). A step whose loss or gradient norm is not finite
    is skipped (no update, a warning); the step after `max_nonfinite_steps` such steps raises.
    Writes a checkpoint every `checkpoint_every` steps.
    """
    config, state, model = run.config, run.state, run.model
    run.train_model.train()
    batches = iter(
        dataloaders.train_loader(run.train_set, config, state.epoch, state.batches_done, run.device, run.pad_multiple)
    )
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
                losses = compute_losses(run, images, padding_mask, targets)
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
        _advance_bar(run, bar, sums, lr)
        at_end = state.batches_done >= run.batches_per_epoch or run.out_of_budget()  # end_of_epoch writes one then
        if config.checkpoint_every and state.step % config.checkpoint_every == 0 and not at_end:
            save_run_checkpoint(run)


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


def _bar_counts_seconds(run: Run) -> bool:
    return bool(run.budget_seconds) and not run.config.max_steps


def _progress_bar(run: Run) -> tqdm:
    """One bar for the whole run with its ETA: over steps, or over the time budget's seconds."""
    disable = not (run.progress and run.is_main)
    if _bar_counts_seconds(run):
        return tqdm(
            total=round(run.budget_seconds),
            initial=round(run.state.train_seconds),
            unit="s",
            desc="train",
            disable=disable,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} s budget [{elapsed}<{remaining}{postfix}]",
        )
    return tqdm(total=run.total_steps, initial=run.state.step, unit="step", desc="train", disable=disable)


def _advance_bar(run: Run, bar: tqdm, sums: dict[str, float], lr: float) -> None:
    if _bar_counts_seconds(run):
        # the last step ends past the budget: the bar stops at its total (tqdm drops a total that n overshoots)
        bar.update(min(round(run.state.train_seconds), bar.total) - bar.n)
    else:
        bar.update(1)
    if run.state.step % run.config.log_every == 0:
        bar.set_postfix(epoch=run.state.epoch, loss=f"{sums.get('loss', float('nan')):.3f}", lr=f"{lr:.2e}")


# ---------------------------------------------------------------------------------- end of an epoch


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
            _save_best(run)
        stop = any(callback.after_evaluation(run, record) for callback in run.callbacks)
    elif epoch_done:
        record = _epoch_record(run, partial=False)
    if record is not None:
        state.history.append(record)
        if run.is_main:
            _append_line(run.output_dir / "metrics.jsonl", record)
        _log_record(run, record)
    if epoch_done:
        state.epoch, state.batches_done, state.loss_sums, state.loss_count = state.epoch + 1, 0, {}, 0
    save_run_checkpoint(run)
    if run.is_main and epoch_done:
        keep_epoch_checkpoint(run.output_dir, state.epoch, config.keep)
    if run.is_main and record is not None:
        from ..viz.curves import plot_curves

        plot_curves(state.history, run.output_dir / "curves.png")
    return stop


def _evaluate(run: Run) -> dict[str, float]:
    """COCO AP on rank 0 (others wait), broadcast; leaves every RNG as it found it."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    metrics = {}
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        if run.is_main:
            model = next((m for c in run.callbacks if (m := c.model_to_evaluate(run)) is not None), run.model)
            metrics = evaluate(
                model,
                dataloaders.eval_loader(run.val_set, run.config, run.device),
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


def _append_line(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _save_best(run: Run) -> None:
    model = next((m for c in run.callbacks if (m := c.model_to_evaluate(run)) is not None), run.model)
    ckpt.save_checkpoint(
        run.output_dir / ckpt.BEST,
        {
            "model": model.state_dict(),
            "config": run.config.to_dict(),
            "categories": run.train_set.categories,
            "AP": run.state.best_ap,
            "step": run.state.step,
            "epoch": run.state.epoch + 1,
        },
        keep_previous=False,
    )


def save_run_checkpoint(run: Run) -> None:
    """checkpoint.pth (rank 0 writes; every rank's RNG state is gathered into it)."""
    rngs = distributed.all_gather_objects(ckpt.rng_state())
    if not run.is_main:
        return
    ckpt.save_checkpoint(
        run.output_dir / ckpt.CHECKPOINT,
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


# ------------------------------------------------------------------------------------------------ fit


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
    with _progress_bar(run) as bar, _stop_cleanly_on_ctrl_c(run):
        while state.epoch < run.config.epochs:
            if state.batches_done == 0 and not run.out_of_budget():
                _seed_epoch(run.config.seed, state.epoch, distributed.rank())
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


_METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
