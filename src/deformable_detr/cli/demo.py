"""`demo`: synthetic data, train the demo preset, evaluate, draw."""

from __future__ import annotations

from pathlib import Path

from .options import add_preset_run_options, positive_float, positive_int
from .progress import show_progress_logs

DEMO_DIR = Path("demo_out")  # as training.demo.DEMO_DIR (not imported: --help stays fast)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="make synthetic data, train a small detector (CPU or CUDA), evaluate, draw",
        description="End to end in about 10 minutes on 2 CPU cores (a fixed number of training steps; the bar shows the ETA): render the synthetic shapes "
        "dataset (if absent) under OUT/data, train the `demo` preset, print the val AP "
        "table, write curves and a picture of validation predictions.",
    )
    parser.add_argument("--out", type=Path, default=DEMO_DIR, help=f"output folder (default {DEMO_DIR})")
    parser.add_argument(
        "--minutes",
        type=positive_float,
        help="train for this time budget instead of the preset's fixed "
        "step count (a busy machine then gets fewer steps)",
    )
    parser.add_argument(
        "--max-steps", type=positive_int, help="train this many optimizer steps (default: the demo preset's)"
    )
    add_preset_run_options(parser)
    parser.set_defaults(handler=_run_demo)


def _run_demo(args) -> None:
    import dataclasses

    from ..evaluation.coco_eval import format_metrics_table
    from ..training.demo import demo_config, run_demo
    from ..util.devices import checked_device

    device = str(checked_device(args.device or "cpu"))
    config = demo_config(args.out, minutes=args.minutes, max_steps=args.max_steps, threads=args.threads, device=device)
    overrides = {name: getattr(args, name) for name in ("batch_size", "amp") if getattr(args, name) is not None}
    show_progress_logs()
    result = run_demo(args.out, config=dataclasses.replace(config, **overrides))
    train = result.train
    print(f"trained {train.steps} steps ({train.train_seconds / 60:.1f} min of training); validation AP:")
    print(format_metrics_table(train.metrics))
    print(
        f"data:         {result.data_dir}\ncheckpoint:   {train.checkpoint}\ncurves:       {train.output_dir / 'curves.png'}"
    )
    print(
        f"predictions:  {result.predictions_image}\nmetrics:      {result.metrics_file}, {train.output_dir / 'metrics.jsonl'}"
    )
    print(f"total time:   {result.seconds / 60:.1f} min")
