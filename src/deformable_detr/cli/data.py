"""`make-dataset` and `check-data`: render the synthetic dataset, list a dataset's problems."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register_make_dataset(subparsers) -> None:
    parser = subparsers.add_parser("make-dataset", help="render the synthetic shapes dataset (COCO format)",
                                   description="Render OUT/{train,val}/images/*.jpg and OUT/{train,val}/annotations.json.")
    parser.add_argument("out", type=Path, metavar="OUT", help="output folder")
    parser.add_argument("--train", type=int, default=2000, help="training images (default 2000)")
    parser.add_argument("--val", type=int, default=250, help="validation images (default 250)")
    parser.add_argument("--image-size", type=int, default=256, help="longer image side in px (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="the output is a pure function of the seed (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.set_defaults(handler=_make_dataset)


def _make_dataset(args) -> None:
    from tqdm import tqdm

    from ..data.synthetic import make_dataset

    with tqdm(total=args.train + args.val, unit="img", desc="rendering", delay=1) as bar:
        splits = make_dataset(args.out, args.train, args.val, args.image_size, args.seed, args.workers, progress=bar.update)
    for name, paths in splits.items():
        print(f"{name}: {paths.images_dir}  {paths.annotations_file}")



def register_check_data(subparsers) -> None:
    parser = subparsers.add_parser("check-data", help="list every problem of a COCO dataset (exit 1 if any)",
                                   description="Check a COCO dataset: DIR holding images/ + annotations.json, or "
                                               "split subfolders (train/, val/); or --images with --annotations.")
    parser.add_argument("dir", type=Path, nargs="?", metavar="DIR", help="dataset or split folder")
    parser.add_argument("--images", type=Path, metavar="DIR", help="images folder (with --annotations)")
    parser.add_argument("--annotations", type=Path, metavar="FILE", help="instances JSON (with --images)")
    parser.add_argument("--examples", type=int, default=3, help="example messages shown per problem kind (default 3)")
    parser.set_defaults(handler=_check_data)


def _check_data(args) -> int:
    from ..data.check import check_dataset, find_splits
    from ..data.coco import DatasetError

    explicit = args.images is not None or args.annotations is not None
    if (args.dir is not None) == explicit or (explicit and (args.images is None or args.annotations is None)):
        raise ValueError("check-data takes either DIR or both --images and --annotations")
    splits = find_splits(args.dir) if args.dir is not None else [(args.images, args.annotations)]
    try:
        reports = [check_dataset(images_dir, annotations_file) for images_dir, annotations_file in splits]
    except DatasetError as error:  # a malformed file is a problem found, not a usage error
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(report.format(args.examples) for report in reports))
    return 0 if all(report.ok for report in reports) else 1
