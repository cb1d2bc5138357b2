"""`experiment convergence`: DETR vs Deformable DETR variants trained side by side on the same synthetic split.

Every model gets the same data, backbone, width, depth, schedule and budget (epochs, or training
minutes); each (model, seed) trains in its own run folder with training's own checkpoints, so running
the same experiment again continues where it stopped. The report (`report.md`) gives final AP/AP50/
APs/APm/APl, epochs and minutes to reach the reference model's final AP (DETR's, when DETR is in the
list), time per epoch, parameters and FLOPs at the training size, and the encoder-cost table of
`experiments.scaling`; `convergence.png` draws AP and APs against epochs and minutes.

    config = ConvergenceConfig(out_dir="runs/conv", models=("detr", "deformable"), epochs=20)
    result = run_convergence(config)          # result.report -> runs/conv/report.md
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

from tqdm import tqdm

from ..errors import ConfigError
from ..training.config import TrainConfig
from ..training.optim import OptimConfig
from ..util.config_fields import check_fields
from .variants import variant_train_config

DEFAULT_MODELS = ("detr", "deformable-single-scale", "deformable", "deformable-refine")
DONE_NAME = "done.json"


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
    scaling_sizes: tuple[int, ...] = (256, 512, 768, 1024)
    command: str = ""

    def __post_init__(self):
        check_fields(self)
        for name in ("models", "seeds", "scaling_sizes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
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
    """What `run_convergence` returns: the runs, the per-model summary rows and the written files."""

    runs: list[RunRecord]
    summary: list[dict[str, Any]]
    scaling: list[dict[str, Any]]
    report: Path
    convergence_plot: Path
    scaling_plot: Path | None = None
    models: dict[str, Any] = field(default_factory=dict)


def base_train_config(config: ConvergenceConfig, data_dir: Path) -> TrainConfig:
    """The recipe every model shares: the `demo` recipe (AdamW 2e-3 for all parameters, 100 warm-up steps, cosine to
    5 %, bf16 autocast, flip + resize/crop augmentation) at `train_size`, with this experiment's budget."""
    base = TrainConfig.preset("demo")
    size = config.train_size
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
        optim=OptimConfig(lr=2e-3, lr_backbone=2e-3, schedule="cosine", warmup_steps=100, min_lr_ratio=0.05),
    )


def ensure_dataset(config: ConvergenceConfig, progress: bool = True) -> Path:
    """The experiment's data folder: `data_dir`, or the synthetic split rendered once into out_dir/data."""
    if config.data_dir is not None:
        return Path(config.data_dir)
    target = Path(config.out_dir) / "data"
    if (target / "val" / "annotations.json").is_file():
        return target
    from ..data.synthetic import make_dataset

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".data.", dir=target.parent))
    try:
        make_dataset(staging, config.train_images, config.val_images, config.image_size, config.data_seed)
        os.replace(staging, target)  # atomic; a concurrent experiment that finished first wins
    except OSError:
        if not (target / "val" / "annotations.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _run_one(train_config: TrainConfig, progress: bool) -> None:
    """Train one run to completion, resuming from its checkpoint if it has one; marks it done."""
    from ..training.engine import fit

    run_dir = Path(train_config.output_dir)
    saved_config = run_dir / "config.json"
    if (run_dir / "checkpoint.pth").is_file():
        saved = json.loads(saved_config.read_text())
        wanted = json.loads(json.dumps(train_config.to_dict()))
        saved["model"]["num_classes"] = wanted["model"]["num_classes"]  # training sets it from the data
        if saved != wanted:
            changed = sorted(k for k in wanted if saved.get(k) != wanted.get(k))
            raise ConfigError(
                f"{saved_config}: this run was started with other settings ({', '.join(changed)}); "
                "re-run the experiment with its original arguments, or choose another --out"
            )
        fit(train_config, resume=True, progress=progress)
    else:  # a fresh run; a folder left by a run that stopped before its first checkpoint is started over
        fit(train_config, progress=progress, overwrite=True)
    (run_dir / DONE_NAME).write_text(json.dumps({"done": True}) + "\n")


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
    base = base_train_config(config, data_dir)
    variants = [variant_train_config(spec, base) for spec in config.models]
    labels = [label for label, _ in variants]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"experiment convergence: model labels repeat in {', '.join(labels)}; give each a LABEL=")
    jobs = [
        (label, seed, dataclasses.replace(train, seed=seed, output_dir=str(out / "runs" / label / f"seed{seed}")))
        for label, train in variants
        for seed in config.seeds
    ]
    runs = []
    with tqdm(total=len(jobs), desc="experiment", unit="run", disable=not progress) as bar:
        for label, seed, job in jobs:
            bar.set_postfix_str(f"{label} seed {seed}")
            if train and not (Path(job.output_dir) / DONE_NAME).is_file():
                _run_one(job, progress)
            runs.append(_read_run(label, seed, Path(job.output_dir)))
            bar.update(1)

    from ..data.coco import CocoDetection
    from ..viz.convergence import plot_convergence, plot_scaling
    from .report import summarize_runs, write_report
    from .scaling import measure_scaling, model_costs

    num_classes = CocoDetection(data_dir / "train" / "images", data_dir / "train" / "annotations.json").num_classes
    models = {label: dataclasses.replace(variant.model, num_classes=num_classes) for label, variant in variants}
    costs = model_costs(models, config.train_size)
    summary = summarize_runs(runs, labels, _reference_label(variants), costs)
    scaling = measure_scaling(models, config.scaling_sizes, progress=progress) if config.scaling_sizes else []
    convergence_plot = plot_convergence(runs, labels, out / "convergence.png")
    scaling_plot = plot_scaling(scaling, out / "scaling.png") if scaling else None
    report = write_report(out / "report.md", config, data_dir, base, summary, scaling, runs)
    return ConvergenceResult(runs, summary, scaling, report, convergence_plot, scaling_plot, models)


def _reference_label(variants: list[tuple[str, TrainConfig]]) -> str:
    """The first DETR variant, else the first model."""
    from ..models.detr_config import DetrConfig

    for label, train in variants:
        if isinstance(train.model, DetrConfig):
            return label
    return variants[0][0]
