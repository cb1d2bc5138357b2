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
    source.add_argument("--checkpoint", type=Path, metavar="FILE", help="trained checkpoint (OUT/checkpoint.pth or best.pth) to run on --data")
    parser.add_argument("--data", type=Path, metavar="DIR", help="with --checkpoint: dataset folder (images/ + annotations.json, or one with val/)")
    parser.add_argument("--device", default="cpu", help="with --checkpoint: cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--annotations", type=Path, metavar="FILE", help="COCO ground-truth instances JSON")
    parser.add_argument("--out", type=Path, metavar="JSON", help="also write the metrics to this JSON file")
    parser.add_argument("--verbose", action="store_true", help="show pycocotools' own output")
    parser.set_defaults(handler=_eval)


def _eval(args) -> None:
    from .evaluation.coco_eval import evaluate_detections, format_metrics_table

    if args.checkpoint is not None:
        metrics = _eval_checkpoint(args)
    elif args.annotations is None:
        raise ValueError("eval --predictions needs --annotations FILE (the ground truth)")
    else:
        metrics = evaluate_detections(args.annotations, args.predictions, verbose=args.verbose)
    print(format_metrics_table(metrics))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(metrics, indent=2) + "\n")


def _eval_checkpoint(args) -> dict:
    """eval --checkpoint CKPT --data DIR: DIR holds images/ + annotations.json, or a val/ split with them."""
    from .training.engine import evaluate_checkpoint

    if args.data is None:
        raise ValueError("eval --checkpoint needs --data DIR (images/ + annotations.json, or a folder with val/)")
    split = args.data / "val" if (args.data / "val" / "annotations.json").is_file() else args.data
    images_dir = args.annotations.parent / "images" if args.annotations else split / "images"
    return evaluate_checkpoint(args.checkpoint, images_dir, args.annotations or split / "annotations.json", args.device)


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
DEMO_DATA = dict(num_train=2000, num_val=250, image_size=256, seed=0)  # the synthetic dataset the demo renders


def _add_demo(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="make synthetic data, train a small detector on the CPU, evaluate, draw",
                                   description="End to end in about 10 minutes on 2 CPU cores: render the synthetic shapes "
                                               "dataset (if absent) under OUT/data, train the `demo` preset, print the val AP "
                                               "table, write curves and a picture of validation predictions.")
    parser.add_argument("--out", type=Path, default=DEMO_DIR, help=f"output folder (default {DEMO_DIR})")
    parser.add_argument("--minutes", type=float, help="training time budget (default: the demo preset's)")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (for a quick check)")
    parser.add_argument("--threads", type=int, help="torch threads (default 2; use 1 while other jobs load the CPU)")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args) -> None:
    from .evaluation.coco_eval import format_metrics_table
    from .training.demo import run_demo

    _log_progress()
    result = run_demo(args.out, DEMO_DATA, minutes=args.minutes, max_steps=args.max_steps, threads=args.threads)
    train = result.train
    print(f"trained {train.steps} steps ({train.train_seconds / 60:.1f} min of training); validation AP:")
    print(format_metrics_table(train.metrics))
    print(f"data:         {result.data_dir}\ncheckpoint:   {train.checkpoint}\ncurves:       {train.output_dir / 'curves.png'}")
    print(f"predictions:  {result.predictions_image}\nmetrics:      {result.metrics_file}, {train.output_dir / 'metrics.jsonl'}")
    print(f"total time:   {result.seconds / 60:.1f} min")


# ----------------------------------------------------------------------------- train
def _log_progress() -> None:
    """Show the library's INFO lines (per-epoch summaries) on stderr, rank 0 only under torchrun."""
    import logging
    import os

    if os.environ.get("RANK", "0") == "0":
        logging.basicConfig(level=logging.INFO, format="%(message)s")


def _add_train(subparsers) -> None:
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
    from .evaluation.coco_eval import format_metrics_table
    from .training.engine import fit
    from .util import distributed

    _log_progress()
    result = fit(_train_config(args), resume=args.resume is not None)
    if distributed.is_main_process():  # under torchrun only rank 0 prints
        print(format_metrics_table(result.metrics) if result.metrics else "(not evaluated)")
        print(f"{result.steps} steps, {result.epochs} epochs; checkpoint {result.checkpoint}; metrics {result.output_dir / 'metrics.jsonl'}")
    distributed.destroy()


def _train_config(args):
    """TrainConfig from --resume / --config / --preset, then the command-line overrides."""
    import dataclasses

    from .models.config import ModelConfig
    from .training.config import TrainConfig

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


# ----------------------------------------------------------------------------- predict
def _add_predict(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="detect objects in image files with a trained checkpoint",
                                   description="Writes OUT/detections.json and OUT/<image>.png with the boxes drawn.")
    parser.add_argument("checkpoint", type=Path, help="checkpoint written by train (OUT/checkpoint.pth or best.pth)")
    parser.add_argument("images", type=Path, nargs="+", help="image files")
    parser.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default predictions)")
    parser.add_argument("--threshold", type=float, default=0.3, help="minimum score kept (default 0.3)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.set_defaults(handler=_predict)


def _predict(args) -> None:
    from .training.checkpoint import load_trained_model
    from .training.predict import predict_images

    model, config, categories = load_trained_model(args.checkpoint, args.device)
    records, drawn = predict_images(model, config, categories, args.images, args.threshold, args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detections.json").write_text(json.dumps(records, indent=2) + "\n")
    for record, image in zip(records, drawn):
        image.save(args.out / (Path(record["file"]).stem + ".png"))
        print(f"{record['file']}: {len(record['detections'])} detections")
    print(f"wrote {args.out / 'detections.json'} and {len(drawn)} drawn image(s) in {args.out}")


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


def _add_bench_train(targets) -> None:
    parser = targets.add_parser("train", help="seconds per training step: ours vs Hugging Face, same weights and batch",
                                description="Forward + loss + backward + AdamW step of our model vs HF's with identical "
                                            "weights (default config, R50), same batch, same run; plus demo-preset images/s.")
    parser.add_argument("--image-size", type=int, default=512, help="square image side (default 512)")
    parser.add_argument("--batch-size", type=int, default=2, help="images per step (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per model after one warm-up (default 3)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_cpu.json"), help="JSON output")
    parser.set_defaults(handler=_bench_train)


def _bench_train(args) -> None:
    from .training.benchmark import benchmark_training, format_training_benchmark

    results = benchmark_training(args.image_size, args.batch_size, args.threads, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(format_training_benchmark(results))
    print(f"wrote {args.out}")


def _add_bench_op(targets) -> None:
    parser = targets.add_parser("op", help="the deformable-attention operator's backends vs reference: time, GB/s, memory",
                                description="Forward and forward+backward of each operator backend on the encoder "
                                            "(realistic and uniform locations), decoder and batch-2 shapes of an "
                                            "800x1066 image; speed-up over reference in the same run.")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/op_cpu.json"), help="JSON output")
    parser.set_defaults(handler=_bench_op)


def _bench_op(args) -> None:
    from .ops.benchmark import format_op_benchmark, run_op_benchmark, write_op_benchmark

    results = run_op_benchmark(repeats=args.repeats, threads=args.threads, memory=not args.no_memory,
                               progress=lambda message: print(message, file=sys.stderr))
    print(format_op_benchmark(results))
    write_op_benchmark(results, args.out)
    print(f"wrote {args.out}")


# `bench` targets, in `--help` order. To add one, append its `_add_bench_<name>(targets)` function here.
BENCH_TARGETS = [_add_bench_model, _add_bench_train, _add_bench_op]


# ----------------------------------------------------------------------------- registry
# Every command, in `--help` order. To add one, append its `_add_<name>` function here.
COMMANDS = [_add_make_dataset, _add_eval, _add_check_data, _add_demo, _add_train, _add_predict, _add_bench]

if __name__ == "__main__":
    sys.exit(main())
