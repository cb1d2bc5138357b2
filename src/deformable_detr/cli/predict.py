"""`predict`: detect objects in image files, folders and globs; write detections.json and drawings."""

from __future__ import annotations

import sys
from pathlib import Path

from .options import add_detection_options, add_run_options, apply_threads, check_out_folder


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="detect objects in image files with a checkpoint",
        description="Writes OUT/detections.json (COCO results with file names, and the files that could not be "
        "read under errors) and one drawing per image, mirroring the inputs' paths. Exit 1 when any "
        "input failed. Under torchrun the images are shared between the processes.",
    )
    parser.add_argument(
        "images", nargs="+", metavar="IMAGES", help="image files, folders (searched recursively) or globs"
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        metavar="CKPT",
        help="weights: a training checkpoint (or its run folder), save_pretrained folder, official .pth "
        "or Hugging Face folder",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("predictions"),
        metavar="DIR",
        help="output folder (default predictions); must not contain the inputs",
    )
    add_detection_options(parser)
    add_run_options(parser)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (CUDA graphs on a GPU); each new image-shape bucket compiles on first "
        "use (about a minute on a GPU), so it pays for many images, not a few",
    )
    parser.add_argument("--no-draw", dest="draw", action="store_false", help="write detections.json only")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier detections.json in --out")
    parser.set_defaults(handler=_predict)


def _predict(args) -> int:
    from ..inference.load import load
    from ..inference.predict_files import predict_files
    from ..pipeline.processor import check_threshold
    from ..util import distributed
    from ..util.devices import checked_device

    check_threshold(args.threshold, "--threshold")
    check_out_folder(args.out)
    apply_threads(args.threads)
    device = distributed.init_from_environment(str(checked_device(args.device)))
    main_process = distributed.is_main_process()
    try:
        model = load(args.checkpoint, device=device, compile=args.compile)
        summary = predict_files(
            model,
            args.images,
            args.out,
            args.threshold,
            args.batch_size,
            args.amp,
            args.draw,
            args.overwrite,
            top_k=args.top_k,
        )
    finally:
        distributed.destroy()
    if not main_process:  # every rank has the whole summary; rank 0 reports it
        return 1 if summary.errors else 0
    for error in summary.errors:
        print(f"failed: {error['file']}: {error['error']}", file=sys.stderr)
    if args.compile:
        print(model.compiled_inference.summary(), file=sys.stderr)
    skipped = f", {len(summary.skipped)} non-image file(s) skipped" if summary.skipped else ""
    print(
        f"{summary.images} image(s), {summary.detections} detection(s), {len(summary.errors)} failed{skipped}; "
        f"wrote {summary.detections_file}"
    )
    return 1 if summary.errors else 0
