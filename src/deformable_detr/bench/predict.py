"""`bench predict`: images/s end to end (decode JPEG -> preprocess -> model -> postprocess), same weights.

Methods, all on the same JPEG files and the same random weights (an HF model perturbed so every path
matters, written with `save_pretrained`, read by both sides):

    ours-fp32          `pipeline.run.predict(model, paths)` (deformable_detr.load of the HF folder), eager float32
    ours-bf16          the same with `amp=True` (bfloat16 autocast)
    ours-compile       the same through `deformable_detr.pipeline.compiled` (torch.compile; CUDA graphs
                       on a GPU; shape buckets), float32
    ours-compile-bf16  the same with `amp=True`
    onnxruntime        our preprocessing, a padded batch + padding_mask through the exported ONNX file
                       (CPUExecutionProvider, so CPU only), our postprocess
    hf                 `DeformableDetrImageProcessor` (same resize rule) + `DeformableDetrForObjectDetection`
                       + `post_process_object_detection`

For every (shorter side, batch) pair each method first runs once (timed: "first_call_s", which for the
compiled methods includes compiling that shape), then the methods run interleaved (one call each per
round) and the minimum over rounds is reported as images/s and ms per image. The model alone is timed the
same way on inputs decoded and preprocessed beforehand ("forward_ms_per_image": our `model_outputs`, HF's
model call, the onnxruntime session), and our other methods' outputs are compared with ours-fp32's on those
inputs ("max_abs_diff_vs_ours_fp32"). On CUDA every timing ends with a synchronize. No assertions on time.

    from deformable_detr.bench.predict import run_predict_benchmark, format_predict_benchmark
    print(format_predict_benchmark(run_predict_benchmark(smoke=True)))
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..pipeline.contract import Detector
from ..util.timer import time_once
from .harness import header, interleaved_times, summarize
from .hf_reference import random_hf_model
from .predict_methods import Method, methods_for

METHODS = ("ours-fp32", "ours-bf16", "ours-compile", "ours-compile-bf16", "onnxruntime", "hf")
COMPILED = ("ours-compile", "ours-compile-bf16")
CPU_ONLY = ("onnxruntime",)


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


def onnx_sampling_bytes(model: Detector, batch: int, height: int, width: int) -> int:
    """Bytes of the largest tensor the exported gather-form sampling builds in one encoder layer.

    The gathered corners, (B * M * Lq, L * P * 4, D) float32 with Lq the encoder's tokens, for the
    multi-scale model of this benchmark (levels at strides 8, 16, 32, 64 of a `height` x `width` input).
    onnxruntime holds about three times this at its peak (the 800 px batch-8 run was killed at 24 GB).
    0 for a detector without deformable attention (the contract's `attention_backend` is None: DETR),
    whose export has no gather-form sampling.
    """
    if model.attention_backend is None:
        return 0
    config = model.config
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


def run_predict_benchmark(
    sizes: tuple[int, ...] = (512, 800),
    batch_sizes: tuple[int, ...] = (1, 8),
    repeats: int = 3,
    threads: int = 2,
    smoke: bool = False,
    methods: tuple[str, ...] | None = None,
    progress=None,
    on_cell=None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Images/s (and ms per image, end to end and the model alone) of each method, per (shorter side, batch).

    Args:
        sizes: shorter sides the images are resized to (min_size; max_size = 1333 / 800 of it, the paper's ratio).
        batch_sizes: images per call.
        repeats: interleaved timed rounds after one first (warm-up) call; the minimum is reported.
        threads: intra-op threads of torch and onnxruntime.
        smoke: tiny model (checks the command in seconds).
        methods: a subset of METHODS; None = all that run on `device` (onnxruntime runs on the CPU only),
            without the compiled ones with `smoke`.
        progress: optional callable(str).
        on_cell: optional callable(result so far), called after every (size, batch) cell, with "complete"
            False until the last one: a run killed midway (e.g. out of memory) keeps what it measured.
        device: "cpu", "cuda" or "cuda:N": where our models and HF's run.

    Returns:
        {"header", "setup", "results": [{"size", "batch", "method", "images_per_s", "ms_per_image",
         "first_call_s", "seconds": summary, "forward_ms_per_image", "forward_seconds": summary, and for ours
         with ours-fp32 in the run "max_abs_diff_vs_ours_fp32": {"pred_logits", "pred_boxes"} of the model alone}],
         "compiled": {"summary", "compiles"} per size when a compiled method ran,
         "skipped": [{"size", "batch", "method", "why"}] (onnxruntime where its peak memory would not fit
         in MemAvailable: it would be killed and take the run with it),
         "ratios": per (size, batch): ours-fp32 vs hf, onnxruntime vs ours-fp32}.
    """
    import transformers

    from deformable_detr.inference.load import load
    from deformable_detr.interop.onnx import export_onnx

    on_gpu = torch.device(device).type == "cuda"
    methods = _checked_methods(methods, on_gpu, smoke)
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
            device=device,
            methods=list(methods),
            config="tiny (smoke)" if smoke else "default: R50, 4 levels, d 256, 6+6 layers, 300 queries",
            images="JPEG files 480x640 (HxW), decoded, resized to the shorter side, normalised",
            pipeline="decode -> preprocess -> model -> postprocess (threshold 0.5, top 100)",
        ),
        "results": [],
        "skipped": [],
    }
    sync = torch.cuda.synchronize if on_gpu else None
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        directory = os.path.join(tmp, "weights")
        say("writing identical random weights (HF save_pretrained)")
        random_hf_model(smoke).save_pretrained(directory)
        paths = _write_images(Path(tmp), max(batch_sizes), 480, 640)
        for size in sizes:
            models = {"eager": load(directory, device=device)}
            if set(COMPILED) & set(methods):
                models["compiled"] = load(directory, device=device, compile=True)
            for model in models.values():
                model.preprocess = dataclasses.replace(
                    model.preprocess, min_size=size, max_size=round(size * 1333 / 800)
                )
            onnx_path = os.path.join(tmp, f"model_{size}.onnx")
            width = round(size * 640 / 480)  # the 480x640 files resized to this shorter side
            if "onnxruntime" in methods:
                say(f"{size} px: exporting ONNX")
                export_onnx(models["eager"], onnx_path, dynamic=True, batch_size=1, height=size, width=width)
            runs = methods_for(directory, onnx_path, models, threads, 0.5, methods, device)
            for batch in batch_sizes:
                cell_runs = dict(runs)
                if "onnxruntime" in cell_runs:
                    needed = 3 * onnx_sampling_bytes(models["eager"], batch, size, width)
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
                rows = _measure_cell(cell_runs, paths[:batch], repeats, sync, say)
                result["results"].extend({"size": size, "batch": batch, **row} for row in rows)
                if "compiled" in models:
                    runner = models["compiled"].compiled_inference
                    say(runner.summary())
                    result.setdefault("compiled", {})[str(size)] = {
                        "summary": runner.summary(),
                        "compiles": runner.compiles,
                    }
                result["ratios"], result["complete"] = _ratios(result["results"]), False
                if on_cell is not None:
                    on_cell(result)
    result["ratios"], result["complete"] = _ratios(result["results"]), True
    return result


def _checked_methods(methods: tuple[str, ...] | None, on_gpu: bool, smoke: bool) -> tuple[str, ...]:
    """The methods to run: by default all that run on the device, less the compiled ones with `smoke` (minutes
    of compiling on a CPU); named ones are checked."""
    if methods is None:
        return tuple(m for m in METHODS if not (on_gpu and m in CPU_ONLY) and not (smoke and m in COMPILED))
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if on_gpu and set(methods) & set(CPU_ONLY):
        raise ConfigError(
            f"{', '.join(sorted(set(methods) & set(CPU_ONLY)))} runs on the CPU only here; leave it out with a CUDA --device"
        )
    return tuple(methods)


def _measure_cell(runs: dict[str, Method], paths: list[str], repeats: int, sync, say) -> list[dict[str, Any]]:
    """One (size, batch) cell: each method's first call, then interleaved rounds end to end and of the model alone."""
    first = {}
    for name, method in runs.items():
        first[name] = time_once(lambda method=method: method.run(paths), sync)
        say(f"  {name}: first call {first[name]:.2f} s")
    times = interleaved_times(
        {name: (lambda method=method: method.run(paths)) for name, method in runs.items()},
        repeats=repeats,
        warmup=0,
        sync=sync,
    )
    prepared = {name: method.prepare(paths) for name, method in runs.items()}
    forwards = interleaved_times(prepared, repeats=repeats, warmup=1, sync=sync)
    differences = _differences({name: forward() for name, forward in prepared.items() if name.startswith("ours-")})
    batch = len(paths)
    return [
        {
            "method": name,
            "images_per_s": batch / min(seconds),
            "ms_per_image": 1e3 * min(seconds) / batch,
            "first_call_s": first[name],
            "seconds": summarize(seconds),
            "forward_ms_per_image": 1e3 * min(forwards[name]) / batch,
            "forward_seconds": summarize(forwards[name]),
            **({"max_abs_diff_vs_ours_fp32": differences[name]} if name in differences else {}),
        }
        for name, seconds in times.items()
    ]


def _differences(outputs: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, float]]:
    """Per method of ours, max |output - ours-fp32's| of the raw logits and the normalized boxes, same inputs."""
    reference = outputs.get("ours-fp32")
    if reference is None:
        return {}
    return {
        name: {
            key: (out[key].float() - reference[key].float()).abs().max().item() for key in ("pred_logits", "pred_boxes")
        }
        for name, out in outputs.items()
    }


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
    """Two tables: images/s end to end per (size, batch) with the two ratios, then per method the ms per image
    end to end and of the model alone, and the first call's seconds (compilation included)."""
    methods = [m for m in METHODS if any(r["method"] == m for r in result["results"])]
    speed = {(r["size"], r["batch"], r["method"]): r["images_per_s"] for r in result["results"]}
    head, setup = result["header"], result["setup"]
    where = setup.get("device", "cpu") + (f" ({head['gpu']})" if "gpu" in head else "")
    lines = [
        f"bench predict: {head['machine']}, {where}, {head['threads']} threads, load {head['load_average']}, "
        f"{setup['config']}; images/s end to end (min of {setup['repeats']} interleaved rounds)",
        " size  batch  " + "  ".join(f"{m:>17}" for m in methods) + "  ours/hf  ours/ort",
    ]
    for ratio in result["ratios"]:
        key = (ratio["size"], ratio["batch"])
        cells = "  ".join(f"{speed.get((*key, m), float('nan')):17.2f}" for m in methods)
        lines.append(
            f"{key[0]:5d}  {key[1]:5d}  {cells}  {ratio.get('ours_fp32_over_hf', float('nan')):7.2f}"
            f"  {ratio.get('ours_fp32_over_onnxruntime', float('nan')):8.2f}"
        )
    lines.append(" size  batch  method             ms/image  model ms/image  first call s")
    for row in result["results"]:
        lines.append(
            f"{row['size']:5d}  {row['batch']:5d}  {row['method']:<17}  {row['ms_per_image']:8.2f}"
            f"  {row['forward_ms_per_image']:14.2f}  {row['first_call_s']:12.2f}"
        )
    lines += [
        f"{row['size']:5d}  {row['batch']:5d}  {row['method']:<17}  max |d| vs ours-fp32: logits "
        f"{row['max_abs_diff_vs_ours_fp32']['pred_logits']:.2e}, boxes {row['max_abs_diff_vs_ours_fp32']['pred_boxes']:.2e}"
        for row in result["results"]
        if row["method"] != "ours-fp32" and "max_abs_diff_vs_ours_fp32" in row
    ]
    lines += [compiled["summary"] for compiled in result.get("compiled", {}).values()]
    lines += [
        f"skipped {s['method']} at {s['size']} px, batch {s['batch']}: {s['why']}" for s in result.get("skipped", [])
    ]
    return "\n".join(lines)
