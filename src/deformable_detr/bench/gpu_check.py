"""`make gpu-check`: everything that needs a GPU, in one run under a time budget, on a CUDA machine.

    PYTHONPATH=src python3 -m deformable_detr.bench.gpu_check [--budget 360] [--steps STEP ...] [--out DIR]
    PYTHONPATH=src python3 -m deformable_detr.bench.gpu_check --smoke      # dry run on a CPU machine

Steps, most important first; each runs in its own process group with its own time limit, clipped to what is
left of the budget, and a step that fails or times out does not stop the next one:

    env        nvidia-smi; torch / triton / transformers / onnxruntime / pycocotools / ... versions
    gpu-tests  pytest -m gpu (the tests that need CUDA)
    tests      the fast suite (not slow, not gpu): one pytest process per test file, in parallel
    op-triton  bench op-triton: fp32 and bf16, encoder and decoder, realistic locations
    model      bench model --device cuda --batch-sizes 1 8
    predict    bench predict --device cuda at 800 px, batch 1: its default methods there (eager and compiled,
               fp32 and bf16, HF), if this checkout's bench predict has --device
    train      bench train --device cuda: batch 2 x 800x1066, fp32 and bf16, vs HF and the reference figure
    demo       bench demo --device cuda: the fixed-step demo recipe; its AP (or its detections, kept for
               `deformable-detr eval` where pycocotools is installed)

A step is not started when less than its minimum time is left (it is reported as "not run" with the command
that runs the rest). Tests run with DDETR_ALLOW_SKIPS=1: a GPU machine may lack optional packages
(pycocotools, the serve extra); what skipped, and why, is in the summary.

Writes to --out (default $OUT, else benchmarks/results/gpu_check; with --smoke .cache/gpu_check_smoke), after every step, so a killed run keeps the
finished ones: gpu_check_summary.json (each step's status and time, the test counts and failures, every
benchmark's JSON), gpu_check.log (each step's output, the end of it when long) and gpu_check_files.tar.gz
(benchmarks/results/*_gpu.json, the junit XML files, every step's full log, the demo's detections and ground
truth). The benchmark JSON also go to benchmarks/results/*_gpu.json (with --smoke: OUT/results/*_smoke.json).
Prints one line per step as it goes and the summary table last. Exit status 1 if any step failed or timed out.

--smoke runs every step on the CPU with tiny settings: a dry run of this script where there is no GPU.

This module runs the steps under the budget; the steps are in `gpu_check_steps`, the report in `gpu_report`,
and `timed_command` runs each command in its own process group with a time limit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .gpu_check_steps import SMOKE_LIMIT_S, STEP_FUNCTIONS, Check
from .gpu_report import StepResult, bench_table, format_report, write_outputs
from .timed_command import kill_all, log_tail

STEPS = ("env", "gpu-tests", "tests", "op-triton", "model", "predict", "train", "demo")
RESERVE_S = 5  # kept for writing the summary after the last step
SMOKE_TEST_FILES = ("tests/util/test_box_ops.py", "tests/models/test_config.py")


def run(check: Check, steps: list[str], budget: float) -> int:
    started = time.monotonic()
    header = {"smoke": check.smoke, "budget_s": budget, "steps": steps, "jobs": check.jobs,
              "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cwd": os.getcwd()}  # fmt: skip
    results = [StepResult(name) for name in steps]
    data: dict[str, Any] = {}
    for result in results:
        function, limit, minimum = STEP_FUNCTIONS[result.name]
        if check.smoke:
            limit, minimum = SMOKE_LIMIT_S, 1
        left = check.left() - RESERVE_S
        if left < minimum:
            result.note = f"{left:.0f} s left of the budget, needs >= {minimum} s"
            print(f"[gpu-check] {result.name}: not run ({result.note})", flush=True)
            continue
        limit = min(limit, left)
        print(f"[gpu-check] {result.name}: running (limit {limit:.0f} s)", flush=True)
        step_started = time.monotonic()
        try:
            data[result.name] = function(check, result, limit)
        except Exception as error:  # one broken step must not stop the others
            result.status, result.note = "failed", f"gpu-check itself: {type(error).__name__}: {error}"[:300]
        result.seconds = time.monotonic() - step_started
        print(f"[gpu-check] {result.name}: {result.status} in {result.seconds:.0f} s {result.note}"[:300], flush=True)
        if result.status not in ("ok", "skipped"):
            print(log_tail(check.logs / f"{result.name}.log", 15), flush=True)
        write_outputs(check, header, results, data, started)
    for result in results:
        if result.status == "ok" and result.name not in ("env", "gpu-tests", "tests"):
            with contextlib.suppress(Exception):
                print(bench_table(result.name, data[result.name]), flush=True)
    write_outputs(check, header, results, data, started)
    print(format_report(header, results, data, time.monotonic() - started, budget), flush=True)
    print(f"[gpu-check] wrote {check.out}/gpu_check_summary.json, gpu_check.log, gpu_check_files.tar.gz", flush=True)
    return 0 if all(r.status in ("ok", "skipped") for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deformable_detr.bench.gpu_check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="steps to run, in this order")
    parser.add_argument("--budget", type=float, help="seconds for all steps (default 360; --smoke 3600)")
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (default $OUT, else benchmarks/results/gpu_check; --smoke: .cache/gpu_check_smoke)",
    )
    parser.add_argument("--jobs", type=int, help="parallel pytest processes in `tests` (default CPUs - 2, at most 12)")
    parser.add_argument("--test-files", nargs="+", help="test files for `tests` (default all; --smoke: two small ones)")
    parser.add_argument("--smoke", action="store_true", help="dry run on the CPU with tiny settings")
    args = parser.parse_args(argv)
    if not Path("src/deformable_detr").is_dir() or not Path("tests").is_dir():
        parser.error("run from the repository root (it needs src/ and tests/)")
    budget = args.budget or (3600.0 if args.smoke else 360.0)
    # a dry run's figures are not GPU results: they go under .cache/ (git-ignored), never beside the committed ones
    default_out = ".cache/gpu_check_smoke" if args.smoke else "benchmarks/results/gpu_check"
    out = args.out or Path(os.environ.get("OUT") or default_out)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    check = Check(
        smoke=args.smoke,
        out=out,
        results=out / "results" if args.smoke else Path("benchmarks/results"),
        work=work,
        deadline=time.monotonic() + budget,
        jobs=args.jobs or max(1, min(12, (os.cpu_count() or 2) - 2)),
        test_files=tuple(args.test_files or (SMOKE_TEST_FILES if args.smoke else ())),
    )
    check.results.mkdir(parents=True, exist_ok=True)
    check.logs.mkdir(parents=True, exist_ok=True)
    print(f"[gpu-check] steps {' '.join(args.steps)}; budget {budget:.0f} s; work {work}; out {out}", flush=True)

    def stop(signum, frame):  # killed from outside: take the steps' process groups along
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    try:
        return run(check, args.steps, budget)
    finally:
        kill_all()


if __name__ == "__main__":
    sys.exit(main())
