"""`bench train`: seconds per training step, ours vs Hugging Face's `DeformableDetrForObjectDetection`.

One step = forward + loss + backward + AdamW step, in train mode, same batch, same weights: a random
HF model (paper-default config, HF's own ResNet-50 since timm is not installed) is copied into ours with
`interop.transformers.transformers_to_ours`. Each side uses its own loss (HF: the loss it computes from `labels`;
ours: `SetCriterion`), both with the paper's matcher costs and weights. Steps alternate ours/HF after one
warm-up each, in one process, so both see the same machine load. Also: training images/s of the `demo`
preset at its own resolution and batch size. No assertions on time anywhere.
"""

from __future__ import annotations

import statistics
import time

import torch

from ..models.detector import DeformableDETR
from ..training.criterion import LossConfig, SetCriterion
from ..training.optim import OptimConfig, build_optimizer
from .harness import header
from .hf_reference import hf_config


def _batch(batch_size: int, image_size: int, num_classes: int, seed: int = 0):
    """Random normalized images (B, 3, S, S) and 3 random boxes per image (cxcywh normalized)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    targets = []
    for _ in range(batch_size):
        centres = torch.rand(3, 2, generator=generator) * 0.6 + 0.2
        sizes = torch.rand(3, 2, generator=generator) * 0.2 + 0.05
        targets.append(
            {
                "labels": torch.randint(0, num_classes, (3,), generator=generator),
                "boxes": torch.cat([centres, sizes], dim=1),
            }
        )
    return images, targets


def _hf_model(seed: int = 0):
    from transformers import DeformableDetrForObjectDetection

    torch.manual_seed(seed)
    # activation_dropout 0.1: dropout on the FFN hidden layer, as the official model (HF's default is 0.0)
    model = DeformableDetrForObjectDetection(hf_config(activation_dropout=0.1))
    for name, parameter in model.model.backbone.named_parameters():  # train layer2-4 (HF stages 1-3), as the paper
        parameter.requires_grad_(any(f"stages.{i}." in name for i in (1, 2, 3)))
    return model


def _our_step(model, criterion, optimizer, images, targets, amp: bool = False):
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            outputs = model(images)
        losses = criterion(outputs, targets)
        criterion.weighted_sum(losses).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _hf_step(model, optimizer, images, targets):
    labels = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]

    def step():
        output = model(pixel_values=images, labels=labels)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _timed(step, cpu_times: list | None = None) -> float:
    """Wall seconds of one step; appends the process CPU seconds (all threads) to `cpu_times` when given."""
    started, cpu_started = time.perf_counter(), time.process_time()
    step()
    if cpu_times is not None:
        cpu_times.append(time.process_time() - cpu_started)
    return time.perf_counter() - started


def benchmark_training(
    image_size: int = 512, batch_size: int = 2, threads: int = 2, repeats: int = 3, demo_steps: int = 4
) -> dict:
    """Time training steps; returns a JSON-ready dict (seconds per step, speed-up, demo images/s)."""
    torch.set_num_threads(threads)
    hf = _hf_model().train()
    from ..interop.transformers import transformers_to_ours

    ours = DeformableDETR.from_state_dict(*transformers_to_ours(hf)).train()
    trainable = {
        "ours": sum(p.numel() for p in ours.parameters() if p.requires_grad),
        "hf": sum(p.numel() for p in hf.parameters() if p.requires_grad),
    }
    if trainable["ours"] != trainable["hf"]:
        raise RuntimeError(f"bench train: trainable parameters differ (ours {trainable['ours']}, HF {trainable['hf']})")
    images, targets = _batch(batch_size, image_size, 91)
    optim = OptimConfig()
    hf_optimizer = torch.optim.AdamW(
        [p for p in hf.parameters() if p.requires_grad], lr=optim.lr, weight_decay=optim.weight_decay
    )
    steps = {
        "ours": _our_step(
            ours, SetCriterion.from_config(91, LossConfig()), build_optimizer(ours, optim), images, targets
        ),
        "hf": _hf_step(hf, hf_optimizer, images, targets),
    }
    times, cpu_times = {"ours": [], "hf": []}, {"ours": [], "hf": []}
    for step in steps.values():
        _timed(step)  # warm-up: allocator, kernel caches
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(_timed(step, cpu_times[name]))
    del hf, ours, steps
    result = {
        "what": "training step (forward + loss + backward + clip + AdamW) in train mode, same weights and batch",
        "config": "paper default (R50 frozen BN, stem+layer1 frozen, 4 levels, d 256, 6+6 layers, 300 queries, 91 classes, dropout 0.1)",
        "trainable_parameters": trainable["ours"],
        "header": header(threads=threads),
        "image_size": image_size,
        "batch_size": batch_size,
        "threads": threads,
        "repeats": repeats,
        "ours_s_per_step": min(times["ours"]),
        "hf_s_per_step": min(times["hf"]),
        "ours_median_s_per_step": statistics.median(times["ours"]),
        "hf_median_s_per_step": statistics.median(times["hf"]),
        "ours_times_s": times["ours"],
        "hf_times_s": times["hf"],
        "ours_cpu_s_per_step": statistics.median(cpu_times["ours"]),
        "hf_cpu_s_per_step": statistics.median(cpu_times["hf"]),
        "note": "wall time is what counts on an idle machine; CPU time (all threads) is less sensitive to other load",
    }
    result["speedup"] = result["hf_s_per_step"] / result["ours_s_per_step"]
    result["speedup_median"] = result["hf_median_s_per_step"] / result["ours_median_s_per_step"]
    result["demo"] = benchmark_demo_preset(demo_steps)
    return result


def benchmark_demo_preset(steps: int = 4) -> dict:
    """Training images/s of the `demo` preset (model, batch size, resolution), random data, current threads."""
    from ..training.config import TrainConfig

    config = TrainConfig.preset("demo")
    model_config = config.model.__class__.from_dict({**config.model.to_dict(), "num_classes": 6})
    model = DeformableDETR(model_config).train()
    size = max(config.train_scales)
    images, targets = _batch(config.batch_size, size, 6)
    step = _our_step(
        model,
        SetCriterion.from_config(6, config.loss),
        build_optimizer(model, config.optim),
        images,
        targets,
        config.amp,
    )
    _timed(step)
    times = [_timed(step) for _ in range(steps)]
    seconds = min(times)
    return {
        "batch_size": config.batch_size,
        "image_size": size,
        "amp": config.amp,
        "s_per_step": seconds,
        "images_per_s": config.batch_size / seconds,
    }


def format_training_benchmark(result: dict) -> str:
    """The result as a small text table."""
    demo = result["demo"]
    return "\n".join(
        [
            f"training step, {result['batch_size']} x {result['image_size']}px, {result['threads']} threads, min of {result['repeats']} interleaved:",
            f"  ours  {result['ours_s_per_step']:8.3f} s/step",
            f"  HF    {result['hf_s_per_step']:8.3f} s/step",
            f"  speed-up {result['speedup']:.2f}x (CPU time: ours {result['ours_cpu_s_per_step']:.2f} s, HF {result['hf_cpu_s_per_step']:.2f} s)",
            f"  medians: ours {result['ours_median_s_per_step']:.3f} s, HF {result['hf_median_s_per_step']:.3f} s, "
            f"speed-up {result['speedup_median']:.2f}x",
            f"demo preset: batch {demo['batch_size']} x {demo['image_size']}px, amp={demo['amp']}: "
            f"{demo['s_per_step']:.3f} s/step = {demo['images_per_s']:.1f} images/s",
        ]
    )
