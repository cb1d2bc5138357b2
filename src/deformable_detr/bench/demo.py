"""`bench demo`: the demo recipe (`make demo`) trained on a device, timed, and its validation AP.

Renders the demo's synthetic dataset (if absent) under WORK/data, trains the `demo` preset there
(`training.demo.demo_config`: the same fixed steps, bf16 autocast; on CUDA with DataLoader workers), then
runs `predict_files` over the validation images at threshold 0 (each image alone, as `fit`'s evaluation
does) into WORK/val_detections/detections.json and evaluates it with pycocotools. Where pycocotools is not
installed (`fit` cannot evaluate either: its final evaluation raises after the checkpoint is written) the
AP is left pending: the detections and the ground truth (WORK/data/val/annotations.json) are kept for

    deformable-detr eval --predictions detections.json --annotations annotations.json

on any machine that has it. No assertions on time anywhere.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..util.timer import Timer
from .harness import header

# `deformable-detr demo` on the CPU as shipped (README "Demo"): the 1100-step recipe at lr 3e-3, seed 42, 2 threads,
# on the 2-core AMD EPYC dev machine, every validation image alone.
CPU_DEMO_METRICS = {"AP": 0.333, "AP50": 0.603}
CPU_DEMO_SOURCE = "README Demo: deformable-detr demo, 1100 steps, lr 3e-3, seed 42, 2 threads, 2-core AMD EPYC"
AP_TOLERANCE = 0.03  # issue 20: the demo on CUDA reaches the CPU demo's AP within this
SMOKE_DATA = dict(num_train=16, num_val=4, image_size=96, seed=0)


def run_demo_benchmark(
    device: str = "cuda", work_dir: str | Path = "demo_bench", max_steps: int | None = None, smoke: bool = False
) -> dict[str, Any]:
    """Train the demo recipe on `device` in `work_dir`; returns a JSON-ready dict.

    Args:
        device: "cpu", "cuda" or "cuda:N".
        work_dir: gets data/ (rendered once, kept), train/ (the run, replaced), val_detections/.
        max_steps: optimizer steps (default: the preset's; 4 with `smoke`).
        smoke: a 16-image dataset of 96 px (checks the benchmark itself).

    Returns:
        {"header", "setup", "render_s", "train": {steps, train_seconds, s_per_step, images_per_s, wall_s},
         "evaluation": {"status", "metrics" (None while pending), "detections", "annotations", "command"},
         "cpu_demo": the CPU demo's metrics, "ap_within_tolerance": bool or None while pending}.
    """
    from ..training import checkpoint as ckpt
    from ..training.demo import DEMO_DATA, demo_config, ensure_dataset
    from ..training.engine import fit

    work = Path(work_dir)
    data = SMOKE_DATA if smoke else DEMO_DATA
    with Timer() as render:
        ensure_dataset(work / "data", data, progress=False)
    render_s = render.seconds
    config = demo_config(work, data, max_steps=max_steps or (4 if smoke else None), device=device)
    if smoke:
        config = dataclasses.replace(config, batch_size=2, threads=1)
    fit_metrics, fit_error = None, None
    with Timer() as wall:
        try:
            fit_metrics = fit(config, progress=False, overwrite=True).metrics
        except ModuleNotFoundError as error:  # pycocotools missing: the final checkpoint is written before evaluating
            if (error.name or "").split(".")[0] != "pycocotools":
                raise
            fit_error = (
                f"fit's evaluation needs pycocotools ({error}); checkpoint written, AP evaluated below or pending"
            )
    wall_s = wall.seconds
    state = ckpt.load_checkpoint(Path(config.output_dir) / ckpt.CHECKPOINT)["state"]
    steps, train_seconds = state["step"], state["train_seconds"]
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None
    result: dict[str, Any] = {
        "header": header(threads=config.threads, device=device, gpu_name=gpu),
        "setup": dict(
            device=device,
            data=data,
            batch_size=config.batch_size,
            max_steps=config.max_steps,
            amp=config.amp,
            workers=config.workers,
            train_scales=list(config.train_scales),
            val_size=config.val_size,
            smoke=smoke,
        ),  # fmt: skip
        "render_s": render_s,
        "train": {
            "steps": steps,
            "train_seconds": train_seconds,
            "s_per_step": train_seconds / max(steps, 1),
            "images_per_s": steps * config.batch_size / max(train_seconds, 1e-9),
            "wall_s": wall_s,
        },
        "fit_metrics": fit_metrics,
        "fit_note": fit_error,
        "evaluation": _evaluate_on_val(work, config, device),
        "cpu_demo": {**CPU_DEMO_METRICS, "source": CPU_DEMO_SOURCE},
    }
    metrics = result["evaluation"]["metrics"]
    result["ap_within_tolerance"] = (
        None if metrics is None else abs(metrics["AP"] - CPU_DEMO_METRICS["AP"]) <= AP_TOLERANCE
    )
    return result


def _evaluate_on_val(work: Path, config, device: str) -> dict[str, Any]:
    """Detections of the trained model on every validation image (threshold 0), and their COCO AP if possible."""
    from ..inference.load import load
    from ..inference.predict_files import predict_files
    from ..training import checkpoint as ckpt

    model = load(Path(config.output_dir) / ckpt.CHECKPOINT, device=device)
    out = work / "val_detections"
    summary = predict_files(
        model, [work / "data" / "val" / "images"], out, threshold=0.0, amp=config.amp, draw=False, overwrite=True,
        progress=False,
    )  # fmt: skip
    annotations = work / "data" / "val" / "annotations.json"
    evaluation: dict[str, Any] = {
        "images": summary.images,
        "detections": str(summary.detections_file),
        "annotations": str(annotations),
        "command": f"deformable-detr eval --predictions {summary.detections_file} --annotations {annotations}",
        "metrics": None,
    }
    from ..evaluation.coco_eval import evaluate_detections

    try:
        evaluation["metrics"] = evaluate_detections(annotations, summary.detections_file)
        evaluation["status"] = "evaluated"
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] != "pycocotools":
            raise
        evaluation["status"] = "pending: pycocotools is not installed here; run `command` where it is"
    return evaluation


def format_demo_benchmark(result: dict[str, Any]) -> str:
    """A few lines: time per step, images/s, AP against the CPU demo's."""
    train, evaluation, setup = result["train"], result["evaluation"], result["setup"]
    where = result["header"].get("gpu_name") or setup["device"]
    lines = [
        f"demo recipe on {where}: {train['steps']} steps of {setup['batch_size']} images in {train['train_seconds']:.1f} s "
        f"({1e3 * train['s_per_step']:.1f} ms/step, {train['images_per_s']:.0f} images/s; {train['wall_s']:.0f} s with "
        f"set-up; data rendered in {result['render_s']:.0f} s)"
    ]
    metrics = evaluation["metrics"]
    if metrics is None:
        lines.append(f"validation AP {evaluation['status']}: {evaluation['command']}")
    else:
        cpu = result["cpu_demo"]
        lines.append(
            f"validation AP {metrics['AP']:.3f}, AP50 {metrics['AP50']:.3f} ({evaluation['images']} images alone); "
            f"CPU demo AP {cpu['AP']:.3f}: {'within' if result['ap_within_tolerance'] else 'NOT within'} ±{AP_TOLERANCE}"
        )
    return "\n".join(lines)
