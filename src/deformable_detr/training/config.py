"""`TrainConfig`: everything `fit` reads — model, loss, optimizer, data sizes, epochs, output folder.

config = TrainConfig.preset("demo", data_dir="data/synthetic", output_dir="runs/demo")
config = dataclasses.replace(config, epochs=2)
TrainConfig.from_dict(json.load(open("runs/demo/config.json")))  # unknown keys raise
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..models.config import ModelConfig
from ..models.detr_config import DetrConfig
from ..registry import AnyModelConfig, model_config_from_dict
from ..util.config_fields import check_fields
from .criterion import LossConfig
from .optim import OptimConfig

# demo preset: sized for the slower of the 2-core dev machines (Intel Xeon). The recipe before (256 px long side, no
# denoising) ran 950 steps there in 8.8 min (0.56 s/step, bf16, 2 threads), 9.6 min in all; a step of this one
# costs 0.79x that at 2 threads (measured on the AMD EPYC), so 1100 steps should take ~8.1 min of training there
# (~8.9 min in all). 1100 and 1200 steps gave the same AP within seed noise (docs/results/faster-training).
DEMO_STEPS = 1100
COCO_SCALES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)


@dataclass(frozen=True)
class TrainConfig:
    """A training run.

    Data (`data_dir` holds `train/` and `val/`, each with `images/` and `annotations.json`):
        train_scales, max_size: multi-scale resize of the short side, cap on the long side (pixels).
        crop_resize, crop_size: short sides before, and (min, max) side of, the random crop.
        val_size: validation short side (None = max(train_scales)). augment: flip/resize/crop on.
        max_train_images: use only the first N training images (None = all).
        data_format: "auto", "coco", "yolo" or "voc". skip_bad: train without the images that
            `check-data` reports problems for (otherwise such a dataset is refused).
    Starting point (see `training/warm_start.py`):
        init: weights file to start from (architecture from it, classes from the data); not a resume.
        backbone_weights: ImageNet ResNet file (torchvision/timm/HF layout) for the backbone.
        random_backbone: allow a model whose backbone is frozen (layers or BatchNorm) to start from
            random backbone weights (refused otherwise: the frozen parts would stay random).
        freeze: None, "backbone" or "encoder" (backbone + input projections + encoder) kept fixed.
    Fine-tuning helpers:
        ema_decay: weight EMA decay (0 = off); the EMA weights are evaluated and saved as best.pth.
        ema_warmup_steps: time constant of the EMA decay warm-up. keep: epoch checkpoints
            (checkpoint_epochN.pth) kept besides checkpoint.pth and best.pth (0 = none).
        patience: stop after this many evaluations without a better AP (0 = never).
    Loop:
        epochs: upper bound on epochs; max_minutes: optional time budget (training steps only) that
            ends training cleanly and, with a cosine/linear schedule, sets the schedule's length.
        max_steps: optional cap on optimizer steps; sets the cosine/linear length when there is no time budget.
        batch_size: images per process per optimizer micro-step; grad_accum_steps micro-steps per step.
        eval_every: evaluate every N epochs (0 = only at the end). amp: bf16 autocast.
        device: "cpu", "cuda" or "cuda:N". workers: DataLoader worker processes. threads: torch
            intra-op threads (0 = torch's default). seed: data order and augmentation are a function
            of (seed, epoch, image). log_every: steps between progress-bar updates.
        checkpoint_every: also write checkpoint.pth every N optimizer steps inside an epoch (0 = only
            at epoch ends and when training stops), so a kill loses at most N steps.
        max_nonfinite_steps: steps with a non-finite loss or gradient are skipped with a warning; one
            more than this many in a run stops training with an error (the last checkpoint is kept).
    """

    model: AnyModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data_dir: str = "data/synthetic"
    output_dir: str = "runs/train"
    train_scales: tuple[int, ...] = COCO_SCALES
    max_size: int = 1333
    crop_resize: tuple[int, ...] = (400, 500, 600)
    crop_size: tuple[int, int] = (384, 600)
    val_size: int | None = 800
    augment: bool = True
    max_train_images: int | None = None
    data_format: str = "auto"
    skip_bad: bool = False
    init: str | None = None
    backbone_weights: str | None = None
    random_backbone: bool = False
    freeze: str | None = None
    ema_decay: float = 0.0
    ema_warmup_steps: int = 0
    keep: int = 0
    patience: int = 0
    epochs: int = 50
    max_minutes: float | None = None
    max_steps: int | None = None
    batch_size: int = 2
    grad_accum_steps: int = 1
    eval_every: int = 1
    amp: bool = False
    device: str = "cpu"
    workers: int = 2
    threads: int = 0
    seed: int = 42
    log_every: int = 10
    checkpoint_every: int = 500
    max_nonfinite_steps: int = 10

    def __post_init__(self):
        check_fields(self)
        for name in ("epochs", "batch_size", "grad_accum_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} = {getattr(self, name)} must be >= 1")
        for name in ("workers", "eval_every", "threads", "checkpoint_every", "max_nonfinite_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name} = {getattr(self, name)} must be >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"TrainConfig.max_steps = {self.max_steps} must be >= 1 (or None for no cap)")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise ConfigError(
                f"TrainConfig.max_minutes = {self.max_minutes} must be a finite number > 0 (or None for no budget)"
            )
        if not re.fullmatch(r"cpu|cuda(:\d+)?", str(self.device)):
            raise ConfigError(f"TrainConfig.device = {self.device!r}; use cpu, cuda or cuda:N")
        if self.data_format not in ("auto", "coco", "yolo", "voc"):
            raise ConfigError(f"TrainConfig.data_format = {self.data_format!r}; choose auto, coco, yolo or voc")
        if self.freeze not in (None, "backbone", "encoder"):
            raise ConfigError(f"TrainConfig.freeze = {self.freeze!r}; choose None, 'backbone' or 'encoder'")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"TrainConfig: ema_decay (--ema) = {self.ema_decay} must be in [0, 1), e.g. 0.999")
        if self.ema_warmup_steps < 0:
            raise ConfigError(f"TrainConfig: ema_warmup_steps = {self.ema_warmup_steps} must be >= 0")
        if self.keep < 0 or self.patience < 0:
            raise ConfigError(f"TrainConfig: keep = {self.keep}, patience = {self.patience} must be >= 0")
        for name in ("train_scales", "crop_resize"):
            sizes = getattr(self, name)
            if not sizes or min(sizes) < 1:
                raise ConfigError(f"TrainConfig.{name} = {list(sizes)}; give at least one short-side size, each >= 1")
        if not 1 <= self.crop_size[0] <= self.crop_size[1]:
            raise ConfigError(f"TrainConfig.crop_size = {list(self.crop_size)}; need [min, max] with 1 <= min <= max")
        for name in ("max_size", "val_size", "max_train_images"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} = {getattr(self, name)} must be >= 1")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"TrainConfig.seed = {self.seed} must be in [0, 2**32)")
        for name in ("data_dir", "output_dir"):
            if not getattr(self, name).strip():
                raise ConfigError(f"TrainConfig.{name} is empty; give a folder path")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """The named preset (see `PRESETS`) with top-level fields replaced by `overrides`."""
        if name not in PRESETS:
            raise ConfigError(f"unknown training preset {name!r}; choose one of {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name](), **overrides)

    @classmethod
    def of_run(cls, run_dir: str | Path) -> TrainConfig:
        """The config of the training run in `run_dir` (its config.json), writing to `run_dir` (for resuming)."""
        path = Path(run_dir) / "config.json"
        if not path.is_file():
            raise ConfigError(
                f"{path}: not found; {run_dir} is not a training run folder (give the --out of a `train` run)"
            )
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"{path}: not valid JSON ({error}); restore it from the run's checkpoint or start a new run"
            ) from None
        return dataclasses.replace(cls.from_dict(values), output_dir=str(run_dir))

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        """A config JSON file (e.g. OUT/config.json); unknown keys raise, naming them."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from None

    def with_lr(self, lr: float) -> TrainConfig:
        """This config with `optim.lr = lr` and the backbone lr scaled along (their ratio is kept)."""
        return dataclasses.replace(self, optim=self.optim.with_lr(lr))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["model"] = self.model.to_dict()
        return _lists(out)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys raise, naming them; a value of the wrong type raises, naming it."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"TrainConfig: got {values!r} ({type(values).__name__}); takes an object of its fields")
        values = dict(values)
        _reject_unknown(cls, values, "TrainConfig")
        if isinstance(values.get("model"), Mapping):
            values["model"] = model_config_from_dict(values["model"])
        for key, sub in (("loss", LossConfig), ("optim", OptimConfig)):
            if isinstance(values.get(key), Mapping):  # anything else: check_fields names the field
                _reject_unknown(sub, values[key], sub.__name__)
                values[key] = sub(**values[key])
        return cls(**values)


def _reject_unknown(cls, values: dict, name: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {name} field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}")


def _lists(value):
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def paper() -> TrainConfig:
    """The paper's COCO recipe: R50 Deformable DETR, 50 epochs, lr 2e-4 dropped at 40, batch 2 per GPU (x8 GPUs)."""
    return TrainConfig()


def demo() -> TrainConfig:
    """The `make demo` run: a from-scratch small model on the synthetic set, a fixed number of steps
    (`DEMO_STEPS`, cosine schedule over them) sized to finish within 10 minutes on 2 CPU cores.

    The model trains with denoising and mixed query selection (`ModelConfig.preset("demo")`), the classification
    loss at twice the paper's weight (4), images of at most 192 px a side (so batches pad to 192 x 192, not
    256 x 256) and AdamW at lr 3e-3 (2e-3 gave the same AP on two seeds and 0.026 less on the third): measured in
    docs/results/faster-training/report.md.
    """
    return TrainConfig(
        model=ModelConfig.preset("demo"),
        loss=LossConfig(loss_ce=4.0),
        optim=OptimConfig(lr=3e-3, lr_backbone=3e-3, schedule="cosine", warmup_steps=100, min_lr_ratio=0.05),
        amp=True,
        train_scales=(192,),
        max_size=192,
        crop_resize=(160, 192),
        crop_size=(128, 192),
        val_size=192,
        epochs=1000,
        max_steps=DEMO_STEPS,
        batch_size=8,
        eval_every=0,
        workers=0,
        threads=2,
        log_every=5,
    )


def finetune() -> TrainConfig:
    """Fine-tune a pretrained detector (`train --init CKPT`) on a small dataset, on one GPU or a CPU.

    The paper's lr is for 16 images per step (8 GPUs x 2); here 4 per step, so lr 1e-4 (about the
    paper's 2e-4 scaled down, as DETR fine-tuning guides use), backbone x0.1, 100 warm-up steps,
    cosine decay over 30 epochs, weight EMA (0.999, warm-up 100 steps) evaluated and saved as
    best.pth, evaluation every epoch, early stop after 5 evaluations without a better AP, the last 2
    epoch checkpoints kept. Sizes: short side 480-640, long side at most 1000. The classification loss
    at 4 (twice the paper's weight, as in `demo`): +0.012 to +0.020 AP on every seed when fine-tuning the demo
    model onto new shapes, at no cost (docs/results/faster-training/report.md). A DETR checkpoint given to
    `--init` brings DETR's own loss instead.
    """
    return TrainConfig(
        loss=LossConfig(loss_ce=4.0),
        optim=OptimConfig(lr=1e-4, lr_backbone=1e-5, schedule="cosine", warmup_steps=100, min_lr_ratio=0.05),
        train_scales=(480, 512, 544, 576, 608, 640),
        max_size=1000,
        crop_resize=(400, 500, 600),
        crop_size=(384, 600),
        val_size=640,
        epochs=30,
        batch_size=4,
        eval_every=1,
        ema_decay=0.999,
        ema_warmup_steps=100,
        keep=2,
        patience=5,
    )


def detr() -> TrainConfig:
    """DETR's COCO recipe: R50 DETR, AdamW lr 1e-4, backbone 1e-5, 500 epochs with the lr dropped at 400 (42.0 AP)."""
    from .detr_criterion import detr_loss_config

    return TrainConfig(
        model=DetrConfig.preset("detr-r50"),
        loss=detr_loss_config(),
        optim=OptimConfig(lr=1e-4, lr_backbone=1e-5, lr_drop=400),
        epochs=500,
    )


def detr_demo() -> TrainConfig:
    """`demo` with DETR of the same width, depth and backbone (`detr-demo`), DETR's loss, and lr 1e-3 (half the
    2e-3 the Deformable DETR demo was tuned at, as DETR's 1e-4 is half of Deformable DETR's 2e-4)."""
    from .detr_criterion import detr_loss_config

    base = demo()
    return dataclasses.replace(
        base,
        model=DetrConfig.preset("detr-demo"),
        loss=detr_loss_config(),
        optim=dataclasses.replace(base.optim, lr=1e-3, lr_backbone=1e-3),
    )


PRESETS: dict[str, Callable[[], TrainConfig]] = {
    "paper": paper,
    "demo": demo,
    "finetune": finetune,
    "detr": detr,
    "detr-demo": detr_demo,
}
