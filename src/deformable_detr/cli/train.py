"""`train`: train a detector from a preset or config plus overrides (DDP under torchrun)."""

from __future__ import annotations

from pathlib import Path

from .options import add_preset_run_options, non_negative_int, positive_float, positive_int
from .progress import show_progress_logs


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a detector on a COCO, YOLO or Pascal VOC dataset (DDP under torchrun)",
        description="Train from a preset (or a config.json) plus overrides. Multi-process: "
        "torchrun --nproc-per-node K -m deformable_detr.cli train ... "
        "--init CKPT starts a NEW run from CKPT's weights (its architecture, your "
        "dataset's classes; fresh optimizer and schedule); --resume OUT continues "
        "an interrupted run in OUT exactly where it stopped.",
    )
    parser.add_argument(
        "--preset", default="paper", help="training preset: paper, demo, finetune, detr, detr-demo (default paper)"
    )
    parser.add_argument(
        "--config", type=Path, metavar="JSON", help="a TrainConfig JSON (e.g. OUT/config.json) instead of --preset"
    )
    parser.add_argument(
        "--model",
        metavar="PRESET",
        help="model preset replacing the training preset's (e.g. tiny, deformable-detr-refine, detr-r50, "
        "detr-demo); switching between DETR and Deformable DETR also switches to that model's loss",
    )
    parser.add_argument("--data", help="dataset folder with train/ and val/ (each images/ + annotations.json)")
    parser.add_argument(
        "--out", help="output folder (checkpoints, metrics.jsonl, curves.png); refused if it holds a run"
    )
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="OUT",
        help="continue the run in OUT exactly where it stopped (mid-epoch "
        "too); with --epochs/--max-steps/--max-minutes, extend it",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the run already in --out (its checkpoints and metrics)"
    )
    parser.add_argument(
        "--init",
        metavar="CKPT",
        help="start a new run from these weights: architecture from CKPT, classes "
        "from the data; class-head rows copied for categories with the same name",
    )
    parser.add_argument(
        "--format", dest="data_format", choices=("auto", "coco", "yolo", "voc"), help="dataset format (default auto)"
    )
    parser.add_argument(
        "--skip-bad", action="store_true", default=None, help="train without the images check-data reports problems for"
    )
    parser.add_argument(
        "--backbone-weights", metavar="FILE", help="ImageNet ResNet weights (torchvision, timm or HF layout)"
    )
    parser.add_argument(
        "--random-backbone",
        action="store_true",
        default=None,
        help="allow a frozen (layers or BatchNorm) backbone to start from random weights",
    )
    parser.add_argument("--freeze", choices=("backbone", "encoder"), help="keep the backbone (and the encoder) fixed")
    parser.add_argument(
        "--ema",
        type=float,
        nargs="?",
        const=0.999,
        dest="ema_decay",
        metavar="DECAY",
        help="weight EMA (default decay 0.999), evaluated and saved as best.pth; --ema 0 turns it off",
    )
    parser.add_argument(
        "--keep",
        type=non_negative_int,
        metavar="N",
        help="keep the last N epoch checkpoints besides checkpoint.pth and best.pth",
    )
    parser.add_argument(
        "--patience", type=non_negative_int, metavar="K", help="stop after K evaluations without a better AP"
    )
    for flag, kind, field in (
        ("--epochs", positive_int, "epochs"),
        ("--workers", non_negative_int, "workers"),
        ("--seed", int, "seed"),
        ("--max-minutes", positive_float, "max_minutes"),
        ("--max-steps", positive_int, "max_steps"),
        ("--eval-every", non_negative_int, "eval_every"),
        ("--grad-accum-steps", positive_int, "grad_accum_steps"),
        ("--checkpoint-every", non_negative_int, "checkpoint_every"),
        ("--max-nonfinite-steps", non_negative_int, "max_nonfinite_steps"),
    ):
        parser.add_argument(flag, type=kind, dest=field, help=f"override TrainConfig.{field}")
    parser.add_argument("--lr", type=positive_float, help="override OptimConfig.lr (backbone lr scales along)")
    add_preset_run_options(parser)
    parser.set_defaults(handler=_train)


def _train(args) -> None:
    from ..evaluation.coco_eval import format_metrics_table
    from ..training.engine import fit
    from ..util import distributed

    show_progress_logs()
    result = fit(_train_config(args), resume=args.resume is not None, overwrite=args.overwrite)
    if distributed.is_main_process():  # under torchrun only rank 0 prints
        print(format_metrics_table(result.metrics) if result.metrics else "(not evaluated)")
        print(
            f"{result.steps} steps, {result.epochs} epochs; checkpoint {result.checkpoint}; metrics {result.output_dir / 'metrics.jsonl'}"
        )
    distributed.destroy()


def _train_config(args):
    """TrainConfig from --resume / --config / --preset, then the command-line overrides."""
    import dataclasses

    from ..errors import ConfigError
    from ..registry import model_preset, with_model
    from ..training.config import TrainConfig

    if args.resume is not None and args.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pick one")
    if args.resume is not None:
        _refuse_another_run(args)
        config = TrainConfig.of_run(args.resume)
    elif args.config is not None:
        config = TrainConfig.from_json(args.config)
    else:
        config = TrainConfig.preset(args.preset)
    overrides = {
        f: getattr(args, f)
        for f in (
            "epochs",
            "batch_size",
            "workers",
            "seed",
            "max_minutes",
            "max_steps",
            "eval_every",
            "threads",
            "device",
            "grad_accum_steps",
            "amp",
            "checkpoint_every",
            "max_nonfinite_steps",
        )
        if getattr(args, f) is not None
    }
    overrides.update({k: v for k, v in (("data_dir", args.data), ("output_dir", args.out)) if v is not None})
    overrides.update(
        {
            f: getattr(args, f)
            for f in (
                "init",
                "data_format",
                "skip_bad",
                "backbone_weights",
                "random_backbone",
                "freeze",
                "ema_decay",
                "keep",
                "patience",
            )
            if getattr(args, f) is not None
        }
    )
    if args.resume is not None and args.init is not None:
        raise ConfigError("--init starts a new run and --resume continues one; give one of them")
    if args.model is not None:
        config = with_model(config, model_preset(args.model))  # the other family brings its loss
    if args.lr is not None:
        config = config.with_lr(args.lr)
    return dataclasses.replace(config, **overrides)


def _refuse_another_run(args) -> None:
    """--resume OUT continues the run in OUT as it was: no other --out, --model or --config (one line each)."""
    from ..errors import ConfigError

    if args.out is not None and Path(args.out).resolve() != args.resume.resolve():
        raise ConfigError(
            f"--resume {args.resume} continues the run in {args.resume}; --out {args.out} names another folder: "
            "drop --out, or start a new run there with --init"
        )
    for flag, value, what in (("--model", args.model, "its model"), ("--config", args.config, "its config.json")):
        if value is not None:
            raise ConfigError(
                f"{flag}: a resumed run keeps {what} ({args.resume}/config.json); drop {flag}, "
                "or start a new run with --init"
            )
