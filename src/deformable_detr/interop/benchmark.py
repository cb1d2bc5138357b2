"""`bench model`: our `DeformableDETR` vs Hugging Face's `DeformableDetrForObjectDetection`, same weights, CPU.

Both models get identical weights: an HF model of the given size (native HF ResNet backbone; timm is not
installed) is randomly initialised, its zero-initialised transformer/head tensors get small random values
so every path matters, and it is written with `save_pretrained`. Each measurement then runs in its own
subprocess (so peak RSS belongs to one model and one dtype): HF loads the directory with `from_pretrained`,
ours with `load_transformers`. Each worker does one warm-up forward and `repeats` timed forwards of one
image (eval, `torch.inference_mode`, `threads` intra-op threads) and saves its outputs; the parent compares
them (max |Δ| of logits and boxes, fp32 and bf16-autocast box drift against fp32).

    from deformable_detr.interop.benchmark import run_model_benchmark, format_model_benchmark
    result = run_model_benchmark()           # minutes of CPU at the default R50 config, 800x1066
    print(format_model_benchmark(result))

No assertions on time anywhere; the CLI (`deformable-detr bench model`) prints the table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import torch

_SMOKE_SIZES = dict(d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                    num_queries=20, encoder_attention_heads=4, decoder_attention_heads=4)


def _hf_config(smoke: bool):
    from transformers import DeformableDetrConfig, ResNetConfig

    out_features = ["stage2", "stage3", "stage4"]
    if smoke:  # a width-8, one-block-per-stage bottleneck ResNet
        backbone = ResNetConfig(embedding_size=8, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1],
                                layer_type="bottleneck", out_features=out_features)
        return DeformableDetrConfig(backbone_config=backbone, num_labels=91, **_SMOKE_SIZES)
    backbone = ResNetConfig(layer_type="bottleneck", out_features=out_features)  # HF's ResNet-50 defaults
    return DeformableDetrConfig(backbone_config=backbone, num_labels=91)  # paper defaults: d 256, 6+6, 300 q


def _write_reference_weights(directory: str, smoke: bool, seed: int = 0) -> None:
    """Random HF model; transformer and head tensors perturbed (init zeroes several); save_pretrained."""
    from transformers import DeformableDetrForObjectDetection

    torch.manual_seed(seed)
    model = DeformableDetrForObjectDetection(_hf_config(smoke)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not name.startswith("model.backbone."):  # keep the backbone's scaled init: noise would explode it
                parameter.add_(0.02 * torch.randn_like(parameter))
    model.save_pretrained(directory)


def _rss_mb() -> float:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _worker(impl: str, dtype: str, directory: str, height: int, width: int, repeats: int, threads: int,
            out: str) -> None:
    """One measurement in this process: build `impl`, warm up, time `repeats` forwards, save outputs + stats."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    images = torch.randn(1, 3, height, width)  # (B, 3, H, W) normalized, no padding
    if impl == "hf":
        from transformers import DeformableDetrForObjectDetection

        model = DeformableDetrForObjectDetection.from_pretrained(directory).eval()

        def forward():
            output = model(pixel_values=images)
            return output.logits, output.pred_boxes
    else:
        from deformable_detr.interop.transformers import load_transformers

        model = load_transformers(directory).eval()

        def forward():
            output = model(images)
            return output["pred_logits"], output["pred_boxes"]

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    rss_before = _rss_mb()
    times = []
    with torch.inference_mode(), autocast:
        for repeat in range(repeats + 1):  # the first run warms up (kernel caches, allocator) and is not timed
            start = time.perf_counter()
            logits, boxes = forward()
            if repeat:
                times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    torch.save({"pred_logits": logits.float(), "pred_boxes": boxes.float(), "times_s": times,
                "peak_rss_mb": peak_mb, "rss_before_forward_mb": rss_before}, out)


def _run_worker(impl: str, dtype: str, directory: str, height: int, width: int, repeats: int, threads: int) -> dict:
    out = os.path.join(directory, f"{impl}_{dtype}.pt")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "deformable_detr.interop.benchmark", impl, dtype, directory,
               str(height), str(width), str(repeats), str(threads), out]
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    if completed.returncode:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ChildProcessError(f"bench model: the {impl} {dtype} worker failed: {tail[0]}")
    return torch.load(out, weights_only=True)


def run_model_benchmark(height: int = 800, width: int = 1066, repeats: int = 3, threads: int = 2,
                        smoke: bool = False, progress=None) -> dict[str, Any]:
    """Time and compare our model and HF's at the default config (or a tiny one with `smoke`).

    Args:
        height, width: the one input image, pixels.
        repeats: timed forwards per measurement (after one warm-up); the median is reported.
        threads: intra-op threads of each worker (torch.set_num_threads, OMP/MKL_NUM_THREADS).
        smoke: tiny model instead of R50 / d 256 / 6+6 layers (checks the script in seconds).
        progress: optional callable(str) told what is being measured.

    Returns:
        dict with "setup", "ours"/"hf" (fp32 and bf16 median/all times in ms, peak RSS MB, RSS growth
        during forward MB), "speedup_fp32", "speedup_bf16", "max_abs_diff" (logits, boxes; ours vs HF fp32)
        and "bf16_box_drift" (max |boxes_bf16 - boxes_fp32| per implementation).
    """
    try:
        import transformers
    except ImportError as error:
        raise ValueError("bench model needs Hugging Face transformers: pip install transformers") from error
    say = progress or (lambda message: None)
    result: dict[str, Any] = {
        "setup": dict(image=[height, width], batch=1, threads=threads, repeats=repeats, warmup=1,
                      config="tiny (smoke)" if smoke
                      else "default: R50, 4 levels, d 256, 6+6 layers, 300 queries, 91 classes",
                      torch=torch.__version__, transformers=transformers.__version__,
                      cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                      mode="eval, torch.inference_mode, batch of one unpadded image"),
    }
    with tempfile.TemporaryDirectory(prefix="bench_model_") as directory:
        say("writing identical random weights (HF save_pretrained)")
        _write_reference_weights(directory, smoke)
        runs = {}
        for impl in ("ours", "hf"):
            for dtype in ("float32", "bfloat16"):
                say(f"{impl} {dtype}: {repeats} timed forwards")
                runs[impl, dtype] = _run_worker(impl, dtype, directory, height, width, repeats, threads)
    for impl in ("ours", "hf"):
        fp32, bf16 = runs[impl, "float32"], runs[impl, "bfloat16"]
        result[impl] = dict(
            fp32_ms=1e3 * statistics.median(fp32["times_s"]), fp32_ms_all=[1e3 * t for t in fp32["times_s"]],
            bf16_ms=1e3 * statistics.median(bf16["times_s"]), bf16_ms_all=[1e3 * t for t in bf16["times_s"]],
            peak_rss_mb=fp32["peak_rss_mb"],
            forward_rss_growth_mb=max(0.0, fp32["peak_rss_mb"] - fp32["rss_before_forward_mb"]),
            bf16_peak_rss_mb=bf16["peak_rss_mb"],
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
    lines = [
        f"bench model: {setup['config']}; image {setup['image'][0]}x{setup['image'][1]}, {setup['threads']} threads, "
        f"median of {setup['repeats']} warm forwards",
        f"{'':28}{'ours':>12}{'HF':>12}{'HF / ours':>12}",
        f"{'forward fp32 (ms)':28}{ours['fp32_ms']:12.0f}{hf['fp32_ms']:12.0f}{result['speedup_fp32']:11.2f}x",
        f"{'forward bf16 autocast (ms)':28}{ours['bf16_ms']:12.0f}{hf['bf16_ms']:12.0f}{result['speedup_bf16']:11.2f}x",
        f"{'peak RSS fp32 (MB)':28}{ours['peak_rss_mb']:12.0f}{hf['peak_rss_mb']:12.0f}{memory_ratio:11.2f}x",
        f"{'RSS growth in forward (MB)':28}{ours['forward_rss_growth_mb']:12.0f}{hf['forward_rss_growth_mb']:12.0f}",
        f"{'bf16 box drift (max abs)':28}{drift['ours']:12.2e}{drift['hf']:12.2e}",
        f"ours vs HF fp32: max |d logits| {result['max_abs_diff']['pred_logits']:.2e}, "
        f"max |d boxes| {result['max_abs_diff']['pred_boxes']:.2e}",
    ]
    return "\n".join(lines)


def write_model_benchmark(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Write `result` as indented JSON (parent folders created)."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    with open(path, "w") as file:
        json.dump(result, file, indent=2)
        file.write("\n")


if __name__ == "__main__":  # worker entry point used by _run_worker
    parser = argparse.ArgumentParser(description="internal: one bench-model measurement")
    for name in ("impl", "dtype", "directory"):
        parser.add_argument(name)
    for name in ("height", "width", "repeats", "threads"):
        parser.add_argument(name, type=int)
    parser.add_argument("out")
    args = parser.parse_args()
    _worker(args.impl, args.dtype, args.directory, args.height, args.width, args.repeats, args.threads, args.out)
