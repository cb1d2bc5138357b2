"""`TrainConfig`: everything `fit` reads — model, loss, optimizer, data sizes, epochs, output folder.

    config = TrainConfig.preset("demo", data_dir="data/synthetic", output_dir="runs/demo")
    config = dataclasses.replace(config, epochs=2)
    TrainConfig.from_dict(json.load(open("runs/demo/config.json")))  # unknown keys raise
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from ..models.config import ModelConfig
from .criterion import LossConfig
from .optim import OptimConfig

COCO_SCALES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)


@dataclass(frozen=True)
class TrainConfig:
    """A training run.

    Data (`data_dir` holds `train/` and `val/`, each with `images/` and `annotations.json`):
        train_scales, max_size: multi-scale resize of the short side, cap on the long side (pixels).
        crop_resize, crop_size: short sides before, and (min, max) side of, the random crop.
        val_size: validation short side (None = max(train_scales)). augment: flip/resize/crop on.
        max_train_images: use only the first N training images (None = all).
    Loop:
        epochs: upper bound on epochs; max_minutes: optional time budget (training steps only) that
            ends training cleanly and, with a cosine/linear schedule, sets the schedule's length.
        max_steps: optional cap on optimizer steps; sets the cosine/linear length when there is no time budget.
        batch_size: images per process per optimizer micro-step; grad_accum_steps micro-steps per step.
        eval_every: evaluate every N epochs (0 = only at the end). amp: bf16 autocast.
        device: "cpu", "cuda" or "cuda:N". workers: DataLoader worker processes. threads: torch
            intra-op threads (0 = torch's default). seed: data order and augmentation are a function
            of (seed, epoch). log_every: steps between progress-bar updates.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
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

    def __post_init__(self):
        for name in ("epochs", "batch_size", "grad_accum_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} = {getattr(self, name)} must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"TrainConfig.max_steps = {self.max_steps} must be >= 1 (or None for no cap)")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"TrainConfig.max_minutes = {self.max_minutes} must be > 0 (or None for no budget)")
        if self.workers < 0 or self.eval_every < 0:
            raise ValueError(f"TrainConfig: workers = {self.workers}, eval_every = {self.eval_every} must be >= 0")
        if not self.train_scales:
            raise ValueError("TrainConfig.train_scales is empty; give at least one short-side size")
        object.__setattr__(self, "train_scales", tuple(self.train_scales))
        object.__setattr__(self, "crop_resize", tuple(self.crop_resize))
        object.__setattr__(self, "crop_size", tuple(self.crop_size))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "TrainConfig":
        """The named preset (see `PRESETS`) with top-level fields replaced by `overrides`."""
        if name not in PRESETS:
            raise ValueError(f"unknown training preset {name!r}; choose one of {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name](), **overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["model"] = self.model.to_dict()
        return _lists(out)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict`; unknown keys raise, naming them."""
        values = dict(values)
        _reject_unknown(cls, values, "TrainConfig")
        if "model" in values:
            values["model"] = ModelConfig.from_dict(values["model"])
        for key, sub in (("loss", LossConfig), ("optim", OptimConfig)):
            if key in values:
                _reject_unknown(sub, values[key], sub.__name__)
                sub_values = dict(values[key])
                if "betas" in sub_values:
                    sub_values["betas"] = tuple(sub_values["betas"])
                values[key] = sub(**sub_values)
        return cls(**values)


def _reject_unknown(cls, values: dict, name: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {name} field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}")


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
    """The `make demo` run: a from-scratch small model on the synthetic set, 2 CPU cores, about 8 minutes."""
    return TrainConfig(
        model=ModelConfig.preset("demo"),
        optim=OptimConfig(lr=2e-3, lr_backbone=2e-3, schedule="cosine", warmup_steps=100, min_lr_ratio=0.05),
        amp=True,
        train_scales=(192,),
        max_size=256,
        crop_resize=(160, 192),
        crop_size=(128, 192),
        val_size=192,
        epochs=1000,
        max_minutes=8.0,
        batch_size=8,
        eval_every=0,
        workers=0,
        threads=2,
        log_every=5,
    )


PRESETS: dict[str, Callable[[], TrainConfig]] = {"paper": paper, "demo": demo}
