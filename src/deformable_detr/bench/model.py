"""`bench model`: our `DeformableDETR` vs Hugging Face's `DeformableDetrForObjectDetection`, same weights, CPU or CUDA.

Both models get identical weights: an HF model of the given size (native HF ResNet backbone; timm is not
installed) is randomly initialised, its zero-initialised transformer/head tensors get small random values
so every path matters, and it is written with `save_pretrained`. Each measurement then runs in its own
subprocess (so peak RSS belongs to one model and one dtype): HF loads the directory with `from_pretrained`,
ours with `deformable_detr.load`. Each worker does one warm-up forward and `repeats` timed forwards of one
image (eval, `torch.inference_mode`, `threads` intra-op threads) and saves its outputs; the parent compares
them (max |Δ| of logits and boxes, fp32 and bf16-autocast box drift against fp32). With a CUDA `device` both
models run there (each timing ends with a synchronize; peak CUDA memory is reported too).

    from deformable_detr.bench.model import run_model_benchmark, format_model_benchmark
    result = run_model_benchmark()           # minutes of CPU at the default R50 config, 800x1066
    print(format_model_benchmark(result))

No assertions on time anywhere; the CLI (`deformable-detr bench model`) prints the table and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import torch

from deformable_detr.errors import ConfigError

from .harness import header, peak_rss_mib, rss_mib
from .hf_reference import random_hf_model


def _worker(
    impl: str,
    dtype: str,
    directory: str,
    height: int,
    width: int,
    repeats: int,
    threads: int,
    out: str,
    device: str = "cpu",
) -> None:
    """One measurement in this process: build `impl`, warm up, time `repeats` forwards, save outputs + stats."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    images = torch.randn(1, 3, height, width).to(device)  # (B, 3, H, W) normalized, no padding
    on_gpu = torch.device(device).type == "cuda"
    if impl == "hf":
        from transformers import DeformableDetrForObjectDetection

        model = DeformableDetrForObjectDetection.from_pretrained(directory).eval().to(device)

        def forward():
            output = model(pixel_values=images)
            return output.logits, output.pred_boxes
    else:
        from deformable_detr.inference.loader import load

        model = load(directory, device=device)

        def forward():
            output = model(images)
            return output["pred_logits"], output["pred_boxes"]

    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    rss_before = rss_mib()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.inference_mode(), autocast:
        for repeat in range(repeats + 1):  # the first run warms up (kernel caches, allocator) and is not timed
            sync()
            start = time.perf_counter()
            logits, boxes = forward()
            sync()
            if repeat:
                times.append(time.perf_counter() - start)
    peak_mb = peak_rss_mib()
    torch.save(
        {
            "pred_logits": logits.float().cpu(),
            "pred_boxes": boxes.float().cpu(),
            "times_s": times,
            "peak_rss_mb": peak_mb,
            "rss_before_forward_mb": rss_before,
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None,
        },
        out,
    )


def _run_worker(
    impl: str, dtype: str, directory: str, height: int, width: int, repeats: int, threads: int, device: str
) -> dict:
    out = os.path.join(directory, f"{impl}_{dtype}.pt")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [
        sys.executable,
        "-m",
        "deformable_detr.bench.model",
        impl,
        dtype,
        directory,
        str(height),
        str(width),
        str(repeats),
        str(threads),
        out,
        device,
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    if completed.returncode:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ChildProcessError(f"bench model: the {impl} {dtype} worker failed: {tail[0]}")
    return torch.load(out, weights_only=True)


def run_model_benchmark(
    height: int = 800,
    width: int = 1066,
    repeats: int = 3,
    threads: int = 2,
    smoke: bool = False,
    progress=None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Time and compare our model and HF's at the default config (or a tiny one with `smoke`).

    Args:
        height, width: the one input image, pixels.
        repeats: timed forwards per measurement (after one warm-up); the minimum is reported (and the median).
        threads: intra-op threads of each worker (torch.set_num_threads, OMP/MKL_NUM_THREADS).
        smoke: tiny model instead of R50 / d 256 / 6+6 layers (checks the script in seconds).
        progress: optional callable(str) told what is being measured.
        device: "cpu", "cuda" or "cuda:N": where both models run.

    Returns:
        dict with "header", "setup", "ours"/"hf" (fp32 and bf16 min/median/all times in ms, peak RSS MB, RSS growth
        during forward MB, and on CUDA peak CUDA memory MB), "speedup_fp32", "speedup_bf16", "max_abs_diff" (logits, boxes; ours vs HF fp32)
        and "bf16_box_drift" (max |boxes_bf16 - boxes_fp32| per implementation).
    """
    try:
        import transformers
    except ImportError as error:
        raise ConfigError("bench model needs Hugging Face transformers: pip install transformers") from error
    say = progress or (lambda message: None)
    result: dict[str, Any] = {
        "header": header(threads=threads, transformers=transformers.__version__),
        "setup": dict(
            image=[height, width],
            batch=1,
            threads=threads,
            repeats=repeats,
            warmup=1,
            device=device,
            tf32={"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
            config="tiny (smoke)" if smoke else "default: R50, 4 levels, d 256, 6+6 layers, 300 queries, 91 classes",
            mode="eval, torch.inference_mode, batch of one unpadded image, one subprocess per run",
        ),
    }
    with tempfile.TemporaryDirectory(prefix="bench_model_") as directory:
        say("writing identical random weights (HF save_pretrained)")
        random_hf_model(smoke).save_pretrained(directory)
        runs = {}
        for impl in ("ours", "hf"):
            for dtype in ("float32", "bfloat16"):
                say(f"{impl} {dtype}: {repeats} timed forwards")
                runs[impl, dtype] = _run_worker(impl, dtype, directory, height, width, repeats, threads, device)
    for impl in ("ours", "hf"):
        fp32, bf16 = runs[impl, "float32"], runs[impl, "bfloat16"]
        result[impl] = dict(
            fp32_ms=1e3 * min(fp32["times_s"]),
            fp32_median_ms=1e3 * statistics.median(fp32["times_s"]),
            fp32_ms_all=[1e3 * t for t in fp32["times_s"]],
            bf16_ms=1e3 * min(bf16["times_s"]),
            bf16_median_ms=1e3 * statistics.median(bf16["times_s"]),
            bf16_ms_all=[1e3 * t for t in bf16["times_s"]],
            peak_rss_mb=fp32["peak_rss_mb"],
            forward_rss_growth_mb=max(0.0, fp32["peak_rss_mb"] - fp32["rss_before_forward_mb"]),
            bf16_peak_rss_mb=bf16["peak_rss_mb"],
            peak_cuda_mb=fp32.get("peak_cuda_mb"),
            bf16_peak_cuda_mb=bf16.get("peak_cuda_mb"),
        )
    ours32, hf32 = runs["ours", "float32"], runs["hf", "float32"]
    result["speedup_fp32"] = result["hf"]["fp32_ms"] / result["ours"]["fp32_ms"]
    result["speedup_bf16"] = result["hf"]["bf16_ms"] / result["ours"]["bf16_ms"]
    result["max_abs_diff"] = {
        name: (ours32[name] - hf32[name]).abs().max().item() for name in ("pred_logits", "pred_boxes")
    }
    result["bf16_box_drift"] = {
        impl: (runs[impl, "bfloat16"]["pred_boxes"] - runs[impl, "float32"]["pred_boxes"]).abs().max().item()
        for impl in ("ours", "hf")
    }
    return result


def format_model_benchmark(result: dict[str, Any]) -> str:
    """The benchmark result as a plain-text table."""
    setup = result["setup"]
    ours, hf = result["ours"], result["hf"]
    memory_ratio = hf["peak_rss_mb"] / ours["peak_rss_mb"]
    drift = result["bf16_box_drift"]
    where = setup.get("device", "cpu") + (f" ({result['header']['gpu']})" if "gpu" in result["header"] else "")
    lines = [
        f"bench model: {setup['config']}; image {setup['image'][0]}x{setup['image'][1]}, {setup['threads']} threads, "
        f"min of {setup['repeats']} warm forwards; {result['header']['machine']}, {where}",
        f"{'':28}{'ours':>12}{'HF':>12}{'HF / ours':>12}",
        f"{'forward fp32 (ms)':28}{ours['fp32_ms']:12.0f}{hf['fp32_ms']:12.0f}{result['speedup_fp32']:11.2f}x",
        f"{'forward bf16 autocast (ms)':28}{ours['bf16_ms']:12.0f}{hf['bf16_ms']:12.0f}{result['speedup_bf16']:11.2f}x",
        f"{'peak RSS fp32 (MB)':28}{ours['peak_rss_mb']:12.0f}{hf['peak_rss_mb']:12.0f}{memory_ratio:11.2f}x",
        f"{'RSS growth in forward (MB)':28}{ours['forward_rss_growth_mb']:12.0f}{hf['forward_rss_growth_mb']:12.0f}",
    ]
    if ours.get("peak_cuda_mb") is not None:
        cuda_ratio = hf["peak_cuda_mb"] / ours["peak_cuda_mb"]
        lines.append(
            f"{'peak CUDA memory fp32 (MB)':28}{ours['peak_cuda_mb']:12.0f}{hf['peak_cuda_mb']:12.0f}{cuda_ratio:11.2f}x"
        )
    lines += [
        f"{'bf16 box drift (max abs)':28}{drift['ours']:12.2e}{drift['hf']:12.2e}",
        f"ours vs HF fp32: max |d logits| {result['max_abs_diff']['pred_logits']:.2e}, "
        f"max |d boxes| {result['max_abs_diff']['pred_boxes']:.2e}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # worker entry point used by _run_worker
    parser = argparse.ArgumentParser(description="internal: one bench-model measurement")
    for name in ("impl", "dtype", "directory"):
        parser.add_argument(name)
    for name in ("height", "width", "repeats", "threads"):
        parser.add_argument(name, type=int)
    parser.add_argument("out")
    parser.add_argument("device")
    args = parser.parse_args()
    _worker(
        args.impl,
        args.dtype,
        args.directory,
        args.height,
        args.width,
        args.repeats,
        args.threads,
        args.out,
        args.device,
    )
