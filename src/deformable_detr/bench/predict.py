"""`bench predict`: images/s end to end (decode JPEG -> preprocess -> model -> postprocess), same weights.

Methods, all on the same JPEG files and the same random weights (an HF model perturbed so every path
matters, written with `save_pretrained`, read by both sides):

    ours-fp32      `model.predict(paths)` (deformable_detr.load of the HF folder), eager float32
    ours-bf16      the same with `amp=True` (bfloat16 autocast)
    ours-compile   the same with `torch.compile` on the backbone and the transformer
    onnxruntime    our preprocessing, a padded batch + padding_mask through the exported ONNX file
                   (CPUExecutionProvider), top-k postprocessing in numpy
    hf             `DeformableDetrImageProcessor` (same resize rule) + `DeformableDetrForObjectDetection`
                   + `post_process_object_detection`

For every (shorter side, batch) pair the methods run interleaved (one call each per round) and the minimum
over rounds is reported as images/s. No assertions on time anywhere.

    from deformable_detr.bench.predict import run_predict_benchmark, format_predict_benchmark
    print(format_predict_benchmark(run_predict_benchmark(smoke=True)))
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .harness import header, interleaved_times, summarize
from .hf_reference import random_hf_model

METHODS = ("ours-fp32", "ours-bf16", "ours-compile", "onnxruntime", "hf")


def _write_images(directory: Path, count: int, height: int, width: int) -> list[str]:
    """`count` JPEG files of smooth random content (so the codec does real work), (height, width) pixels."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-20, 21, (height, width, 3))
        path = directory / f"image_{index}.jpg"
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def numpy_postprocess(
    logits: np.ndarray,
    boxes_cxcywh: np.ndarray,
    sizes_hw: list[tuple[int, int]],
    top_k: int = 100,
    threshold: float = 0.5,
) -> list[dict[str, np.ndarray]]:
    """The model's postprocess in numpy: sigmoid, top-k over (query, class), cxcywh -> xyxy pixels.

    Args:
        logits: (B, Lq, K); boxes_cxcywh: (B, Lq, 4) in [0, 1] of each image's valid region.
        sizes_hw: per image, (height, width) of the original image in pixels.

    Returns:
        per image {"scores" (N,), "labels" (N,), "boxes" (N, 4) xyxy pixels} with score >= threshold.
    """
    num_classes = logits.shape[-1]
    scores = 1 / (1 + np.exp(-logits.reshape(len(logits), -1)))  # (B, Lq*K)
    results = []
    for image_scores, image_boxes, (height, width) in zip(scores, boxes_cxcywh, sizes_hw):
        top = np.argsort(-image_scores)[:top_k]
        top = top[image_scores[top] >= threshold]
        cx, cy, w, h = image_boxes[top // num_classes].T
        xyxy = np.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1) * [width, height, width, height]
        results.append({"scores": image_scores[top], "labels": top % num_classes, "boxes": xyxy})
    return results


def _onnx_predict(session, model, paths: list[str], threshold: float) -> list[dict[str, np.ndarray]]:
    """decode -> our preprocessing -> padded batch + padding_mask -> onnxruntime -> numpy postprocess."""
    from deformable_detr.models.preprocess import preprocess_image, to_rgb_image

    pictures = [to_rgb_image(path) for path in paths]
    tensors = [preprocess_image(picture, model.preprocess).numpy() for picture in pictures]  # (3, h_i, w_i)
    height, width = max(t.shape[1] for t in tensors), max(t.shape[2] for t in tensors)
    images = np.zeros((len(tensors), 3, height, width), np.float32)
    padding_mask = np.ones((len(tensors), height, width), bool)
    for index, tensor in enumerate(tensors):
        images[index, :, : tensor.shape[1], : tensor.shape[2]] = tensor
        padding_mask[index, : tensor.shape[1], : tensor.shape[2]] = False
    logits, boxes = session.run(None, {"images": images, "padding_mask": padding_mask})
    return numpy_postprocess(logits, boxes, [(p.height, p.width) for p in pictures], threshold=threshold)


def onnx_sampling_bytes(config, batch: int, height: int, width: int) -> int:
    """Bytes of the largest tensor the exported gather-form sampling builds in one encoder layer.

    The gathered corners, (B * M * Lq, L * P * 4, D) float32 with Lq the encoder's tokens, for the
    multi-scale model of this benchmark (levels at strides 8, 16, 32, 64 of a `height` x `width` input).
    onnxruntime holds about three times this at its peak (the 800 px batch-8 run was killed at 24 GB).
    """
    levels, heads, points = config.num_feature_levels, config.n_heads, config.enc_n_points
    strides = [2 ** (3 + level) for level in range(levels)]
    tokens = sum(math.ceil(height / stride) * math.ceil(width / stride) for stride in strides)
    return batch * heads * tokens * levels * points * 4 * (config.d_model // heads) * 4


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _compiled(model):
    """A copy of `model` whose backbone and transformer run through torch.compile."""
    import copy

    compiled = copy.deepcopy(model)
    compiled.backbone = torch.compile(compiled.backbone, dynamic=False)
    compiled.transformer = torch.compile(compiled.transformer, dynamic=False)
    return compiled


def _methods(
    directory: str, onnx_path: str, model, threads: int, threshold: float, methods: tuple[str, ...]
) -> dict[str, Callable[[list[str]], object]]:
    """name -> callable(paths) running the whole pipeline for one batch of files."""
    runs: dict[str, Callable[[list[str]], object]] = {}
    if "ours-fp32" in methods:
        runs["ours-fp32"] = lambda paths: model.predict(paths, threshold=threshold, batch_size=len(paths))
    if "ours-bf16" in methods:
        runs["ours-bf16"] = lambda paths: model.predict(paths, threshold=threshold, batch_size=len(paths), amp=True)
    if "ours-compile" in methods:
        compiled = _compiled(model)
        runs["ours-compile"] = lambda paths: compiled.predict(paths, threshold=threshold, batch_size=len(paths))
    if "onnxruntime" in methods:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        runs["onnxruntime"] = lambda paths: _onnx_predict(session, model, paths, threshold)
    if "hf" in methods:
        from PIL import Image
        from transformers import DeformableDetrForObjectDetection, DeformableDetrImageProcessor

        hf_model = DeformableDetrForObjectDetection.from_pretrained(directory).eval()
        processor = DeformableDetrImageProcessor(
            size={"shortest_edge": model.preprocess.min_size, "longest_edge": model.preprocess.max_size},
            image_mean=list(model.preprocess.mean),
            image_std=list(model.preprocess.std),
        )

        def hf_predict(paths):
            pictures = [Image.open(path).convert("RGB") for path in paths]
            with torch.inference_mode():
                inputs = processor(images=pictures, return_tensors="pt")
                outputs = hf_model(**inputs)
                return processor.post_process_object_detection(
                    outputs, threshold=threshold, target_sizes=[(p.height, p.width) for p in pictures]
                )

        runs["hf"] = hf_predict
    return runs


def run_predict_benchmark(
    sizes: tuple[int, ...] = (512, 800),
    batch_sizes: tuple[int, ...] = (1, 8),
    repeats: int = 3,
    threads: int = 2,
    smoke: bool = False,
    methods: tuple[str, ...] = METHODS,
    progress=None,
    on_cell=None,
) -> dict[str, Any]:
    """Images/s of each method end to end, for every (shorter side, batch size).

    Args:
        sizes: shorter sides the images are resized to (min_size; max_size = 1333 / 800 of it, the paper's ratio).
        batch_sizes: images per call.
        repeats: interleaved timed rounds after one warm-up round; the minimum is reported.
        threads: intra-op threads of torch and onnxruntime.
        smoke: tiny model (checks the command in seconds); torch.compile is then left out.
        methods: a subset of METHODS.
        progress: optional callable(str).
        on_cell: optional callable(result so far), called after every (size, batch) cell, with "complete"
            False until the last one: a run killed midway (e.g. out of memory) keeps what it measured.

    Returns:
        {"header", "setup", "results": [{"size", "batch", "method", "images_per_s", "seconds": summary}],
         "skipped": [{"size", "batch", "method", "why"}] (onnxruntime where its peak memory would not fit
         in MemAvailable: it would be killed and take the run with it),
         "ratios": per (size, batch): ours-fp32 vs hf, onnxruntime vs ours-fp32}.
    """
    import transformers

    from deformable_detr.inference.loader import load
    from deformable_detr.interop.onnx import export_onnx

    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if smoke:
        methods = tuple(m for m in methods if m != "ours-compile")
    say = progress or (lambda message: None)
    torch.set_num_threads(threads)
    result: dict[str, Any] = {
        "header": header(
            threads=threads, transformers=transformers.__version__, onnxruntime=__import__("onnxruntime").__version__
        ),
        "setup": dict(
            sizes=list(sizes),
            batch_sizes=list(batch_sizes),
            repeats=repeats,
            warmup=1,
            threads=threads,
            config="tiny (smoke)" if smoke else "default: R50, 4 levels, d 256, 6+6 layers, 300 queries",
            images="JPEG files 480x640 (HxW), decoded, resized to the shorter side, normalised",
            pipeline="decode -> preprocess -> model -> postprocess (threshold 0.5, top 100)",
        ),
        "results": [],
        "skipped": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        directory = os.path.join(tmp, "weights")
        say("writing identical random weights (HF save_pretrained)")
        random_hf_model(smoke).save_pretrained(directory)
        paths = _write_images(Path(tmp), max(batch_sizes), 480, 640)
        for size in sizes:
            model = load(directory)
            model.preprocess = dataclasses.replace(model.preprocess, min_size=size, max_size=round(size * 1333 / 800))
            onnx_path = os.path.join(tmp, f"model_{size}.onnx")
            width = round(size * 640 / 480)  # the 480x640 files resized to this shorter side
            if "onnxruntime" in methods:
                say(f"{size} px: exporting ONNX")
                export_onnx(model, onnx_path, dynamic=True, batch_size=1, height=size, width=width)
            runs = _methods(directory, onnx_path, model, threads, 0.5, methods)
            for batch in batch_sizes:
                cell_runs = dict(runs)
                if "onnxruntime" in cell_runs:
                    needed = 3 * onnx_sampling_bytes(model.config, batch, size, width)
                    available = available_bytes()
                    if available is not None and needed > available:
                        reason = (
                            f"needs ~{needed / 2**30:.0f} GiB (the exported sampling materialises every corner), "
                            f"{available / 2**30:.0f} GiB available"
                        )
                        say(f"{size} px, batch {batch}: onnxruntime skipped: {reason}")
                        result["skipped"].append({"size": size, "batch": batch, "method": "onnxruntime", "why": reason})
                        del cell_runs["onnxruntime"]
                say(f"{size} px, batch {batch}: {', '.join(cell_runs)} x {repeats} rounds")
                batch_paths = paths[:batch]
                times = interleaved_times(
                    {name: (lambda fn=fn, batch_paths=batch_paths: fn(batch_paths)) for name, fn in cell_runs.items()},
                    repeats=repeats,
                )
                for name, seconds in times.items():
                    result["results"].append(
                        {
                            "size": size,
                            "batch": batch,
                            "method": name,
                            "images_per_s": batch / min(seconds),
                            "seconds": summarize(seconds),
                        }
                    )
                result["ratios"], result["complete"] = _ratios(result["results"]), False
                if on_cell is not None:
                    on_cell(result)
    result["ratios"], result["complete"] = _ratios(result["results"]), True
    return result


def _ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    speed = {(r["size"], r["batch"], r["method"]): r["images_per_s"] for r in rows}
    ratios = []
    for size, batch in sorted({(r["size"], r["batch"]) for r in rows}):
        entry = {"size": size, "batch": batch}
        ours = speed.get((size, batch, "ours-fp32"))
        if ours and (size, batch, "hf") in speed:
            entry["ours_fp32_over_hf"] = ours / speed[size, batch, "hf"]
        if ours and (size, batch, "onnxruntime") in speed:
            entry["ours_fp32_over_onnxruntime"] = ours / speed[size, batch, "onnxruntime"]
        ratios.append(entry)
    return ratios


def format_predict_benchmark(result: dict[str, Any]) -> str:
    """A table: one row per (size, batch), images/s per method, and the two ratios."""
    methods = [m for m in METHODS if any(r["method"] == m for r in result["results"])]
    speed = {(r["size"], r["batch"], r["method"]): r["images_per_s"] for r in result["results"]}
    head = result["header"]
    lines = [
        f"bench predict: {head['machine']}, {head['threads']} threads, load {head['load_average']}, "
        f"{result['setup']['config']}; images/s end to end (min of {result['setup']['repeats']} interleaved rounds)",
        " size  batch  " + "  ".join(f"{m:>12}" for m in methods) + "  ours/hf  ours/ort",
    ]
    for ratio in result["ratios"]:
        key = (ratio["size"], ratio["batch"])
        cells = "  ".join(f"{speed.get((*key, m), float('nan')):12.2f}" for m in methods)
        lines.append(
            f"{key[0]:5d}  {key[1]:5d}  {cells}  {ratio.get('ours_fp32_over_hf', float('nan')):7.2f}"
            f"  {ratio.get('ours_fp32_over_onnxruntime', float('nan')):8.2f}"
        )
    lines += [
        f"skipped {s['method']} at {s['size']} px, batch {s['batch']}: {s['why']}" for s in result.get("skipped", [])
    ]
    return "\n".join(lines)
