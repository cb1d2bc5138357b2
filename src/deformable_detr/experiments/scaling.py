"""Encoder cost vs image size: FLOPs (FlopCounterMode + the deformable operator's own formula) and CPU time.

DETR's encoder attends globally, so its attention grows with the square of the number of tokens S
(image pixels / stride²); Deformable DETR's encoder samples a fixed number of points per token, so
it grows linearly in S even though it keeps 4 levels (S about 1.33 x the stride-8 pixel count).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from ..ops.flops import register_flop_formulas
from ..registry import AnyModelConfig, build_model


def count_flops(model: torch.nn.Module, image_size: int | tuple[int, int], batch: int = 1) -> dict[str, float]:
    """Forward FLOPs of `model` on a (batch, 3, H, W) input, total and of `transformer.encoder`, plus its tokens.

    Returns:
        {"total": FLOPs, "encoder": FLOPs of the transformer encoder, "tokens": S, the encoder's sequence length}.
        FLOPs count 2 per multiply-add (matrix products, convolutions, attention, the deformable operator).
    """
    register_flop_formulas()
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    tokens = []
    hook = model.transformer.encoder.register_forward_pre_hook(lambda module, args: tokens.append(args[0].shape[1]))
    try:
        with FlopCounterMode(
            display=False
        ) as counter:  # no torch.no_grad: FlopCounterMode's module tracker needs grad mode
            model(torch.randn(batch, 3, height, width))
    finally:
        hook.remove()
    encoder = sum(
        sum(ops.values()) for name, ops in counter.get_flop_counts().items() if name.endswith("transformer.encoder")
    )
    return {"total": float(counter.get_total_flops()), "encoder": float(encoder), "tokens": int(tokens[0])}


def _forward_seconds(model: torch.nn.Module, size: int, repeats: int = 2) -> tuple[float, float]:
    """(whole forward, encoder alone) CPU seconds at a (1, 3, size, size) input, minimum of `repeats` runs."""
    images = torch.randn(1, 3, size, size)
    encoder_times: list[float] = []
    started: list[float] = []
    pre = model.transformer.encoder.register_forward_pre_hook(lambda *_: started.append(time.perf_counter()))
    post = model.transformer.encoder.register_forward_hook(
        lambda *_: encoder_times.append(time.perf_counter() - started[-1])
    )
    totals = []
    try:
        with torch.inference_mode():
            model(images)  # warm-up
            encoder_times.clear()
            for _ in range(repeats):
                begin = time.perf_counter()
                model(images)
                totals.append(time.perf_counter() - begin)
    finally:
        pre.remove()
        post.remove()
    return min(totals), min(encoder_times)


def model_costs(models: dict[str, AnyModelConfig], image_size: int) -> dict[str, dict[str, float]]:
    """Per model label: parameters and forward GFLOPs (total, encoder) at a square `image_size` input."""
    costs = {}
    for label, config in models.items():
        torch.manual_seed(0)
        model = build_model(config).eval()
        flops = count_flops(model, image_size)
        costs[label] = {
            "params": sum(p.numel() for p in model.parameters()),
            "gflops": flops["total"] / 1e9,
            "encoder_gflops": flops["encoder"] / 1e9,
        }
    return costs


def measure_scaling(
    models: dict[str, AnyModelConfig], sizes: tuple[int, ...] | list[int], repeats: int = 2, progress: bool = True
) -> list[dict[str, Any]]:
    """FLOPs and CPU time of each model's encoder and whole forward at each square image size.

    Returns:
        one row per (model, size): model, size, tokens, encoder_gflops, total_gflops, encoder_ms, total_ms
        (times: minimum of `repeats` forwards, batch 1, inference mode, torch's current thread count).
    """
    rows = []
    with tqdm(total=len(models) * len(sizes), desc="scaling", disable=not progress) as bar:
        for label, config in models.items():
            torch.manual_seed(0)
            model = build_model(config).eval()
            for size in sizes:
                flops = count_flops(model, size)
                total_s, encoder_s = _forward_seconds(model, size, repeats)
                rows.append(
                    {
                        "model": label,
                        "size": size,
                        "tokens": flops["tokens"],
                        "encoder_gflops": flops["encoder"] / 1e9,
                        "total_gflops": flops["total"] / 1e9,
                        "encoder_ms": encoder_s * 1e3,
                        "total_ms": total_s * 1e3,
                    }
                )
                bar.update(1)
    return rows


def growth_exponent(rows: list[dict[str, Any]], model: str, key: str = "encoder_gflops") -> float:
    """Least-squares slope of log(key) against log(tokens) over the model's rows: ~2 quadratic, ~1 linear."""
    import math

    points = [(math.log(r["tokens"]), math.log(r[key])) for r in rows if r["model"] == model and r[key] > 0]
    if len(points) < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
