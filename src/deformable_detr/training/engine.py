"""The training loop: `fit(config) -> TrainResult`, and `evaluate(model, loader, ...) -> metrics`.

Per optimizer step, top to bottom: set lr -> forward under autocast -> criterion -> backward ->
clip -> step -> log. Data order and augmentation are functions of (seed, epoch), and a checkpoint
is written after every epoch, so `fit(config, resume=True)` continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..data.coco import CocoDetection, DatasetError, collate
from ..data.transforms import make_transforms
from ..models.detector import DeformableDETR
from ..models.state_dict import load_state_dict_strict
from ..util import distributed
from . import checkpoint as ckpt
from .config import TrainConfig
from .criterion import SetCriterion
from .optim import build_optimizer, lr_factor, set_lr

logger = logging.getLogger(__name__)
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


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

    @property
    def checkpoint(self) -> Path:
        return self.output_dir / "checkpoint.pth"


def build_datasets(config: TrainConfig) -> tuple[CocoDetection, CocoDetection]:
    """Train/val datasets from `data_dir/{train,val}/{images,annotations.json}` with the config's sizes."""
    root = Path(config.data_dir)
    for split in ("train", "val"):
        if not (root / split / "annotations.json").is_file():
            raise DatasetError(
                f"{root / split / 'annotations.json'}: not found; --data must hold train/ and val/ with images/ and "
                "annotations.json (make one with `deformable-detr make-dataset`)"
            )
    train_tf = make_transforms(config.augment, config.train_scales, config.max_size, config.crop_resize, config.crop_size, config.val_size)
    val_tf = make_transforms(False, config.train_scales, config.max_size, val_size=config.val_size)
    train_set = CocoDetection(root / "train" / "images", root / "train" / "annotations.json", train_tf)
    val_set = CocoDetection(root / "val" / "images", root / "val" / "annotations.json", val_tf)
    if config.max_train_images is not None:
        train_set.images = train_set.images[: config.max_train_images]
    return train_set, val_set


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Augmentation (python `random`), numpy and torch (dropout) RNGs as a function of (seed, epoch, rank)."""
    value = (seed * 1_000_003 + epoch * 1009 + rank) % (2**31)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def _targets_to(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


@torch.no_grad()
def evaluate(model: DeformableDETR, data_loader: DataLoader, ground_truth, label_to_category_id: list[int],
             device: torch.device | str = "cpu", amp: bool = False, progress: bool = False) -> dict[str, float]:
    """COCO box AP of `model` on every image of `data_loader`.

    Args:
        model: the detector (unwrapped, not DDP); put in eval mode here and left in eval mode.
        data_loader: yields `collate` batches of a `CocoDetection`.
        ground_truth: COCO instances dict or path (for pycocotools).
        label_to_category_id: contiguous label -> COCO category id.
        amp: bf16 autocast for the forward pass.

    Returns:
        dict with AP, AP50, AP75, APs, APm, APl, AR100 (0..1; -1 where undefined).
    """
    from ..evaluation.coco_eval import evaluate_detections

    device = torch.device(device)
    model.eval()
    results = []
    for images, padding_mask, targets in tqdm(data_loader, desc="eval", leave=False, disable=not progress):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            outputs = model(images.to(device), padding_mask.to(device))
        outputs = {k: v.float() for k, v in outputs.items() if k in ("pred_logits", "pred_boxes")}
        target_sizes = torch.stack([t["orig_size"] for t in targets]).to(device)  # (B, 2) (h, w)
        for target, detections in zip(targets, model.postprocess(outputs, target_sizes)):
            boxes_xyxy = detections["boxes"].cpu()
            boxes_xywh = torch.cat([boxes_xyxy[:, :2], boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]], dim=1)  # (N, 4)
            for score, label, box in zip(detections["scores"].tolist(), detections["labels"].tolist(), boxes_xywh.tolist()):
                results.append({"image_id": target["image_id"], "category_id": label_to_category_id[label],
                                "bbox": [round(x, 2) for x in box], "score": round(score, 5)})
    return evaluate_detections(ground_truth, results)


def _make_loader(dataset, config: TrainConfig, train: bool, generator: torch.Generator | None, device) -> tuple[DataLoader, DistributedSampler | None]:
    sampler = None
    if train:
        sampler = DistributedSampler(dataset, num_replicas=distributed.world_size(), rank=distributed.rank(),
                                     shuffle=True, seed=config.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, shuffle=False, collate_fn=collate,
                        num_workers=config.workers, drop_last=train, generator=generator,
                        pin_memory=torch.device(device).type == "cuda", persistent_workers=False)
    return loader, sampler


def fit(config: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train `config.model` on `config.data_dir`; writes checkpoints, metrics.jsonl, curves.png to `output_dir`.

    `model.num_classes` is set from the training annotations. Under torchrun every process calls
    `fit`; only rank 0 writes files. With `resume`, continues from `output_dir/checkpoint.pth`.

    Returns:
        TrainResult with the last evaluation's metrics.

    Raises:
        FloatingPointError: a non-finite loss, naming the step and every loss term.
    """
    device = distributed.init_from_environment(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    main = distributed.is_main_process()
    out = Path(config.output_dir)
    train_set, val_set = build_datasets(config)
    if config.model.num_classes != train_set.num_classes:
        logger.info("num_classes %d -> %d (from %s)", config.model.num_classes, train_set.num_classes, train_set.annotations_file)
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, num_classes=train_set.num_classes))

    torch.manual_seed(config.seed)
    model = DeformableDETR(config.model).to(device)
    criterion = SetCriterion.from_config(config.model.num_classes, config.loss)
    optimizer = build_optimizer(model, config.optim)
    start_epoch, step, train_seconds, best_ap, history = 0, 0, 0.0, -1.0, []
    if resume:
        state = ckpt.load_checkpoint(out / "checkpoint.pth", map_location=device)
        load_state_dict_strict(model, state["model"], str(out / "checkpoint.pth"))
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, train_seconds, best_ap = state["epoch"], state["step"], state["elapsed_s"], state["best_ap"]
        ckpt.set_rng_state(state["rng"])
        history = _read_history(out / "metrics.jsonl", start_epoch, rewrite=main)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    train_model = DistributedDataParallel(model) if distributed.is_initialized() else model

    generator = torch.Generator()
    train_loader, sampler = _make_loader(train_set, config, True, generator, device)
    val_loader, _ = _make_loader(val_set, config, False, None, device)
    if len(train_loader) == 0:
        raise DatasetError(f"{train_set.annotations_file}: {len(train_set)} images < batch_size {config.batch_size} x {distributed.world_size()} processes; lower --batch-size")
    total_steps = config.max_steps or config.epochs * len(train_loader) // config.grad_accum_steps
    budget_s = config.max_minutes * 60 if config.max_minutes else None
    metrics: dict[str, float] = {}
    epoch = start_epoch

    for epoch in range(start_epoch, config.epochs):
        _seed_epoch(config.seed, epoch, distributed.rank())
        sampler.set_epoch(epoch)
        generator.manual_seed(config.seed * 1009 + epoch)
        train_model.train()
        sums: dict[str, float] = {}
        count, out_of_time = 0, False
        bar = tqdm(total=len(train_loader) // config.grad_accum_steps, desc=f"epoch {epoch}", disable=not (progress and main), leave=False)
        batches = iter(train_loader)
        for _ in range(len(train_loader) // config.grad_accum_steps):
            started = time.perf_counter()
            progress_fraction = train_seconds / budget_s if budget_s else step / max(total_steps, 1)
            lr = set_lr(optimizer, lr_factor(config.optim, step, epoch, progress_fraction))
            for micro in range(config.grad_accum_steps):
                images, padding_mask, targets = next(batches)
                images, padding_mask, targets = images.to(device), padding_mask.to(device), _targets_to(targets, device)
                last_micro = micro == config.grad_accum_steps - 1
                sync = contextlib.nullcontext() if last_micro or train_model is model else train_model.no_sync()
                with sync:
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=config.amp):
                        outputs = train_model(images, padding_mask)
                    losses = criterion(outputs, targets)
                    loss = criterion.weighted_sum(losses)
                    if not math.isfinite(loss.item()):
                        terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
                        raise FloatingPointError(f"step {step}: loss is {loss.item()} (terms: {terms}); lower --lr or enable clipping")
                    (loss / config.grad_accum_steps).backward()
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + value.item()
                sums["loss"] = sums.get("loss", 0.0) + loss.item()
                count += 1
            if config.optim.clip_max_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_max_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            train_seconds += _synced_elapsed(time.perf_counter() - started)
            bar.update(1)
            if step % config.log_every == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
            if (budget_s is not None and train_seconds >= budget_s) or (config.max_steps and step >= config.max_steps):
                out_of_time = True
                break
        bar.close()

        record = {"epoch": epoch, "step": step, "lr": lr, "train_seconds": round(train_seconds, 2)}
        record.update({f"train_{k}": v / max(count, 1) for k, v in distributed.all_reduce_mean(sums, device).items()})
        last = out_of_time or epoch == config.epochs - 1
        if last or (config.eval_every and (epoch + 1) % config.eval_every == 0):
            metrics = _evaluate_on_main(model, val_loader, val_set, device, config.amp, progress)
            record.update(metrics)
        history.append(record)
        if main:
            _write_epoch_files(out, record, history, model, optimizer, epoch, step, train_seconds, config, best_ap, train_set.categories)
            if "AP" in record and record["AP"] > best_ap:
                best_ap = record["AP"]
                ckpt.atomic_save({"model": model.state_dict(), "config": config.to_dict(), "epoch": epoch + 1, "AP": best_ap,
                                  "categories": train_set.categories}, out / "best.pth")
        if progress and main:
            shown = ("lr", "train_loss", "train_loss_ce", "train_loss_bbox", "train_loss_giou", "train_class_error") + AP_KEYS
            logger.info("epoch %d (step %d, %.0f s): %s", epoch, step, train_seconds,
                        ", ".join(f"{k.removeprefix('train_')}={record[k]:.4g}" for k in shown if k in record))
        if out_of_time:
            break
    distributed.barrier()
    return TrainResult(out, metrics, best_ap, epoch + 1, step, train_seconds, history)


def _synced_elapsed(seconds: float) -> float:
    """Time-budget clock agreed across processes (the max), so all ranks stop on the same step."""
    if not distributed.is_initialized():
        return seconds
    value = torch.tensor([seconds], dtype=torch.float64)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return float(value.item())


def _evaluate_on_main(model, val_loader, val_set, device, amp, progress) -> dict[str, float]:
    """COCO AP on rank 0 (other ranks wait), broadcast so every rank returns the same metrics."""
    metrics = {}
    if distributed.is_main_process():
        metrics = evaluate(model, val_loader, str(val_set.annotations_file), val_set.label_to_category_id, device, amp, progress)
    metrics = distributed.all_gather_objects(metrics)[0]
    return {k: float(v) for k, v in metrics.items()}


def _write_epoch_files(out, record, history, model, optimizer, epoch, step, train_seconds, config, best_ap, categories) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    best = max(best_ap, record.get("AP", -1.0))
    ckpt.save_checkpoint(out / "checkpoint.pth", model, optimizer, epoch=epoch + 1, step=step,
                         elapsed_s=train_seconds, config=config.to_dict(), best_ap=best, extra={"categories": categories})
    from ..viz.curves import plot_curves

    plot_curves(history, out / "curves.png")


def _read_history(path: Path, epochs_done: int, rewrite: bool) -> list[dict]:
    """Records of the first `epochs_done` epochs from metrics.jsonl (later lines, from a crash, are dropped)."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    records = [r for r in records if r.get("epoch", 0) < epochs_done]
    if rewrite:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def evaluate_checkpoint(checkpoint_path: str | Path, images_dir: str | Path, annotations_file: str | Path,
                        device: str = "cpu", batch_size: int = 8, workers: int = 0, progress: bool = True) -> dict[str, float]:
    """COCO AP of a trained checkpoint on a COCO-format dataset, at the checkpoint's validation size.

    Returns:
        dict with AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl.
    """
    model, config, _ = ckpt.load_trained_model(checkpoint_path, device)
    transforms = make_transforms(False, config.train_scales, config.max_size, val_size=config.val_size)
    dataset = CocoDetection(images_dir, annotations_file, transforms)
    if dataset.num_classes != config.model.num_classes:
        raise DatasetError(f"{annotations_file}: {dataset.num_classes} categories, but the checkpoint predicts "
                           f"{config.model.num_classes}; evaluate on data with the training categories")
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers)
    return evaluate(model, loader, str(annotations_file), dataset.label_to_category_id, device, config.amp, progress)
