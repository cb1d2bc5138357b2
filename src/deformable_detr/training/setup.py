"""`setup`: a `Run` built from a `TrainConfig` — device, output folder, datasets, model (fresh, from
`--init`, or about to be resumed), callbacks, criterion, optimizer and the DDP wrapper — in that order.

The order matters for exact runs: the model is built right after `torch.manual_seed(config.seed)`, so
its initial weights depend on the seed alone; everything drawn later uses RNGs seeded per epoch or per
image (`loop.seed_epoch`, `dataloaders.py`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from .. import registry
from ..data.coco import DatasetError
from ..util import distributed
from ..util.devices import checked_device
from ..viz.training_batch import draw_training_batch
from .callbacks import TrainCallback
from .checkpoint import prepare_output_dir, remove_temp_files
from .config import TrainConfig
from .criterion import SetCriterion  # the type of both criteria (DetrCriterion is one)
from .dataloaders import batches_per_epoch, train_loader
from .datasets import build_datasets
from .diagnose import ZeroAPHint
from .ema import EMACallback
from .optim import build_optimizer, shortened_warmup
from .resume import restore
from .retention import EarlyStopping
from .run import Run, TrainState
from .run_files import write_config
from .warm_start import init_model_config, prepare_model, read_init_source

logger = logging.getLogger(__name__)


def build_criterion(config: TrainConfig) -> SetCriterion:
    """The loss that fits `config.model` with `config.loss`'s weights, as `deformable_detr.registry` picks it:
    `DetrCriterion` for a `DetrConfig`, else Deformable DETR's `SetCriterion` (which makes the denoising queries
    that a model built with `denoising` takes). The loop asks the criterion, never the model config."""
    return registry.build_criterion(config.model, config.loss)


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
    checked_device(config.device)
    device = distributed.init_from_environment(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.output_dir)
    if distributed.is_main_process():
        prepare_output_dir(out, resume, overwrite)
        for leftover in remove_temp_files(out):
            logger.info("removed %s (left by an interrupted write)", leftover)
    train_set, val_set = build_datasets(config)
    if config.model.num_classes != train_set.num_classes:
        logger.info("%d classes (from %s)", train_set.num_classes, train_set.annotations_file)
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, num_classes=train_set.num_classes))
    if batches_per_epoch(train_set, config) == 0:
        raise DatasetError(
            f"{train_set.annotations_file}: {len(train_set)} images < batch_size {config.batch_size} x "
            f"{distributed.world_size()} processes; lower --batch-size"
        )

    init_source = read_init_source(config.init) if config.init and not resume else None  # read once
    if init_source is not None:
        config = init_model_config(config, train_set.num_classes, init_source)

    torch.manual_seed(config.seed)
    model = registry.build_model(config.model)  # DeformableDETR or DETR; the criterion below fits it
    if not resume:
        for line in prepare_model(model, config, train_set.categories, init_source):
            logger.info("%s", line)
    model = model.to(device)
    callbacks = (
        tuple(callbacks)
        + ((EMACallback(config.ema_decay, config.ema_warmup_steps),) if config.ema_decay else ())
        + ((EarlyStopping(config.patience),) if config.patience else ())
        + (ZeroAPHint(),)
    )
    criterion = build_criterion(config)
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
        restore(run)
        if run.is_main:  # an extension's limits (or other overrides) are the run's from now on: a plain
            write_config(out, config)  # --resume keeps them
        if run.out_of_budget():
            logger.warning(
                "%s: already at max_steps=%s / max_minutes=%s: nothing left to train; pass a larger --max-steps "
                "or --max-minutes to extend it",
                out,
                config.max_steps,
                config.max_minutes,
            )
    elif distributed.is_main_process():
        write_config(out, config)
        _draw_first_batch(run)
    for callback in run.callbacks:
        callback.setup(run)
    return run


def _draw_first_batch(run: Run) -> None:
    """OUT/train_batch0.png: the first batch as the model will see it (augmentation is seeded per image, so
    drawing it changes nothing in training)."""
    images, padding_mask, targets = next(
        iter(train_loader(run.train_set, run.config, epoch=0, pad_multiple=run.pad_multiple))
    )
    names = [c.get("name", str(c["id"])) for c in run.train_set.categories]
    logger.info(
        "first training batch drawn: %s",
        draw_training_batch(images, padding_mask, targets, names, run.output_dir / "train_batch0.png"),
    )
