"""`train`: train a detector from a preset or config plus overrides (DDP under torchrun)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .progress import show_progress_logs


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a detector on a COCO-format dataset (DDP under torchrun)",
                                   description="Train from a preset (or a config.json) plus overrides. Multi-process: "
                                               "torchrun --nproc-per-node K -m deformable_detr.cli train ...")
    parser.add_argument("--preset", default="paper", help="training preset: paper, demo (default paper)")
    parser.add_argument("--config", type=Path, metavar="JSON", help="a TrainConfig JSON (e.g. OUT/config.json) instead of --preset")
    parser.add_argument("--model", metavar="PRESET", help="model preset replacing the training preset's (e.g. tiny, deformable-detr-refine)")
    parser.add_argument("--data", help="dataset folder with train/ and val/ (each images/ + annotations.json)")
    parser.add_argument("--out", help="output folder (checkpoints, metrics.jsonl, curves.png)")
    parser.add_argument("--resume", type=Path, metavar="OUT", help="continue the run in OUT exactly where it stopped")
    for flag, kind, field in (("--epochs", int, "epochs"), ("--batch-size", int, "batch_size"), ("--workers", int, "workers"),
                              ("--seed", int, "seed"), ("--max-minutes", float, "max_minutes"), ("--max-steps", int, "max_steps"),
                              ("--eval-every", int, "eval_every"), ("--threads", int, "threads"), ("--device", str, "device"),
                              ("--grad-accum-steps", int, "grad_accum_steps")):
        parser.add_argument(flag, type=kind, dest=field, help=f"override TrainConfig.{field}")
    parser.add_argument("--lr", type=float, help="override OptimConfig.lr (backbone lr scales along)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast")
    parser.set_defaults(handler=_train)


def _train(args) -> None:
    from ..evaluation.coco_eval import format_metrics_table
    from ..training.engine import fit
    from ..util import distributed

    show_progress_logs()
    result = fit(_train_config(args), resume=args.resume is not None)
    if distributed.is_main_process():  # under torchrun only rank 0 prints
        print(format_metrics_table(result.metrics) if result.metrics else "(not evaluated)")
        print(f"{result.steps} steps, {result.epochs} epochs; checkpoint {result.checkpoint}; metrics {result.output_dir / 'metrics.jsonl'}")
    distributed.destroy()


def _train_config(args):
    """TrainConfig from --resume / --config / --preset, then the command-line overrides."""
    import dataclasses

    from ..models.config import ModelConfig
    from ..training.config import TrainConfig

    if args.resume is not None:
        config = TrainConfig.from_dict(json.loads((args.resume / "config.json").read_text()))
        config = dataclasses.replace(config, output_dir=str(args.resume))
    elif args.config is not None:
        config = TrainConfig.from_dict(json.loads(args.config.read_text()))
    else:
        config = TrainConfig.preset(args.preset)
    overrides = {f: getattr(args, f) for f in ("epochs", "batch_size", "workers", "seed", "max_minutes", "max_steps",
                                                "eval_every", "threads", "device", "grad_accum_steps", "amp") if getattr(args, f) is not None}
    overrides.update({k: v for k, v in (("data_dir", args.data), ("output_dir", args.out)) if v is not None})
    if args.model is not None:
        overrides["model"] = ModelConfig.preset(args.model)
    if args.lr is not None:
        ratio = config.optim.lr_backbone / config.optim.lr
        overrides["optim"] = dataclasses.replace(config.optim, lr=args.lr, lr_backbone=args.lr * ratio)
    return dataclasses.replace(config, **overrides)
