"""`eval`: COCO box AP of a predictions file or of a checkpoint on a dataset."""

from __future__ import annotations

import json
from pathlib import Path

from .options import add_run_options, apply_threads, output_file

METRICS_FILE = "metrics.json"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="COCO box AP of detections",
        description="COCO box evaluation (pycocotools) of a predictions file, or of a checkpoint run on a dataset; "
        f"prints the table and, with --out DIR, writes DIR/{METRICS_FILE}.",
    )
    source = parser.add_mutually_exclusive_group(required=True)  # what to evaluate; add --checkpoint here
    source.add_argument(
        "--predictions",
        type=Path,
        metavar="FILE",
        help="COCO results JSON (a list of detections), or the detections.json of `predict` (images matched by file name)",
    )
    source.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="model to run on --data: training checkpoint or run folder, save_pretrained folder, "
        "official .pth or Hugging Face folder",
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="with --checkpoint: dataset folder (images/ + annotations.json, or one with val/)",
    )
    parser.add_argument("--annotations", type=Path, metavar="FILE", help="COCO ground-truth instances JSON")
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help=f"output folder: also write the metrics to DIR/{METRICS_FILE}"
    )
    parser.add_argument("--overwrite", action="store_true", help=f"replace an earlier {METRICS_FILE} in --out")
    add_run_options(parser)  # with --checkpoint
    parser.add_argument("--verbose", action="store_true", help="show pycocotools' own output")
    parser.set_defaults(handler=_eval)


def _eval(args) -> None:
    from ..checkpoint.files import write_atomic
    from ..errors import ConfigError
    from ..evaluation.coco_eval import evaluate_detections, format_metrics_table

    metrics_file = None if args.out is None else output_file(args.out, METRICS_FILE, args.overwrite)
    if args.checkpoint is not None:
        metrics = _eval_checkpoint(args)
    elif args.annotations is None:
        raise ConfigError("eval --predictions needs --annotations FILE (the ground truth)")
    else:
        metrics = evaluate_detections(args.annotations, args.predictions, verbose=args.verbose)
    print(format_metrics_table(metrics))
    if metrics_file is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_atomic(metrics_file, lambda path: path.write_text(json.dumps(metrics, indent=2) + "\n"))
        print(f"wrote {metrics_file}")


def _eval_checkpoint(args) -> dict:
    """eval --checkpoint CKPT --data DIR: DIR holds images/ + annotations.json, or a val/ split with them."""
    from ..errors import ConfigError
    from ..evaluation.evaluate import dataset_split, evaluate_checkpoint

    if args.data is None:
        raise ConfigError("eval --checkpoint needs --data DIR (images/ + annotations.json, or a folder with val/)")
    images_dir, annotations_file = dataset_split(args.data, args.annotations)
    apply_threads(args.threads)
    return evaluate_checkpoint(
        args.checkpoint, images_dir, annotations_file, args.device, batch_size=args.batch_size, amp=args.amp
    )
