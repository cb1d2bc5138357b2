"""The `deformable-detr` command: thin handlers that parse arguments, call one library function, print.

Exit status: 0 success, 1 the work found problems (check-data), 2 bad usage or unusable input
(one line `error: ...` on stderr; `--debug` adds the traceback).

Adding a command: write `_add_<name>(subparsers)` that registers its parser with
`parser.set_defaults(handler=_<name>)`, write the handler `_<name>(args) -> int | None` (under ~15
lines; import the library inside it so `--help` stays fast), and append `_add_<name>` to `COMMANDS`
at the bottom of this file.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from . import __version__


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command in `COMMANDS` registered."""
    parser = _Parser(
        prog="deformable-detr",
        description="Deformable DETR: train, evaluate and inspect object detectors.",
        epilog="exit status: 0 success, 1 problems found (check-data), 2 bad usage or unusable input",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]) and return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except (ValueError, OSError, KeyError) as error:  # library errors are one-line messages naming the fix
        if args.debug:
            traceback.print_exc()
        message = str(error) if not isinstance(error, KeyError) else f"missing key {error}"
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


# ----------------------------------------------------------------------------- make-dataset
def _add_make_dataset(subparsers) -> None:
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

    from .data.synthetic import make_dataset

    with tqdm(total=args.train + args.val, unit="img", desc="rendering", delay=1) as bar:
        splits = make_dataset(args.out, args.train, args.val, args.image_size, args.seed, args.workers, progress=bar.update)
    for name, paths in splits.items():
        print(f"{name}: {paths.images_dir}  {paths.annotations_file}")


# ----------------------------------------------------------------------------- eval
def _add_eval(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="COCO box AP of detections",
                                   description="COCO box evaluation (pycocotools) of a predictions file.")
    source = parser.add_mutually_exclusive_group(required=True)  # what to evaluate; add --checkpoint here
    source.add_argument("--predictions", type=Path, metavar="FILE", help="COCO results JSON (list of detections)")
    parser.add_argument("--annotations", type=Path, metavar="FILE", help="COCO ground-truth instances JSON")
    parser.add_argument("--out", type=Path, metavar="JSON", help="also write the metrics to this JSON file")
    parser.add_argument("--verbose", action="store_true", help="show pycocotools' own output")
    parser.set_defaults(handler=_eval)


def _eval(args) -> None:
    from .evaluation.coco_eval import evaluate_detections, format_metrics_table

    if args.annotations is None:
        raise ValueError("eval --predictions needs --annotations FILE (the ground truth)")
    metrics = evaluate_detections(args.annotations, args.predictions, verbose=args.verbose)
    print(format_metrics_table(metrics))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(metrics, indent=2) + "\n")


# ----------------------------------------------------------------------------- check-data
def _add_check_data(subparsers) -> None:
    parser = subparsers.add_parser("check-data", help="list every problem of a COCO dataset (exit 1 if any)",
                                   description="Check a COCO dataset: DIR holding images/ + annotations.json, or "
                                               "split subfolders (train/, val/); or --images with --annotations.")
    parser.add_argument("dir", type=Path, nargs="?", metavar="DIR", help="dataset or split folder")
    parser.add_argument("--images", type=Path, metavar="DIR", help="images folder (with --annotations)")
    parser.add_argument("--annotations", type=Path, metavar="FILE", help="instances JSON (with --images)")
    parser.add_argument("--examples", type=int, default=3, help="example messages shown per problem kind (default 3)")
    parser.set_defaults(handler=_check_data)


def _check_data(args) -> int:
    from .data.check import check_dataset, find_splits
    from .data.coco import DatasetError

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


# ----------------------------------------------------------------------------- demo
DEMO_DIR = Path("demo_out")
DEMO_DATA = dict(num_train=2000, num_val=250, image_size=256, seed=0)


def _add_demo(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="end-to-end demo on the synthetic dataset",
                                   description="Make the synthetic dataset (if absent) under OUT/data and evaluate on it.")
    parser.add_argument("--out", type=Path, default=DEMO_DIR, help=f"output folder (default {DEMO_DIR})")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args) -> None:
    """Placeholder until training lands: dataset + the trivial mean-box baseline's AP on val."""
    from tqdm import tqdm

    from .data.synthetic import make_dataset
    from .evaluation.baseline import mean_box_detections
    from .evaluation.coco_eval import evaluate_detections, format_metrics_table

    data_dir = args.out / "data"
    if not all((data_dir / split / "annotations.json").is_file() for split in ("train", "val")):
        with tqdm(total=DEMO_DATA["num_train"] + DEMO_DATA["num_val"], unit="img", desc="rendering", delay=1) as bar:
            make_dataset(data_dir, **DEMO_DATA, progress=bar.update)
    train, val = (json.loads((data_dir / split / "annotations.json").read_text()) for split in ("train", "val"))
    metrics = evaluate_detections(val, mean_box_detections(train, val["images"]))
    (args.out / "baseline_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"trivial baseline (each class's mean training box on every val image), {data_dir / 'val'}:")
    print(format_metrics_table(metrics))


# ----------------------------------------------------------------------------- bench
def _add_bench(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks (each prints a table and writes JSON)",
                                   description="Benchmarks; each TARGET prints a table and writes JSON under "
                                               "benchmarks/results/. No assertions on time.")
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for add_target in BENCH_TARGETS:
        add_target(targets)


def _add_bench_model(targets) -> None:
    parser = targets.add_parser("model", help="our detector vs Hugging Face's, same weights: CPU time, memory, parity",
                                description="Our DeformableDETR vs HF DeformableDetrForObjectDetection with identical "
                                            "random weights (default config, R50): forward time fp32 and bf16 "
                                            "autocast, peak RSS (one subprocess each), max |output difference|.")
    parser.add_argument("--height", type=int, default=800, help="image height (default 800)")
    parser.add_argument("--width", type=int, default=1066, help="image width (default 1066)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards after one warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--smoke", action="store_true", help="tiny model instead of the default config")
    parser.add_argument("--out", type=Path, metavar="JSON", help="default benchmarks/results/model_cpu[_smoke].json")
    parser.set_defaults(handler=_bench_model)


def _bench_model(args) -> None:
    from .interop.benchmark import format_model_benchmark, run_model_benchmark, write_model_benchmark

    out = args.out or Path("benchmarks/results") / f"model_cpu{'_smoke' if args.smoke else ''}.json"
    result = run_model_benchmark(args.height, args.width, args.repeats, args.threads, args.smoke,
                                 progress=lambda message: print(message, file=sys.stderr))
    print(format_model_benchmark(result))
    write_model_benchmark(result, out)
    print(f"wrote {out}")


# `bench` targets, in `--help` order. To add one, append its `_add_bench_<name>(targets)` function here.
BENCH_TARGETS = [_add_bench_model]


# ----------------------------------------------------------------------------- registry
# Every command, in `--help` order. To add one, append its `_add_<name>` function here.
COMMANDS = [_add_make_dataset, _add_eval, _add_check_data, _add_demo, _add_bench]

if __name__ == "__main__":
    sys.exit(main())
