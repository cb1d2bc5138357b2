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
        help="our detector vs Hugging Face's, same weights: time, memory, parity (CPU or CUDA)",
        description="Our DeformableDETR vs HF DeformableDetrForObjectDetection with identical "
        "random weights (default config, R50): forward time fp32 and bf16 "
        "autocast, peak RSS (CPU: one subprocess each) or peak GPU memory, max |output difference|.",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--height", type=int, default=800, help="image height (default 800)")
    parser.add_argument("--width", type=int, default=1066, help="image width (default 1066)")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[1], help="images per forward, each measured (default 1)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards after one warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--smoke", action="store_true", help="tiny model instead of the default config")
    parser.add_argument(
        "--out", type=Path, metavar="JSON", help="default benchmarks/results/model_{cpu,gpu}[_smoke].json"
    )
    parser.set_defaults(handler=_bench_model)


def _bench_model(args) -> None:
    from ..bench.harness import write_result
    from ..bench.model import format_model_benchmark, run_model_benchmark
    from ..util.devices import checked_device

    kind = "gpu" if checked_device(args.device).type == "cuda" else "cpu"
    out = args.out or Path("benchmarks/results") / f"model_{kind}{'_smoke' if args.smoke else ''}.json"
    result = run_model_benchmark(
        args.height,
        args.width,
        args.repeats,
        args.threads,
        args.smoke,
        progress=lambda message: print(message, file=sys.stderr),
        device=args.device,
        batch_sizes=tuple(args.batch_sizes),
    )
    print(format_model_benchmark(result))
    write_result(out, result)
    print(f"wrote {out}")


def _add_bench_train(targets) -> None:
    parser = targets.add_parser(
        "train",
        help="time of one training step: ours vs Hugging Face, same weights and batch (CPU or CUDA)",
        description="Forward + loss + backward + clip + AdamW step of our model vs HF's with identical "
        "weights (default config, R50), same batch, same run, per precision; also forward + loss + backward "
        "alone and, on CUDA, the peak memory of a step; plus demo-preset images/s. On CUDA at batch 2 x "
        "800x1066 our times are also divided into the reference implementation's 98 ms (H200, fp32).",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--image-size", type=int, default=512, help="square image side (default 512)")
    parser.add_argument("--height", type=int, help="image height (with --width; overrides --image-size)")
    parser.add_argument("--width", type=int, help="image width (with --height)")
    parser.add_argument("--batch-size", type=int, default=2, help="images per step (default 2)")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "bf16"],
        help="fp32 and/or bf16 autocast (default fp32 on the CPU, both on CUDA)",
    )
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per model after one warm-up (default 3)")
    parser.add_argument("--smoke", action="store_true", help="tiny model (checks the benchmark in seconds)")
    parser.add_argument(
        "--out", type=Path, metavar="JSON", help="default benchmarks/results/train_cpu.json (train_gpu.json on CUDA)"
    )
    parser.set_defaults(handler=_bench_train)


def _bench_train(args) -> None:
    from ..bench.harness import write_result
    from ..bench.train import benchmark_training, format_training_benchmark
    from ..util.devices import checked_device

    cuda = checked_device(args.device).type == "cuda"
    if (args.height is None) != (args.width is None):
        raise ConfigError("bench train: give --height and --width together (or --image-size for squares)")
    if min(args.image_size, args.batch_size, args.threads, args.repeats, args.height or 1, args.width or 1) < 1:
        raise ConfigError(
            "bench train: --image-size, --height, --width, --batch-size, --threads, --repeats must be >= 1"
        )
    precisions = tuple(args.precisions or (("fp32", "bf16") if cuda else ("fp32",)))
    results = benchmark_training(
        args.image_size,
        args.batch_size,
        args.threads,
        args.repeats,
        device=args.device,
        height=args.height,
        width=args.width,
        precisions=precisions,
        smoke=args.smoke,
    )
    out = (
        args.out
        or Path("benchmarks/results") / f"train_{'gpu' if cuda else 'cpu'}{'_smoke' if args.smoke else ''}.json"
    )
    write_result(out, results)
    print(format_training_benchmark(results))
    print(f"wrote {out}")


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
    parser.add_argument(
        "--smoke", action="store_true", help="tiny shapes: on the GPU if any, else on the CPU under TRITON_INTERPRET=1"
    )
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
        "ours fp32/bf16, compiled fp32/bf16, onnxruntime, Hugging Face",
        description="End-to-end images/s and ms per image (and of the model alone) on the same JPEG files "
        "and random weights: our model.predict (eager fp32, bf16 autocast, compiled fp32 and bf16: "
        "torch.compile, CUDA graphs on a GPU), the exported ONNX file in onnxruntime (CPU only), and HF "
        "DeformableDetrImageProcessor + DeformableDetrForObjectDetection. Interleaved rounds, minimum "
        "reported; each method's first call (compilation included) is reported apart.",
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
        help="subset of ours-fp32 ours-bf16 ours-compile ours-compile-bf16 onnxruntime hf (default: all that "
        "run on --device; onnxruntime is CPU only)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N for our models and HF's (default cpu)")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny model, 64 px, batches 1 and 2 (compiled methods only if named)"
    )
    parser.add_argument(
        "--out", type=Path, metavar="JSON", help="default benchmarks/results/predict_{cpu,gpu}[_smoke].json"
    )
    parser.set_defaults(handler=_bench_predict)


def _bench_predict(args) -> None:
    from ..bench.harness import write_result
    from ..bench.predict import format_predict_benchmark, run_predict_benchmark
    from ..util.devices import checked_device

    if min(args.sizes + args.batch_sizes + [args.repeats, args.threads]) < 1:
        raise ConfigError("--sizes, --batch-sizes, --repeats and --threads must be >= 1")
    kind = "gpu" if checked_device(args.device).type == "cuda" else "cpu"
    sizes, batches = ((64,), (1, 2)) if args.smoke else (tuple(args.sizes), tuple(args.batch_sizes))
    out = args.out or Path("benchmarks/results") / f"predict_{kind}{'_smoke' if args.smoke else ''}.json"
    result = run_predict_benchmark(
        sizes,
        batches,
        args.repeats,
        args.threads,
        args.smoke,
        tuple(args.methods) if args.methods else None,
        progress=lambda m: print(m, file=sys.stderr),
        on_cell=lambda partial: write_result(out, partial),  # each finished cell is kept, even if a later one dies
        device=args.device,
    )
    print(format_predict_benchmark(result))
    print(f"wrote {write_result(out, result)}")


def _add_bench_demo(targets) -> None:
    parser = targets.add_parser(
        "demo",
        help="the demo recipe trained on a device (e.g. CUDA): time per step, images/s, validation AP",
        description="Renders the demo data (if absent) under --work, trains the demo preset on --device, "
        "predicts every validation image and evaluates the detections (or, without pycocotools, keeps them "
        "for `deformable-detr eval` elsewhere); compares the AP with the CPU demo's.",
    )
    parser.add_argument("--device", default="cuda", help="cpu, cuda or cuda:N (default cuda)")
    parser.add_argument(
        "--work", type=Path, default=Path("demo_bench"), help="data and run folder (default demo_bench)"
    )
    parser.add_argument("--max-steps", type=int, help="optimizer steps (default: the demo preset's)")
    parser.add_argument("--smoke", action="store_true", help="16 images of 96 px, 4 steps (checks the benchmark)")
    parser.add_argument(
        "--out", type=Path, metavar="JSON", help="default benchmarks/results/demo_{cpu,gpu}[_smoke].json"
    )
    parser.set_defaults(handler=_bench_demo)


def _bench_demo(args) -> None:
    from ..bench.demo import format_demo_benchmark, run_demo_benchmark
    from ..bench.harness import write_result
    from ..util.devices import checked_device

    kind = "gpu" if checked_device(args.device).type == "cuda" else "cpu"
    if args.max_steps is not None and args.max_steps < 1:
        raise ConfigError(f"bench demo: --max-steps {args.max_steps} must be >= 1")
    result = run_demo_benchmark(args.device, args.work, args.max_steps, args.smoke)
    out = args.out or Path("benchmarks/results") / f"demo_{kind}{'_smoke' if args.smoke else ''}.json"
    print(format_demo_benchmark(result))
    print(f"wrote {write_result(out, result)}")


def _add_bench_predict_load(targets) -> None:
    parser = targets.add_parser(
        "predict-load",
        help="predict over many generated files with bad ones among them: all processed, bad listed, memory flat",
        description="Generates --images small files of mixed sizes and formats with a bad file every 37th, then "
        "runs `predict` (tiny random model, 128 px) over the first 10 %% and over all of them in one process: "
        "files processed, bad files listed (exactly the bad ones), seconds and peak RSS after each run.",
    )
    parser.add_argument("--images", type=int, default=1000, help="files to generate (default 1000)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument(
        "--out",
        type=Path,
        metavar="JSON",
        default=Path("benchmarks/results/predict_load.json"),
        help="default benchmarks/results/predict_load.json",
    )
    parser.set_defaults(handler=_bench_predict_load)


def _bench_predict_load(args) -> None:
    from ..bench.harness import write_result
    from ..bench.predict_load import format_predict_load, run_predict_load

    if min(args.images, args.batch_size, args.threads) < 1:
        raise ConfigError("bench predict-load: --images, --batch-size and --threads must be >= 1")
    result = run_predict_load(args.images, batch_size=args.batch_size, threads=args.threads)
    print(format_predict_load(result))
    print(f"wrote {write_result(args.out, result)}")


# `bench` targets, in `--help` order. To add one, append its `_add_bench_<name>(targets)` function here.
BENCH_TARGETS = [
    _add_bench_model,
    _add_bench_train,
    _add_bench_op,
    _add_bench_op_triton,
    _add_bench_serve,
    _add_bench_predict,
    _add_bench_predict_load,
    _add_bench_demo,
]
