"""Load test of `predict` over many files (issue: reliability, load): all good images processed, bad ones
listed, memory flat.

    deformable-detr bench predict-load [--images 1000] [--out benchmarks/results/predict_load.json]

Generates small images of mixed sizes (24-160 px sides) and formats (JPEG, PNG, BMP, WebP, TIFF; RGB,
grayscale, RGBA, palette, 16-bit grayscale) with a bad file every 37 (truncated JPEG, text with an image
extension, empty file), then runs `predict_files` with the tiny demo-sized model twice in one process:
over the first 10 % of the files, then over all of them. Flat memory: the peak RSS after the whole run
is about the peak after the first 10 %. The other benchmarks time one model call on tensors; this one is
the only measurement of `predict` over files: decoding, bad files, the output folder and memory over a long run.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deformable_detr.bench.harness import header, peak_rss_mib, rss_mib
from deformable_detr.inference.predict_files import predict_files
from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.pipeline.processor import PreprocessConfig
from deformable_detr.util.timer import Timer

FORMATS = [
    ("jpg", "RGB"),
    ("png", "RGB"),
    ("png", "L"),
    ("png", "RGBA"),
    ("png", "P"),
    ("bmp", "RGB"),
    ("webp", "RGB"),
    ("tif", "RGB"),
    ("png", "I;16"),
]
BAD_EVERY = 37


def make_images(folder: Path, count: int, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """`count` files in `folder` (nested 100 per sub-folder): (good files, bad files)."""
    rng = np.random.default_rng(seed)
    good, bad = [], []
    for index in range(count):
        sub = folder / f"{index // 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        if index % BAD_EVERY == BAD_EVERY - 1:
            kind = (index // BAD_EVERY) % 3
            path = sub / f"{index:05d}.{('jpg', 'png', 'jpg')[kind]}"
            if kind == 0:
                buffer = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
                path.write_bytes(buffer.getvalue()[: buffer.tell() // 3])  # truncated
            elif kind == 1:
                path.write_text("this is not an image\n")
            else:
                path.write_bytes(b"")
            bad.append(path)
            continue
        height, width = (int(v) for v in rng.integers(24, 161, 2))
        extension, mode = FORMATS[index % len(FORMATS)]
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        if mode == "I;16":
            image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)  # 16-bit grayscale
        elif mode != "RGB":
            image = image.convert(mode)
        path = sub / f"{index:05d}.{extension}"
        image.save(path)
        good.append(path)
    return good, bad


def tiny_model() -> DeformableDETR:
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny", num_classes=6)
    return DeformableDETR(config, preprocess=PreprocessConfig(min_size=128, max_size=192)).eval()


def run_predict_load(count: int, batch_size: int = 8, threads: int = 1) -> dict:
    """Generate `count` files, predict over 10 % then all of them; counts, RSS and time.

    Returns:
        {"header", "images", "batch_size", "model", "good_files", "bad_files", "runs": [{"run", "files",
        "processed", "failed", "bad_files_listed" (True when exactly the bad files were listed), "seconds",
        "peak_rss_mib_after", "rss_mib_after"}]}.
    """
    torch.set_num_threads(threads)
    model = tiny_model()
    result = {
        "header": header(threads=threads),
        "images": count,
        "batch_size": batch_size,
        "model": "tiny preset (1.7M parameters), 128 px shorter side",
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        good, bad = make_images(Path(scratch) / "images", count)
        first = sorted(good + bad)[: max(1, count // 10)]
        for name, inputs in (("first 10 %", first), ("all", [Path(scratch) / "images"])):
            with Timer() as timer:
                summary = predict_files(
                    model,
                    [str(p) for p in inputs],
                    Path(scratch) / f"out_{len(result['runs'])}",
                    threshold=0.5,
                    batch_size=batch_size,
                    progress=False,
                )
            expected_bad = [p for p in bad if p in first] if name != "all" else bad
            result["runs"].append(
                {
                    "run": name,
                    "files": summary.images + len(summary.errors),
                    "processed": summary.images,
                    "failed": len(summary.errors),
                    "bad_files_listed": sorted(e["file"] for e in summary.errors)
                    == sorted(str(p.resolve()) for p in expected_bad),
                    "seconds": round(timer.seconds, 1),
                    "peak_rss_mib_after": round(peak_rss_mib(), 1),
                    "rss_mib_after": round(rss_mib(), 1),
                }
            )
        result["good_files"], result["bad_files"] = len(good), len(bad)
    return result


def format_predict_load(result: dict) -> str:
    """The table `bench predict-load` prints: one row per run."""
    lines = [
        f"{'run':<12} {'files':>6} {'processed':>9} {'failed':>6} {'bad listed':>10} {'s':>7} {'peak RSS MiB':>12}"
    ]
    for r in result["runs"]:
        lines.append(
            f"{r['run']:<12} {r['files']:>6} {r['processed']:>9} {r['failed']:>6} {str(r['bad_files_listed']):>10} "
            f"{r['seconds']:>7} {r['peak_rss_mib_after']:>12}"
        )
    return "\n".join(lines)
