"""`experiment convergence`: DETR vs Deformable DETR variants trained side by side on the same synthetic split.

Every model gets the same data, backbone, width, depth, schedule and budget (epochs, or training
minutes); each (model, seed) trains in its own run folder with training's own checkpoints, so running
the same experiment again continues where it stopped. The report (`report.md`) gives final AP/AP50/
APs/APm/APl, epochs and minutes to reach the reference model's final AP (DETR's, when DETR is in the
list), time per epoch, parameters and FLOPs at the training size, and the encoder-cost table of
`experiments.scaling`; `convergence.png` draws AP and APs against epochs and minutes.

    config = ConvergenceConfig(out_dir="runs/conv", models=("detr", "deformable"), epochs=20)
    result = run_convergence(config)          # result.report -> runs/conv/report.md, summary.json

With `pretrain_steps`, every model starts from one backbone pretrained to classify other shapes
(`experiments.pretrain`), the analogue of the paper's ImageNet ResNet, with `backbone_lr_ratio` of the lr.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint.files import atomic_write_text
from ..data.synthetic_render import MAX_OBJECTS
from ..errors import ConfigError
from ..training.config import TrainConfig
from ..training.optim import OptimConfig
from ..util.config_fields import check_fields
from .jobs import DONE_NAME, check_same_settings, train_all
from .variants import variant_train_config

DEFAULT_MODELS = ("detr", "deformable-single-scale", "deformable", "deformable-refine")
PRETRAIN_IMAGES = 2000  # single-shape training images of the backbone pretraining (and a tenth as many to validate)


@dataclass(frozen=True)
class ConvergenceConfig:
    """One convergence experiment.

    out_dir: where runs/, data/ (unless `data_dir`), report.md and the plots go.
    models: variant specs (`experiments.variants`); the reference model for "time to reach" is the
        first DETR variant in the list, else the first model.
    seeds: one training run per (model, seed).
    epochs / budget_minutes: the budget of every run: a number of epochs, or minutes of training steps
        (then `epochs` is only an upper bound and the cosine schedule spans the minutes).
    eval_every: evaluate every N epochs (and after the last).
    data_dir: an existing dataset (train/ and val/); None renders the synthetic shapes into out_dir/data
        with train_images / val_images images of up to image_size px (data_seed).
    train_size: short side of the training and validation images; batch_size, threads: per run.
    classes, objects_per_image, object_size: the synthetic generator's options (`data.synthetic.make_dataset`).
    pretrain_steps: 0 = every model's backbone starts random; N > 0 = from a backbone pretrained N steps to classify
        single shapes of `experiments.pretrain.PRETRAIN_CLASSES` (none of the detected classes), rendered into
        out_dir/pretrain-data and saved as out_dir/backbone.pth, shared by every run.
    backbone_lr_ratio: the backbone's lr as a fraction of the rest; None = 1 for a random backbone, 0.1 (the
        paper's) for a pretrained one.
    num_queries: every model's query count (None = each variant's own).
    jobs: runs trained at once, each in its own process with `threads` threads (longest budgets first).
    scaling_sizes: image sizes (square, px) of the encoder-cost table; () skips it.
    command: the command line, recorded in the report.
    """

    out_dir: str
    models: tuple[str, ...] = DEFAULT_MODELS
    seeds: tuple[int, ...] = (0,)
    epochs: int = 30
    budget_minutes: float | None = None
    eval_every: int = 3
    data_dir: str | None = None
    train_images: int = 2000
    val_images: int = 250
    image_size: int = 256
    data_seed: int = 0
    train_size: int = 192
    batch_size: int = 8
    threads: int = 0
    classes: str = "demo"
    objects_per_image: tuple[int, int] | None = None
    object_size: tuple[float, float] | None = None
    pretrain_steps: int = 0
    backbone_lr_ratio: float | None = None
    num_queries: int | None = None
    jobs: int = 1
    scaling_sizes: tuple[int, ...] = (256, 512, 768, 1024)
    command: str = ""

    def __post_init__(self):
        check_fields(self)
        for name in ("models", "seeds", "scaling_sizes", "objects_per_image", "object_size"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for name, value, least in (
            ("pretrain_steps", self.pretrain_steps, 0),
            ("jobs", self.jobs, 1),
            ("num_queries", self.num_queries, 1),
        ):
            if value is not None and value < least:
                raise ConfigError(f"experiment convergence: --{name.replace('_', '-')} {value} must be >= {least}")
        if self.data_dir is None:
            from ..data.synthetic import resolve_classes

            resolve_classes(self.classes)  # an unknown shape name fails here, in one line
        if self.backbone_lr_ratio is not None and self.backbone_lr_ratio < 0:
            raise ConfigError(f"experiment convergence: backbone_lr_ratio={self.backbone_lr_ratio} must be >= 0")
        if not self.models:
            raise ConfigError("experiment convergence: --models is empty; name at least one model variant")
        if self.epochs < 1 or self.eval_every < 1:
            raise ConfigError(
                f"experiment convergence: epochs={self.epochs}, eval_every={self.eval_every} must be >= 1"
            )
        if self.budget_minutes is not None and self.budget_minutes <= 0:
            raise ConfigError(f"experiment convergence: --budget-minutes {self.budget_minutes} must be > 0")
        if self.data_dir is None and (self.train_images < self.batch_size or self.val_images < 1):
            raise ConfigError(
                f"experiment convergence: --train-images {self.train_images} must be >= --batch-size "
                f"{self.batch_size} and --val-images {self.val_images} >= 1"
            )


@dataclass
class RunRecord:
    """One (model, seed) run: its evaluation history, what it cost, and whether it trained its whole budget."""

    label: str
    seed: int
    run_dir: Path
    history: list[dict]
    epochs: int
    train_seconds: float
    finished: bool = True

    @property
    def evaluations(self) -> list[dict]:
        return [r for r in self.history if "AP" in r]

    @property
    def final(self) -> dict:
        return self.evaluations[-1] if self.evaluations else {}


@dataclass
class ConvergenceResult:
    """What `run_convergence` returns: the runs, the per-model summary rows and the written files (report.md,
    summary.json (`experiments.summary`), convergence.png, scaling.png)."""

    runs: list[RunRecord]
    summary: list[dict[str, Any]]
    scaling: list[dict[str, Any]]
    report: Path
    summary_json: Path
    convergence_plot: Path
    scaling_plot: Path | None = None
    models: dict[str, Any] = field(default_factory=dict)


def base_train_config(config: ConvergenceConfig, data_dir: Path, backbone: Path | None = None) -> TrainConfig:
    """The recipe every model shares: the `demo` recipe (bf16 autocast, flip + resize/crop augmentation) with AdamW at
    2e-3 (the demo's lr when the study ran), 100 warm-up steps, cosine to 5 %, at `train_size`, with this
    experiment's budget; the backbone's lr is
    `backbone_lr_ratio` of that (see ConvergenceConfig), from the pretrained `backbone` file if given."""
    base = TrainConfig.preset("demo")
    size = config.train_size
    ratio = config.backbone_lr_ratio if config.backbone_lr_ratio is not None else (1.0 if backbone is None else 0.1)
    return dataclasses.replace(
        base,
        data_dir=str(data_dir),
        train_scales=(size,),
        max_size=max(size, round(size * 4 / 3)),
        crop_resize=(round(size * 5 / 6), size),
        crop_size=(round(size * 2 / 3), size),
        val_size=size,
        epochs=config.epochs if config.budget_minutes is None else 100_000,
        max_minutes=config.budget_minutes,
        max_steps=None,  # the demo preset's fixed step count would cap this experiment's epoch or time budget
        eval_every=config.eval_every,
        batch_size=config.batch_size,
        threads=config.threads,
        backbone_weights=str(backbone) if backbone is not None else None,
        optim=OptimConfig(lr=2e-3, lr_backbone=2e-3 * ratio, schedule="cosine", warmup_steps=100, min_lr_ratio=0.05),
    )


def _render_once(target: Path, *args: Any, **options: Any) -> Path:
    """`make_dataset(target, *args, **options)` unless target/val/annotations.json is there; rendered into a staging
    folder and moved into place in one step, so an interrupted render leaves no half-written dataset."""
    if (target / "val" / "annotations.json").is_file():
        return target
    from ..data.synthetic import make_dataset

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".data.", dir=target.parent))
    try:
        make_dataset(staging, *args, **options)
        os.replace(staging, target)  # atomic; a concurrent experiment that finished first wins
    except OSError:
        if not (target / "val" / "annotations.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_dataset(config: ConvergenceConfig, progress: bool = True) -> Path:
    """The experiment's data folder: `data_dir`, or the synthetic split rendered once into out_dir/data."""
    if config.data_dir is not None:
        return Path(config.data_dir)
    return _render_once(
        Path(config.out_dir) / "data",
        config.train_images,
        config.val_images,
        config.image_size,
        config.data_seed,
        classes=config.classes,
        objects_per_image=config.objects_per_image or (1, MAX_OBJECTS),
        object_size=config.object_size,
    )


def ensure_backbone(config: ConvergenceConfig, model_config, progress: bool = True, create: bool = True) -> Path | None:
    """out_dir/backbone.pth, pretrained once (None without `pretrain_steps`); its accuracy goes to backbone.json.

    With `create=False` the path is returned whether or not the file is there yet (a report of unfinished runs)."""
    if not config.pretrain_steps:
        return None
    out = Path(config.out_dir)
    target, record = out / "backbone.pth", out / "backbone.json"
    if not create or (target.is_file() and record.is_file()):
        if not record.is_file():
            return target
        saved = json.loads(record.read_text())
        if saved.get("steps") != config.pretrain_steps:
            raise ConfigError(
                f"{target} was pretrained {saved.get('steps')} steps, not --pretrain-steps {config.pretrain_steps}; "
                "re-run with the original value, or choose another --out"
            )
        return target
    from .pretrain import PRETRAIN_CLASSES, pretrain_backbone

    data = _render_once(
        out / "pretrain-data",
        PRETRAIN_IMAGES,
        PRETRAIN_IMAGES // 10,
        config.image_size,
        config.data_seed,
        classes=PRETRAIN_CLASSES,
        objects_per_image=(1, 1),
        object_size=config.object_size,
    )
    result = pretrain_backbone(
        model_config, data, target, config.pretrain_steps, config.data_seed, config.train_size, progress
    )
    atomic_write_text(record, json.dumps(result) + "\n")
    return target


def _read_run(label: str, seed: int, run_dir: Path) -> RunRecord:
    metrics = run_dir / "metrics.jsonl"
    history = (
        [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.is_file() else []
    )
    last = history[-1] if history else {"epoch": -1, "train_seconds": 0.0}
    return RunRecord(
        label,
        seed,
        run_dir,
        history,
        last["epoch"] + 1,
        float(last["train_seconds"]),
        finished=(run_dir / DONE_NAME).is_file(),
    )


def run_convergence(config: ConvergenceConfig, progress: bool = True, train: bool = True) -> ConvergenceResult:
    """Train every (model, seed) not yet done, then measure FLOPs and write report.md and the plots.

    With `train=False` nothing is trained: the report covers what the run folders hold so far (unfinished
    runs are marked as such; e.g. while another process is still training some of the models).

    Returns:
        ConvergenceResult with every run's history, the summary rows of the report and the file paths.
    """
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = ensure_dataset(config, progress)
    backbone = ensure_backbone(config, base_train_config(config, data_dir).model, progress, create=train)
    base = base_train_config(config, data_dir, backbone)
    variants = [variant_train_config(spec, base) for spec in config.models]
    if config.num_queries is not None:
        variants = [
            (label, dataclasses.replace(v, model=dataclasses.replace(v.model, num_queries=config.num_queries)))
            for label, v in variants
        ]
    labels = [label for label, _ in variants]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"experiment convergence: model labels repeat in {', '.join(labels)}; give each a LABEL=")
    jobs = [
        (label, seed, dataclasses.replace(train, seed=seed, output_dir=str(out / "runs" / label / f"seed{seed}")))
        for label, train in variants
        for seed in config.seeds
    ]
    if train:
        todo = []
        for _, _, job in jobs:  # a finished or started run is reused only if it was trained as asked now
            run_dir = Path(job.output_dir)
            if (run_dir / DONE_NAME).is_file() or (run_dir / "checkpoint.pth").is_file():
                check_same_settings(job)
            if not (run_dir / DONE_NAME).is_file():
                todo.append(job)
        train_all(todo, config.jobs, progress)
    runs = [_read_run(label, seed, Path(job.output_dir)) for label, seed, job in jobs]

    from ..data.coco import CocoDetection
    from ..viz.convergence import plot_convergence, plot_scaling
    from .report import summarize_runs, write_report
    from .scaling import measure_scaling, model_costs
    from .summary import build_summary

    num_classes = CocoDetection(data_dir / "train" / "images", data_dir / "train" / "annotations.json").num_classes
    models = {label: dataclasses.replace(variant.model, num_classes=num_classes) for label, variant in variants}
    costs = model_costs(models, config.train_size)
    reference = _reference_label(variants)
    summary = summarize_runs(runs, labels, reference, costs)
    seeds = build_summary(runs, labels, reference)
    summary_json = atomic_write_text(out / "summary.json", json.dumps(seeds, indent=1) + "\n")
    scaling = measure_scaling(models, config.scaling_sizes, progress=progress) if config.scaling_sizes else []
    convergence_plot = plot_convergence(
        runs, labels, out / "convergence.png", seeds["detr_ap"], f"{reference}: final AP (mean over seeds)"
    )
    scaling_plot = plot_scaling(scaling, out / "scaling.png") if scaling else None
    report = write_report(out / "report.md", config, data_dir, base, summary, scaling, runs, seeds)
    return ConvergenceResult(runs, summary, scaling, report, summary_json, convergence_plot, scaling_plot, models)


def _reference_label(variants: list[tuple[str, TrainConfig]]) -> str:
    """The first DETR variant, else the first model."""
    from ..models.detr_config import DetrConfig

    for label, train in variants:
        if isinstance(train.model, DetrConfig):
            return label
    return variants[0][0]
