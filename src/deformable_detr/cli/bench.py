"""`bench TARGET`: benchmarks that print a table and write JSON."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmarks (each prints a table and writes JSON)",
        description="Benchmarks; each TARGET prints a table and writes JSON under "
        "benchmarks/results/. No assertions on time.",
    )
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for add_target in BENCH_TARGETS:
        add_target(targets)


def _add_bench_model(targets) -> None:
    parser = targets.add_parser(
        "model",
        help="our detector vs Hugging Face's, same weights: CPU time, memory, parity",
        description="Our DeformableDETR vs HF DeformableDetrForObjectDetection with identical "
        "random weights (default config, R50): forward time fp32 and bf16 "
        "autocast, peak RSS (one subprocess each), max |output difference|.",
    )
    parser.add_argument("--height", type=int, default=800, help="image height (default 800)")
    parser.add_argument("--width", type=int, default=1066, help="image width (default 1066)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards after one warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--smoke", action="store_true", help="tiny model instead of the default config")
    parser.add_argument("--out", type=Path, metavar="JSON", help="default benchmarks/results/model_cpu[_smoke].json")
    parser.set_defaults(handler=_bench_model)


def _bench_model(args) -> None:
    from ..bench.harness import write_result
    from ..bench.model import format_model_benchmark, run_model_benchmark

    out = args.out or Path("benchmarks/results") / f"model_cpu{'_smoke' if args.smoke else ''}.json"
    result = run_model_benchmark(
        args.height,
        args.width,
        args.repeats,
        args.threads,
        args.smoke,
        progress=lambda message: print(message, file=sys.stderr),
    )
    print(format_model_benchmark(result))
    write_result(out, result)
    print(f"wrote {out}")


def _add_bench_train(targets) -> None:
    parser = targets.add_parser(
        "train",
        help="seconds per training step: ours vs Hugging Face, same weights and batch",
        description="Forward + loss + backward + AdamW step of our model vs HF's with identical "
        "weights (default config, R50), same batch, same run; plus demo-preset images/s.",
    )
    parser.add_argument("--image-size", type=int, default=512, help="square image side (default 512)")
    parser.add_argument("--batch-size", type=int, default=2, help="images per step (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per model after one warm-up (default 3)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_cpu.json"), help="JSON output")
    parser.set_defaults(handler=_bench_train)


def _bench_train(args) -> None:
    from ..bench.harness import write_result
    from ..bench.train import benchmark_training, format_training_benchmark

    results = benchmark_training(args.image_size, args.batch_size, args.threads, args.repeats)
    write_result(args.out, results)
    print(format_training_benchmark(results))
    print(f"wrote {args.out}")


def _add_bench_op(targets) -> None:
    parser = targets.add_parser(
        "op",
        help="the deformable-attention operator's backends vs reference: time, GB/s, memory",
        description="Forward and forward+backward of each operator backend on the encoder "
        "(realistic and uniform locations), decoder and batch-2 shapes of an "
        "800x1066 image; speed-up over reference in the same run.",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/op_cpu.json"), help="JSON output")
    parser.set_defaults(handler=_bench_op)


def _bench_op(args) -> None:
    from ..bench.harness import write_result
    from ..bench.op import format_op_benchmark, run_op_benchmark

    results = run_op_benchmark(
        repeats=args.repeats,
        threads=args.threads,
        memory=not args.no_memory,
        progress=lambda message: print(message, file=sys.stderr),
    )
    print(format_op_benchmark(results))
    write_result(args.out, results)
    print(f"wrote {args.out}")


def _add_bench_op_triton(targets) -> None:
    parser = targets.add_parser(
        "op-triton",
        help="the Triton backend vs reference on a CUDA GPU: time, GB/s, memory",
        description="Forward and forward+backward of the triton and reference backends (and the "
        "official CUDA kernel if importable) on the encoder, decoder and batch-2 "
        "shapes, realistic and uniform locations, float32/bfloat16/float16.",
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed runs after two warm-ups (default 20)")
    parser.add_argument(
        "--dtypes", nargs="+", choices=["float32", "bfloat16", "float16"], default=["float32", "bfloat16", "float16"]
    )
    parser.add_argument(
        "--cases", nargs="+", choices=["encoder", "decoder", "encoder-b2"], default=["encoder", "decoder", "encoder-b2"]
    )
    parser.add_argument("--locations", nargs="+", choices=["realistic", "uniform"], default=["realistic", "uniform"])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU under TRITON_INTERPRET=1")
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON path (default benchmarks/results/op_triton_<gpu>.json, or triton_matrix_<triton version>.json)",
    )
    matrix = parser.add_argument_group("compile matrix (no GPU needed; exit 1 if any kernel fails to compile)")
    matrix.add_argument(
        "--compile-matrix",
        action="store_true",
        help="compile forward and backward ahead of time for every dtype, head dim, block size, L/P, arch",
    )
    matrix.add_argument(
        "--arch", type=int, nargs="+", default=[80, 90], metavar="SM", help="targets sm_SM (default 80 90; e.g. 86, 89)"
    )
    matrix.add_argument("--quick", action="store_true", help="only the cases Triton 3.6/3.7 failed before the fix")
    matrix.add_argument("--jobs", type=int, help="compiler processes (default: one per CPU)")
    parser.set_defaults(handler=_bench_op_triton)


def _bench_op_triton(args) -> int | None:
    if args.compile_matrix:
        return _bench_triton_compile_matrix(args)
    from ..bench.op_triton import format_table, run_and_write

    rows, out = run_and_write(
        args.repeats, tuple(args.dtypes), tuple(args.cases), tuple(args.locations), args.smoke, args.out
    )
    print(format_table(rows))
    print(f"wrote {out}")


def _bench_triton_compile_matrix(args) -> int:
    from ..bench.triton_matrix import run_and_write

    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs} must be >= 1")
    if min(args.arch) < 75:
        raise ConfigError(f"--arch {min(args.arch)} is not a Triton target; give sm numbers >= 75, e.g. 80 90")
    result, out = run_and_write(
        tuple(args.arch), args.quick, args.jobs, args.out, echo=lambda line: print(line, flush=True)
    )
    summary = result["summary"]
    print(f"{summary['passed']}/{summary['cells']} cells compiled in {summary['wall_s']} s ({summary['jobs']} jobs)")
    print(f"wrote {out}")
    return 1 if summary["failed"] else 0


def _add_bench_serve(targets) -> None:
    parser = targets.add_parser(
        "serve",
        help="the HTTP server under load: throughput, p50/p95 latency, memory, with and without dynamic batching",
        description="Starts `deformable-detr serve` twice per model (batching on / off) and "
        "sends a bounded load from this process over loopback.",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["demo", "r50"],
        choices=["demo", "r50", "smoke"],
        help="models to serve (default demo r50)",
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 4, 8], help="clients in flight (default 1 4 8)"
    )
    parser.add_argument("--requests", type=int, help="requests per run (default 200; 24 for r50)")
    parser.add_argument("--smoke", action="store_true", help="a tiny model, 16 requests at concurrency 1 and 4")
    parser.add_argument("--out", type=Path, metavar="JSON", help="default benchmarks/results/serve_cpu[_smoke].json")
    parser.set_defaults(handler=_bench_serve)


def _bench_serve(args) -> None:
    from ..bench.harness import write_result
    from ..bench.serve import format_serve_benchmark, run_serve_benchmark

    if min(args.concurrency) < 1 or (args.requests is not None and args.requests < 1):
        raise ConfigError("--concurrency and --requests must be >= 1")
    models, concurrency = (["smoke"], [1, 4]) if args.smoke else (args.models, args.concurrency)
    requests = {name: args.requests for name in models} if args.requests else None
    result = run_serve_benchmark(
        tuple(models), tuple(concurrency), requests, progress=lambda message: print(message, file=sys.stderr)
    )
    print(format_serve_benchmark(result))
    out = args.out or Path("benchmarks/results") / f"serve_cpu{'_smoke' if args.smoke else ''}.json"
    write_result(out, result)
    print(f"wrote {out}")


def _add_bench_predict(targets) -> None:
    parser = targets.add_parser(
        "predict",
        help="images/s end to end (decode -> preprocess -> model -> postprocess): "
        "ours fp32/bf16/compile, onnxruntime, Hugging Face",
        description="End-to-end images/s on the same JPEG files and random weights: our "
        "model.predict (eager fp32, bf16 autocast, torch.compile), the exported "
        "ONNX file in onnxruntime, and HF DeformableDetrImageProcessor + "
        "DeformableDetrForObjectDetection. Interleaved rounds, minimum reported.",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 800], help="shorter sides (default 512 800)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="images per call (default 1 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="METHOD",
        help="subset of ours-fp32 ours-bf16 ours-compile onnxruntime hf (default all)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model, 64 px, batches 1 and 2, no torch.compile")
    parser.add_argument("--out", type=Path, metavar="JSON", help="default benchmarks/results/predict_cpu[_smoke].json")
    parser.set_defaults(handler=_bench_predict)


def _bench_predict(args) -> None:
    from ..bench.harness import write_result
    from ..bench.predict import METHODS, format_predict_benchmark, run_predict_benchmark

    if min(args.sizes + args.batch_sizes + [args.repeats, args.threads]) < 1:
        raise ConfigError("--sizes, --batch-sizes, --repeats and --threads must be >= 1")
    sizes, batches = ((64,), (1, 2)) if args.smoke else (tuple(args.sizes), tuple(args.batch_sizes))
    out = args.out or Path("benchmarks/results") / f"predict_cpu{'_smoke' if args.smoke else ''}.json"
    result = run_predict_benchmark(
        sizes,
        batches,
        args.repeats,
        args.threads,
        args.smoke,
        tuple(args.methods or METHODS),
        progress=lambda m: print(m, file=sys.stderr),
        on_cell=lambda partial: write_result(out, partial),  # each finished cell is kept, even if a later one dies
    )
    print(format_predict_benchmark(result))
    print(f"wrote {write_result(out, result)}")


# `bench` targets, in `--help` order. To add one, append its `_add_bench_<name>(targets)` function here.
BENCH_TARGETS = [
    _add_bench_model,
    _add_bench_train,
    _add_bench_op,
    _add_bench_op_triton,
    _add_bench_serve,
    _add_bench_predict,
]
