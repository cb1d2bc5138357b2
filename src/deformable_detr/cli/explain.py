"""`explain`: draw where the model looked for its top detections (and at one pixel)."""

from __future__ import annotations

from pathlib import Path

from .options import add_detection_options, add_run_options, apply_threads, check_out_folder


def _pixel(text: str) -> tuple[float, float]:
    import argparse

    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pixel wants x,y in pixels (e.g. 120,64), got {text!r}") from None
    return x, y


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="draw the sampling points and attention weights behind detections",
        description="Writes DIR/detection_N.png (the last decoder layer's sampling points of each top detection, "
        "per level, coloured by attention weight, with the reference point and the box), DIR/pixel.png "
        "with --pixel (the last encoder layer's sampling points there), DIR/explain.json and "
        "DIR/index.html showing them.",
    )
    parser.add_argument("image", type=Path, metavar="IMAGE", help="image file")
    parser.add_argument(
        "--checkpoint", required=True, type=Path, metavar="CKPT", help="weights in any format `predict` reads"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("explain"), metavar="DIR", help="output folder (default explain)"
    )
    add_detection_options(parser, top_k=5, top_k_help="explain the K best detections (default 5)")
    parser.add_argument("--pixel", type=_pixel, metavar="X,Y", help="also explain the encoder at this pixel")
    add_run_options(parser, batch_size=False)  # one image
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty --out, replacing an earlier explanation"
    )
    parser.set_defaults(handler=_explain)


def _explain(args) -> None:
    from ..errors import ConfigError
    from ..inference.explain import explain
    from ..inference.load import load
    from ..pipeline.decode import load_rgb_image
    from ..pipeline.processor import check_threshold
    from ..util.devices import checked_device
    from ..viz.sampling_points import check_explanation_folder, save_explanation

    check_threshold(args.threshold, "--threshold")
    apply_threads(args.threads)
    if args.out.resolve() == args.image.resolve().parent:
        raise ConfigError(f"--out {args.out}: is the image's own folder; choose another folder for the drawings")
    if args.image.is_dir():
        raise ConfigError(f"{args.image}: is a folder; explain takes one image file (predict takes a folder)")
    check_out_folder(args.out)
    check_explanation_folder(args.out, args.overwrite)  # before minutes of loading and computing
    model = load(args.checkpoint, device=checked_device(args.device))
    image = load_rgb_image(args.image)
    explanation = explain(model, image, top_k=args.top_k, threshold=args.threshold, pixel=args.pixel, amp=args.amp)
    index = save_explanation(image, explanation, args.out, source=args.image.name, overwrite=args.overwrite)
    pixel = " and the pixel" if explanation["pixel"] else ""
    print(f"explained {len(explanation['detections'])} detection(s){pixel}; open {index}")
