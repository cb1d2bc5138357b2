"""`bench model`: our `DeformableDETR` vs Hugging Face's `DeformableDetrForObjectDetection`, same weights, CPU or CUDA.

Both models get identical weights: an HF model of the given size (native HF ResNet backbone; timm is not
installed) is randomly initialised, its zero-initialised transformer/head tensors get small random values
so every path matters, and it is written with `save_pretrained`. The measurements then run in subprocesses:
HF loads the directory with `from_pretrained`, ours with `deformable_detr.load`. On the CPU each
(implementation, dtype) gets its own process, so peak RSS belongs to one model and one dtype; on CUDA each
implementation gets one process and the GPU's peak-memory counter is reset before each measurement. Per batch
size and dtype a worker does one warm-up forward and `repeats` timed forwards (eval, `torch.inference_mode`,
`threads` intra-op threads, CUDA synchronised) and saves its outputs; the parent compares them (max |Δ| of
logits and boxes, fp32 and bf16-autocast box drift against fp32).

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
from typing import Any

import torch

from deformable_detr.errors import ConfigError
from deformable_detr.util.devices import checked_device

from ..util.timer import Timer
from .harness import header, peak_rss_mib, reset_peak_rss_mib
from .hf_reference import random_hf_model


def _worker(
    impl: str,
    dtypes: list[str],
    batches: list[int],
    directory: str,
    height: int,
    width: int,
    repeats: int,
    threads: int,
    device: str,
    out: str,
) -> None:
    """Measurements in this process: build `impl` on `device`; per (dtype, batch) warm up, time `repeats`
    forwards, keep the outputs and the memory figures; save them all to `out`."""
    torch.set_num_threads(threads)
    torch_device = torch.device(device)
    cuda = torch_device.type == "cuda"
    if impl == "hf":
        from transformers import DeformableDetrForObjectDetection

        model = DeformableDetrForObjectDetection.from_pretrained(directory).eval().to(torch_device)

        def forward(images):
            output = model(pixel_values=images)
            return output.logits, output.pred_boxes
    else:
        from deformable_detr.inference.load import load

        model = load(directory, device=device)

        def forward(images):
            output = model(images)
            return output["pred_logits"], output["pred_boxes"]

    def synchronize():
        if cuda:
            torch.cuda.synchronize(torch_device)

    results = {}
    for batch in batches:
        torch.manual_seed(0)
        images = torch.randn(batch, 3, height, width).to(torch_device)  # (B, 3, H, W) normalized, no padding
        for dtype in dtypes:
            autocast = torch.autocast(torch_device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
            rss_before = reset_peak_rss_mib()  # so each measurement gets its own peak
            synchronize()
            gpu_before = torch.cuda.memory_allocated(torch_device) if cuda else 0
            if cuda:
                torch.cuda.reset_peak_memory_stats(torch_device)
            times = []
            with torch.inference_mode(), autocast:
                for repeat in range(repeats + 1):  # the first run warms up (kernel caches, allocator): not timed
                    with Timer(synchronize) as timer:
                        logits, boxes = forward(images)
                    if repeat:
                        times.append(timer.seconds)
            results[f"{dtype}/{batch}"] = {
                "pred_logits": logits.float().cpu(),
                "pred_boxes": boxes.float().cpu(),
                "times_s": times,
                "peak_rss_mb": peak_rss_mib(),
                "rss_before_forward_mb": rss_before,
                "peak_gpu_mib": torch.cuda.max_memory_allocated(torch_device) / 2**20 if cuda else None,
                "forward_gpu_mib": (torch.cuda.max_memory_allocated(torch_device) - gpu_before) / 2**20
                if cuda
                else None,
            }
            del logits, boxes
    torch.save(results, out)


def _run_worker(
    impl: str, dtypes: list[str], batches: list[int], directory: str, height, width, repeats, threads, device
) -> dict:
    out = os.path.join(directory, f"{impl}_{'_'.join(dtypes)}.pt")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [
        sys.executable,
        "-m",
        "deformable_detr.bench.model",
        impl,
        ",".join(dtypes),
        ",".join(map(str, batches)),
        directory,
        str(height),
        str(width),
        str(repeats),
        str(threads),
        device,
        out,
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    if completed.returncode:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ChildProcessError(f"bench model: the {impl} {'/'.join(dtypes)} worker failed: {tail[0]}")
    return torch.load(out, weights_only=True)


def run_model_benchmark(
    height: int = 800,
    width: int = 1066,
    repeats: int = 3,
    threads: int = 2,
    smoke: bool = False,
    progress=None,
    device: str = "cpu",
    batch_sizes: tuple[int, ...] = (1,),
) -> dict[str, Any]:
    """Time and compare our model and HF's at the default config (or a tiny one with `smoke`).

    Args:
        height, width: the input images, pixels.
        repeats: timed forwards per measurement (after one warm-up); the minimum is reported (and the median).
        threads: intra-op threads of each worker (torch.set_num_threads, OMP/MKL_NUM_THREADS).
        smoke: tiny model instead of R50 / d 256 / 6+6 layers (checks the script in seconds).
        progress: optional callable(str) told what is being measured.
        device: "cpu" (one subprocess per implementation and dtype, so peak RSS belongs to one of them) or
            "cuda[:N]" (one subprocess per implementation; GPU peak memory is reset before each measurement).
        batch_sizes: images per forward; each is measured.

    Returns:
        dict with "header", "setup", "ours"/"hf" (fp32 and bf16 min/median/all times in ms, peak RSS MB, RSS growth
        during forward MB; on CUDA peak GPU MiB) at the first batch size, "speedup_fp32", "speedup_bf16",
        "max_abs_diff" (logits, boxes; ours vs HF fp32) and "bf16_box_drift" (max |boxes_bf16 - boxes_fp32| per
        implementation) at that batch size, and "by_batch": the same figures for every batch size.
    """
    try:
        import transformers
    except ImportError as error:
        raise ConfigError("bench model needs Hugging Face transformers: pip install transformers") from error
    torch_device = checked_device(device)
    if not batch_sizes or min(batch_sizes) < 1:
        raise ConfigError(f"bench model: batch sizes {list(batch_sizes)} must be >= 1")
    say = progress or (lambda message: None)
    gpu = torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else None
    result: dict[str, Any] = {
        "header": header(threads=threads, transformers=transformers.__version__, device=device, gpu_name=gpu),
        "setup": dict(
            image=[height, width],
            batch=batch_sizes[0],
            batch_sizes=list(batch_sizes),
            device=device,
            threads=threads,
            repeats=repeats,
            warmup=1,
            config="tiny (smoke)" if smoke else "default: R50, 4 levels, d 256, 6+6 layers, 300 queries, 91 classes",
            mode="eval, torch.inference_mode, unpadded batch of random images, "
            + (
                "one subprocess per implementation and dtype"
                if torch_device.type == "cpu"
                else "one subprocess per implementation"
            ),
        ),
    }
    dtypes = ["float32", "bfloat16"]
    groups = [[dtype] for dtype in dtypes] if torch_device.type == "cpu" else [dtypes]
    with tempfile.TemporaryDirectory(prefix="bench_model_") as directory:
        say("writing identical random weights (HF save_pretrained)")
        random_hf_model(smoke).save_pretrained(directory)
        runs = {}
        for impl in ("ours", "hf"):
            for group in groups:
                say(f"{impl} {'/'.join(group)}, batch {'/'.join(map(str, batch_sizes))}: {repeats} timed forwards each")
                measured = _run_worker(
                    impl, group, list(batch_sizes), directory, height, width, repeats, threads, device
                )
                for key, value in measured.items():
                    dtype, batch = key.split("/")
                    runs[impl, dtype, int(batch)] = value
    result["by_batch"] = [_figures(runs, batch) for batch in batch_sizes]
    result.update({k: v for k, v in result["by_batch"][0].items() if k != "batch"})
    return result


def _figures(runs: dict, batch: int) -> dict[str, Any]:
    """Times, memory, speed-ups and output differences of one batch size."""
    figures: dict[str, Any] = {"batch": batch}
    for impl in ("ours", "hf"):
        fp32, bf16 = runs[impl, "float32", batch], runs[impl, "bfloat16", batch]
        figures[impl] = dict(
            fp32_ms=1e3 * min(fp32["times_s"]),
            fp32_median_ms=1e3 * statistics.median(fp32["times_s"]),
            fp32_ms_all=[1e3 * t for t in fp32["times_s"]],
            bf16_ms=1e3 * min(bf16["times_s"]),
            bf16_median_ms=1e3 * statistics.median(bf16["times_s"]),
            bf16_ms_all=[1e3 * t for t in bf16["times_s"]],
            peak_rss_mb=fp32["peak_rss_mb"],
            forward_rss_growth_mb=max(0.0, fp32["peak_rss_mb"] - fp32["rss_before_forward_mb"]),
            bf16_peak_rss_mb=bf16["peak_rss_mb"],
        )
        if fp32.get("peak_gpu_mib") is not None:
            figures[impl].update(
                fp32_peak_gpu_mib=fp32["peak_gpu_mib"],
                fp32_forward_gpu_mib=fp32["forward_gpu_mib"],
                bf16_peak_gpu_mib=bf16["peak_gpu_mib"],
                bf16_forward_gpu_mib=bf16["forward_gpu_mib"],
            )
    ours32, hf32 = runs["ours", "float32", batch], runs["hf", "float32", batch]
    figures["speedup_fp32"] = figures["hf"]["fp32_ms"] / figures["ours"]["fp32_ms"]
    figures["speedup_bf16"] = figures["hf"]["bf16_ms"] / figures["ours"]["bf16_ms"]
    figures["max_abs_diff"] = {
        name: (ours32[name] - hf32[name]).abs().max().item() for name in ("pred_logits", "pred_boxes")
    }
    figures["bf16_box_drift"] = {
        impl: (runs[impl, "bfloat16", batch]["pred_boxes"] - runs[impl, "float32", batch]["pred_boxes"])
        .abs()
        .max()
        .item()
        for impl in ("ours", "hf")
    }
    return figures


def format_model_benchmark(result: dict[str, Any]) -> str:
    """The benchmark result as a plain-text table (one block per batch size)."""
    setup = result["setup"]
    where = result["header"].get("gpu_name") or f"{setup['threads']} threads, {result['header']['machine']}"
    lines = [
        f"bench model: {setup['config']}; image {setup['image'][0]}x{setup['image'][1]} on {setup.get('device', 'cpu')} "
        f"({where}), min of {setup['repeats']} warm forwards"
    ]
    for figures in result.get("by_batch", [{**result, "batch": setup.get("batch", 1)}]):
        ours, hf = figures["ours"], figures["hf"]
        drift = figures["bf16_box_drift"]
        lines += [
            f"batch {figures['batch']}:",
            f"{'':28}{'ours':>12}{'HF':>12}{'HF / ours':>12}",
            f"{'forward fp32 (ms)':28}{ours['fp32_ms']:12.1f}{hf['fp32_ms']:12.1f}{figures['speedup_fp32']:11.2f}x",
            f"{'forward bf16 autocast (ms)':28}{ours['bf16_ms']:12.1f}{hf['bf16_ms']:12.1f}{figures['speedup_bf16']:11.2f}x",
        ]
        if "fp32_peak_gpu_mib" in ours:
            for dtype in ("fp32", "bf16"):
                key = f"{dtype}_peak_gpu_mib"
                lines.append(
                    f"{'peak GPU ' + dtype + ' (MiB)':28}{ours[key]:12.0f}{hf[key]:12.0f}{hf[key] / ours[key]:11.2f}x"
                )
        else:
            memory_ratio = hf["peak_rss_mb"] / ours["peak_rss_mb"]
            lines += [
                f"{'peak RSS fp32 (MB)':28}{ours['peak_rss_mb']:12.0f}{hf['peak_rss_mb']:12.0f}{memory_ratio:11.2f}x",
                f"{'RSS growth in forward (MB)':28}{ours['forward_rss_growth_mb']:12.0f}{hf['forward_rss_growth_mb']:12.0f}",
            ]
        lines += [
            f"{'bf16 box drift (max abs)':28}{drift['ours']:12.2e}{drift['hf']:12.2e}",
            f"ours vs HF fp32: max |d logits| {figures['max_abs_diff']['pred_logits']:.2e}, "
            f"max |d boxes| {figures['max_abs_diff']['pred_boxes']:.2e}",
        ]
    return "\n".join(lines)


if __name__ == "__main__":  # worker entry point used by _run_worker
    parser = argparse.ArgumentParser(description="internal: one implementation's bench-model measurements")
    parser.add_argument("impl")
    parser.add_argument("dtypes", type=lambda text: text.split(","))
    parser.add_argument("batches", type=lambda text: [int(b) for b in text.split(",")])
    parser.add_argument("directory")
    for name in ("height", "width", "repeats", "threads"):
        parser.add_argument(name, type=int)
    parser.add_argument("device")
    parser.add_argument("out")
    args = parser.parse_args()
    _worker(
        args.impl, args.dtypes, args.batches, args.directory, args.height, args.width, args.repeats, args.threads,
        args.device, args.out,
    )  # fmt: skip
