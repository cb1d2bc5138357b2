"""`experiment convergence`: train DETR and Deformable DETR variants on the same data and budget, write a report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of integers (e.g. 0,1,2)") from None


def register(subparsers) -> None:
    parser = subparsers.add_parser("experiment", help="experiments that train several models and write a report")
    commands = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    conv = commands.add_parser(
        "convergence",
        help="DETR vs Deformable DETR variants: same data, backbone, width and budget; report.md + plots",
        description="Trains every --models variant for every seed in OUT/runs/LABEL/seedK (re-running the same command "
        "continues an interrupted experiment), then writes OUT/report.md, OUT/convergence.png and "
        "OUT/scaling.png. A variant is [LABEL=]BASE[:FIELD=VALUE]... with BASE one of detr, detr-dc5, "
        "deformable-single-scale, deformable-single-scale-dc5, deformable, deformable-refine, "
        "deformable-two-stage; FIELD a model field, or loss.FIELD / optim.FIELD.",
    )
    conv.add_argument("--out", type=Path, required=True, help="experiment folder")
    budget = conv.add_mutually_exclusive_group(required=True)
    budget.add_argument("--epochs", type=int, help="train every model for this many epochs")
    budget.add_argument(
        "--budget-minutes", type=float, help="train every model for this many minutes of training steps"
    )
    conv.add_argument(
        "--models",
        default="detr,deformable-single-scale,deformable,deformable-refine",
        help="comma-separated variants (default: %(default)s)",
    )
    conv.add_argument("--seeds", type=_int_list, default=(0,), help="comma-separated seeds (default 0)")
    conv.add_argument("--eval-every", type=int, default=3, help="evaluate every N epochs and at the end (default 3)")
    conv.add_argument(
        "--data", type=Path, help="use this dataset (train/ and val/) instead of rendering synthetic shapes"
    )
    conv.add_argument("--train-images", type=int, default=2000, help="synthetic training images (default 2000)")
    conv.add_argument("--val-images", type=int, default=250, help="synthetic validation images (default 250)")
    conv.add_argument("--image-size", type=int, default=256, help="synthetic images' longer side (default 256)")
    conv.add_argument("--train-size", type=int, default=192, help="training/validation short side (default 192)")
    conv.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    conv.add_argument("--threads", type=int, default=0, help="torch threads per run (default: torch's)")
    conv.add_argument("--jobs", type=int, default=1, help="runs trained at once, one process each (default 1)")
    conv.add_argument(
        "--classes", default="demo", help="synthetic classes: a class set name or comma-separated shapes (default demo)"
    )
    conv.add_argument(
        "--objects-per-image", type=int, nargs=2, metavar=("MIN", "MAX"), help="synthetic objects per image"
    )
    conv.add_argument("--object-size", type=float, nargs=2, metavar=("MIN", "MAX"), help="synthetic object sides in px")
    conv.add_argument(
        "--pretrain-steps",
        type=int,
        default=0,
        help="pretrain the shared backbone this many steps to classify other shapes (default 0: random backbone)",
    )
    conv.add_argument(
        "--backbone-lr-ratio",
        type=float,
        help="backbone lr as a fraction of the rest (default 1 with a random backbone, 0.1 with a pretrained one)",
    )
    conv.add_argument("--num-queries", type=int, help="every model's number of queries (default: each variant's)")
    conv.add_argument(
        "--scaling-sizes",
        type=_int_list,
        default=(256, 512, 768, 1024),
        help="image sizes of the encoder-cost table, '' to skip (default 256,512,768,1024)",
    )
    conv.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: write the report from what the run folders hold now (unfinished runs marked)",
    )
    conv.set_defaults(handler=_convergence)


def _convergence(args) -> None:
    from ..experiments.convergence import ConvergenceConfig, run_convergence
    from .progress import show_progress_logs

    show_progress_logs()
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    config = ConvergenceConfig(
        out_dir=str(args.out),
        models=models,
        seeds=args.seeds,
        epochs=args.epochs or 1_000,
        budget_minutes=args.budget_minutes,
        eval_every=args.eval_every,
        data_dir=str(args.data) if args.data else None,
        train_images=args.train_images,
        val_images=args.val_images,
        image_size=args.image_size,
        train_size=args.train_size,
        batch_size=args.batch_size,
        threads=args.threads,
        jobs=args.jobs,
        classes=args.classes,
        objects_per_image=args.objects_per_image,
        object_size=args.object_size,
        pretrain_steps=args.pretrain_steps,
        backbone_lr_ratio=args.backbone_lr_ratio,
        num_queries=args.num_queries,
        scaling_sizes=args.scaling_sizes,
        command="deformable-detr " + shlex.join(sys.argv[1:]),
    )
    result = run_convergence(config, train=not args.report_only)
    print(
        f"report {result.report}; summary {result.summary_json}; plots {result.convergence_plot}"
        + (f", {result.scaling_plot}" if result.scaling_plot else "")
    )
