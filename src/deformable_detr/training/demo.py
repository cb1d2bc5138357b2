"""The end-to-end demo: synthetic data -> train the `demo` preset (CPU, or CUDA) -> evaluate -> pictures.

result = run_demo("demo_out")   # what `deformable-detr demo` and `make demo` run
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint.files import atomic_write_text
from ..data.coco import CocoDetection
from ..util.timer import Timer
from ..viz.detections import draw_detections, save_grid
from .config import TrainConfig
from .engine import TrainResult, fit

# The demo dataset: the synthetic shapes (6 classes, 1-12 objects, about half small).
DEMO_DATA = dict(num_train=2000, num_val=250, image_size=256, seed=0)
DEMO_DIR = Path("demo_out")
CUDA_WORKERS = (
    4  # DataLoader workers on CUDA: a GPU step of the demo model is faster than decoding 8 images in one process
)


@dataclass
class DemoResult:
    """Where the demo put everything, and what it measured."""

    data_dir: Path
    train: TrainResult
    predictions_image: Path
    metrics_file: Path
    seconds: float


def ensure_dataset(data_dir: Path, data: dict | None = None, progress: bool = True) -> None:
    """Render the synthetic dataset (`make_dataset(**data)`, default DEMO_DATA) into `data_dir` unless both splits are there."""
    data = data or DEMO_DATA
    if all((data_dir / split / "annotations.json").is_file() for split in ("train", "val")):
        return
    from tqdm import tqdm

    from ..data.synthetic import make_dataset

    with tqdm(
        total=data["num_train"] + data["num_val"], unit="img", desc="rendering dataset", disable=not progress
    ) as bar:
        make_dataset(data_dir, **data, progress=bar.update)


def draw_validation_predictions(
    checkpoint_path: Path, data_dir: Path, out_path: Path, count: int = 8, score_threshold: float = 0.3
) -> Path:
    """Grid of the first `count` validation images with predictions (coloured) and ground truth (white)."""
    from ..inference.load import load
    from ..pipeline.decode import load_rgb_image

    model = load(checkpoint_path)
    val = CocoDetection(data_dir / "val" / "images", data_dir / "val" / "annotations.json")
    paths = [val.images_dir / info["file_name"] for info in val.images[:count]]
    names = [category["name"] for category in model.categories]
    tiles = []
    for index, (path, found) in enumerate(zip(paths, model.predict(paths, threshold=score_threshold))):
        image = load_rgb_image(path)
        info = val.images[index]
        target = val.load_target(index, info.get("width", image.width), info.get("height", image.height))
        tiles.append(
            draw_detections(
                image,
                found.boxes.tolist(),
                found.labels.tolist(),
                found.scores.tolist(),
                names,
                ground_truth_xyxy=target["boxes"].tolist(),
            )
        )
    return save_grid(tiles, out_path)


def demo_config(
    out_dir: str | Path = DEMO_DIR,
    data: dict | None = None,
    minutes: float | None = None,
    max_steps: int | None = None,
    threads: int | None = None,
    device: str = "cpu",
) -> TrainConfig:
    """The `demo` preset writing to OUT/train, reading OUT/data.

    Training length: the preset's fixed step count (cosine schedule over the steps, so the result
    does not depend on how busy the machine is), or `max_steps` steps, or with `minutes` a time
    budget instead (the schedule then runs over the budget; a busy machine gets fewer steps).
    `device` "cuda[:N]" trains there (bf16 autocast as on the CPU) with `CUDA_WORKERS` DataLoader workers.
    """
    data = data or DEMO_DATA
    out_dir = Path(out_dir)
    config = TrainConfig.preset("demo")
    config = dataclasses.replace(
        config,
        data_dir=str(out_dir / "data"),
        output_dir=str(out_dir / "train"),
        batch_size=min(config.batch_size, data["num_train"]),
    )
    if minutes is not None:
        config = dataclasses.replace(config, max_minutes=minutes, max_steps=max_steps)
    elif max_steps is not None:
        config = dataclasses.replace(config, max_steps=max_steps)
    if threads is not None:
        config = dataclasses.replace(config, threads=threads)
    if device != "cpu":
        config = dataclasses.replace(config, device=device, workers=CUDA_WORKERS)
    return config


def run_demo(
    out_dir: str | Path = DEMO_DIR,
    data: dict | None = None,
    config: TrainConfig | None = None,
    minutes: float | None = None,
    max_steps: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> DemoResult:
    """Make the data if absent, train the `demo` preset, evaluate on val, draw predictions.

    Args:
        data: `make_dataset` arguments (num_train, num_val, image_size, seed); default DEMO_DATA.
        config: training config (default `demo_config(out_dir, data, minutes, max_steps, threads, device)`).

    A new demo replaces the previous one's training run in OUT/train (the dataset is kept).
    Files: OUT/data (dataset), OUT/train/{checkpoint.pth, metrics.jsonl, curves.png, config.json},
    OUT/metrics.json (final val metrics), OUT/val_predictions.png.
    """
    timer = Timer().__enter__()  # the whole demo, read at the end
    data = data or DEMO_DATA
    out_dir = Path(out_dir)
    data_dir = out_dir / "data"
    ensure_dataset(data_dir, data, progress)
    config = config or demo_config(out_dir, data, minutes, max_steps, threads, device)
    result = fit(config, progress=progress, overwrite=True)
    metrics_file = out_dir / "metrics.json"
    atomic_write_text(
        metrics_file,
        json.dumps({**result.metrics, "steps": result.steps, "train_seconds": result.train_seconds}, indent=2) + "\n",
    )
    threads = torch.get_num_threads()
    image = draw_validation_predictions(result.checkpoint, data_dir, out_dir / "val_predictions.png")
    torch.set_num_threads(threads)
    return DemoResult(data_dir, result, image, metrics_file, timer.elapsed)
