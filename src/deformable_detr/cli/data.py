"""`make-dataset` and `check-data`: render the synthetic dataset, list a dataset's problems."""

from __future__ import annotations

import sys
from pathlib import Path


def register_make_dataset(subparsers) -> None:
    parser = subparsers.add_parser(
        "make-dataset",
        help="render the synthetic shapes dataset (COCO format)",
        description="Render OUT/{train,val}/images/*.jpg and OUT/{train,val}/annotations.json.",
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="output folder")
    parser.add_argument("--train", type=int, default=2000, help="training images (default 2000)")
    parser.add_argument("--val", type=int, default=250, help="validation images (default 250)")
    parser.add_argument("--image-size", type=int, default=256, help="longer image side in px (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="the output is a pure function of the seed (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument(
        "--classes",
        default="demo",
        metavar="SET|NAMES",
        help="class set: demo (circle, square, triangle, star, ring, cross), transfer (hexagon, crescent, "
        "arrow, semicircle), or comma-separated shape names (default demo)",
    )
    parser.add_argument(
        "--objects-per-image",
        type=int,
        nargs=2,
        default=(1, 12),
        metavar=("MIN", "MAX"),
        help="objects drawn per image, uniform in MIN..MAX (default 1 12)",
    )
    parser.add_argument(
        "--object-size",
        type=float,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="box side in px, log-uniform in MIN..MAX (default: a COCO-like mix, about half under 32 px)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT/train and OUT/val of an earlier dataset (nothing else)"
    )
    parser.set_defaults(handler=_make_dataset)


def _make_dataset(args) -> None:
    import shutil

    from tqdm import tqdm

    from ..data.synthetic import check_object_options, make_dataset, resolve_classes
    from ..errors import ConfigError

    resolve_classes(args.classes)  # bad options fail before anything in OUT is replaced
    check_object_options(tuple(args.objects_per_image), args.object_size)
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"make-dataset: OUT {args.out} is a file; give a folder")
    if args.out.is_dir() and any(args.out.iterdir()):
        if not args.overwrite:
            raise ConfigError(
                f"make-dataset: {args.out} is not empty (a new dataset would mix with what is there); "
                "choose a new folder, or --overwrite to replace its train/ and val/"
            )
        for split in ("train", "val"):
            if (args.out / split).is_dir():
                shutil.rmtree(args.out / split)

    with tqdm(total=args.train + args.val, unit="img", desc="rendering", delay=1) as bar:
        splits = make_dataset(
            args.out,
            args.train,
            args.val,
            args.image_size,
            args.seed,
            args.workers,
            progress=bar.update,
            classes=args.classes,
            objects_per_image=tuple(args.objects_per_image),
            object_size=None if args.object_size is None else tuple(args.object_size),
        )
    for name, paths in splits.items():
        print(f"{name}: {paths.images_dir}  {paths.annotations_file}")


def register_check_data(subparsers) -> None:
    parser = subparsers.add_parser(
        "check-data",
        help="list every problem of a dataset, any format (exit 1 if any; 2 if there is no dataset there)",
        description="Check a COCO, YOLO or Pascal VOC dataset (format detected, or --format): "
        "every split of DIR; or one COCO split given as --images with --annotations.",
    )
    parser.add_argument("dir", type=Path, nargs="?", metavar="DIR", help="dataset folder")
    parser.add_argument(
        "--format", default="auto", choices=("auto", "coco", "yolo", "voc"), help="dataset format (default auto)"
    )
    parser.add_argument("--images", type=Path, metavar="DIR", help="images folder (with --annotations)")
    parser.add_argument("--annotations", type=Path, metavar="FILE", help="instances JSON (with --images)")
    parser.add_argument("--examples", type=int, default=3, help="example messages shown per problem kind (default 3)")
    parser.set_defaults(handler=_check_data)


def _check_data(args) -> int:
    from ..data.check import check_dataset, check_split
    from ..data.formats import dataset_splits, detect_format, read_split
    from ..errors import ConfigError, DatasetError

    explicit = args.images is not None or args.annotations is not None
    if (args.dir is not None) == explicit or (explicit and (args.images is None or args.annotations is None)):
        raise ConfigError("check-data takes either DIR or both --images and --annotations")
    # Nothing to check (a missing path, a folder that is no dataset) is bad usage, exit 2: DatasetError below.
    if explicit and not args.annotations.is_file():
        raise ConfigError(f"{args.annotations}: annotations file not found; pass the COCO instances JSON")
    if explicit and not args.images.is_dir():
        raise ConfigError(f"{args.images}: images folder not found; pass the folder holding the image files")
    if not explicit and args.format == "auto":
        detect_format(args.dir)
    elif not explicit and not args.dir.is_dir():
        raise ConfigError(f"{args.dir}: dataset folder not found")
    try:
        if explicit:
            reports = [check_dataset(args.images, args.annotations)]
        else:
            reports = [
                check_split(read_split(args.dir, name, args.format)) for name in dataset_splits(args.dir, args.format)
            ]
    except DatasetError as error:  # a malformed file is a problem found (exit 1), not a usage error
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(report.format(args.examples) for report in reports))
    return 0 if all(report.ok for report in reports) else 1


def register_convert(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a YOLO / Pascal VOC / COCO dataset to COCO format",
        description="Write OUT/<split>/images/ + OUT/<split>/annotations.json for every split "
        "of SRC (images hard-linked where possible, else copied).",
    )
    parser.add_argument("src", type=Path, metavar="SRC", help="dataset folder")
    parser.add_argument("--to", required=True, choices=("coco",), help="output format")
    parser.add_argument("out", type=Path, metavar="OUT", help="output folder (must not exist or be empty)")
    parser.add_argument(
        "--format", default="auto", choices=("auto", "coco", "yolo", "voc"), help="SRC's format (default auto)"
    )
    parser.set_defaults(handler=_convert)


def _convert(args) -> int:
    from ..data.formats import convert_dataset

    written = convert_dataset(args.src, args.out, args.format)
    for name, split in written.items():
        print(f"{name}: {split.images} images, {split.boxes} boxes -> {split.annotations_file}")
        if split.left_out:
            kinds = ", ".join(f"{count} {kind}" for kind, count in split.left_out.items())
            print(f"  left out: {kinds} (`deformable-detr check-data {args.src}` lists them)")
        if split.clipped:
            print(
                f"  {split.clipped} box{'es' if split.clipped > 1 else ''} clipped to the image (at most 1 px past the border)"
            )
        if split.labels_without_image:
            names = split.labels_without_image
            shown = ", ".join(names[:3]) + (f", ... ({len(names) - 3} more)" if len(names) > 3 else "")
            print(f"  not converted: {len(names)} label_without_image ({shown})")
    return 0
