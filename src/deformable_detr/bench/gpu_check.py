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

Writes to --out (default $OUT, else benchmarks/results/gpu_check), after every step, so a killed run keeps the
finished ones: gpu_check_summary.json (each step's status and time, the test counts and failures, every
benchmark's JSON), gpu_check.log (each step's output, the end of it when long) and gpu_check_files.tar.gz
(benchmarks/results/*_gpu.json, the junit XML files, every step's full log, the demo's detections and ground
truth). The benchmark JSON also go to benchmarks/results/*_gpu.json (with --smoke: OUT/results/*_smoke.json).
Prints one line per step as it goes and the summary table last. Exit status 1 if any step failed or timed out.

--smoke runs every step on the CPU with tiny settings: a dry run of this script where there is no GPU.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .gpu_report import StepResult, bench_table, format_report, junit_summary, test_note, write_outputs

STEPS = ("env", "gpu-tests", "tests", "op-triton", "model", "predict", "train", "demo")
RESERVE_S = 5  # kept for writing the summary after the last step
PACKAGES = ("torch", "triton", "transformers", "onnxruntime", "onnx", "pycocotools", "fastapi", "uvicorn", "httpx",
            "hypothesis", "schemathesis", "playwright", "scipy", "numpy", "pillow", "safetensors", "pytest")  # fmt: skip
SMOKE_TEST_FILES = ("tests/util/test_box_ops.py", "tests/models/test_config.py")


@dataclass
class Check:
    """The run's settings and where things go."""

    smoke: bool
    out: Path
    results: Path  # benchmark JSON
    work: Path  # scratch: demo data, junit files, logs
    deadline: float
    python: str = sys.executable
    jobs: int = 1
    test_files: tuple[str, ...] = ()

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def name(self, stem: str) -> Path:
        """benchmarks/results/<stem>_gpu.json, or OUT/results/<stem>_smoke.json in a dry run."""
        return self.results / f"{stem}_{'smoke' if self.smoke else 'gpu'}.json"


# ----------------------------------------------------------------------------------------- processes

_running: set[subprocess.Popen] = set()
_running_lock = threading.Lock()


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in ("src", env.get("PYTHONPATH", "")) if p)
    env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


def run_command(argv: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> tuple[int, bool]:
    """Run `argv` in its own process group with stdout+stderr appended to `log`; on timeout kill the whole group.

    Returns:
        (exit status, timed out). A command that cannot start gives status 127.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        sink.write(f"$ {' '.join(argv)}\n".encode())
        sink.flush()
        try:
            process = subprocess.Popen(
                argv, stdout=sink, stderr=subprocess.STDOUT, env=env or _env(), start_new_session=True
            )
        except OSError as error:
            sink.write(f"could not start: {error}\n".encode())
            return 127, False
        with _running_lock:
            _running.add(process)
        try:
            return process.wait(timeout=max(timeout, 1)), False
        except subprocess.TimeoutExpired:
            _kill(process)
            sink.write(f"\n[gpu-check] killed after {timeout:.0f} s (time limit)\n".encode())
            return -9, True
        finally:
            with _running_lock:
                _running.discard(process)


def _kill(process: subprocess.Popen) -> None:
    """SIGKILL the process group this run started for `process` (DataLoader workers and compilers included)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _kill_all() -> None:
    with _running_lock:
        processes = list(_running)
    for process in processes:
        _kill(process)


def _tail(path: Path, lines: int = 25) -> str:
    if not path.is_file():
        return ""
    text = path.read_bytes()[-20_000:].decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


# ----------------------------------------------------------------------------------------------- steps


def step_env(check: Check, result: StepResult, limit: float) -> dict[str, Any]:
    """Versions, the GPU, nvidia-smi (its full output goes to the log)."""
    log = check.logs / "env.log"
    info: dict[str, Any] = {"python": platform.python_version(), "cpu_count": os.cpu_count(), "packages": {}}
    for package in PACKAGES:
        try:
            info["packages"][package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info["packages"][package] = None
    probe = (
        "import json, torch; c = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
        "'cuda_available': c, 'torch_cuda': torch.version.cuda, 'device_count': torch.cuda.device_count(), "
        "'gpu': torch.cuda.get_device_name() if c else None, 'capability': list(torch.cuda.get_device_capability()) "
        "if c else None, 'cudnn': torch.backends.cudnn.version() if c else None}))"
    )
    probe_log = check.work / "env_probe.json"
    completed = subprocess.run(
        [check.python, "-c", probe], capture_output=True, text=True, timeout=max(limit, 5), env=_env()
    )
    probe_log.write_text(completed.stdout)
    with open(log, "a") as sink:
        sink.write(completed.stdout + completed.stderr)
    if completed.returncode == 0:
        info.update(json.loads(completed.stdout.strip().splitlines()[-1]))
    else:
        result.note = f"torch probe failed: {_tail(log, 3)}"
    smi_rc, _ = run_command(["nvidia-smi"], log, timeout=20)
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=20,
    ) if smi_rc == 0 else None  # fmt: skip
    info["nvidia_smi"] = smi.stdout.strip() if smi is not None and smi.returncode == 0 else None
    result.status = "ok" if completed.returncode == 0 and (check.smoke or info.get("cuda_available")) else "failed"
    if result.status == "failed" and not result.note:
        result.note = "CUDA is not available to torch here (use --smoke on a CPU machine)"
    result.commands.append("nvidia-smi; python -c <torch probe>")
    return info


def step_gpu_tests(check: Check, result: StepResult, limit: float) -> dict[str, Any]:
    junit = check.work / "junit" / "gpu.xml"
    argv = [check.python, "-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider", "--durations=10"]
    argv += [f"--junitxml={junit}", "tests"]
    rc, timed_out = run_command(argv, check.logs / "gpu-tests.log", limit, _env(DDETR_ALLOW_SKIPS="1"))
    result.commands.append(" ".join(argv[1:]))
    summary = junit_summary([junit])
    result.status = "timeout" if timed_out else "ok" if rc == 0 else "failed"
    result.note = test_note(summary) + (f"; pytest exit {rc}" if rc not in (0, 1) else "")
    return summary


def step_tests(check: Check, result: StepResult, limit: float) -> dict[str, Any]:
    """The fast suite without the gpu tests (run by gpu-tests), one pytest per file, `check.jobs` at a time."""
    files = list(check.test_files) or [str(p) for p in sorted(Path("tests").rglob("test_*.py"), key=_longest_first)]
    deadline = time.monotonic() + limit
    env = _env(DDETR_ALLOW_SKIPS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    outcome: dict[str, str] = {}

    def run_file(path: str) -> None:
        left = deadline - time.monotonic()
        if left < 1:
            outcome[path] = "not run"
            return
        stem = path.removeprefix("tests/").removesuffix(".py").replace("/", "__")
        argv = [check.python, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "-m", "not slow and not gpu"]
        argv += [
            f"--junitxml={check.work / 'junit' / 'suite' / (stem + '.xml')}",
            f"--basetemp={check.work / 'tmp' / stem}",
        ]
        argv.append(path)  # each process its own --basetemp: parallel sessions must not clean up each other's
        rc, timed_out = run_command(argv, check.logs / "tests" / f"{stem}.log", left, env)
        outcome[path] = "timeout" if timed_out else "ok" if rc in (0, 5) else f"exit {rc}"  # 5: all deselected

    with concurrent.futures.ThreadPoolExecutor(max_workers=check.jobs) as pool:
        list(pool.map(run_file, files))
    result.commands.append(
        f"pytest -q -m 'not slow and not gpu' FILE, for each of {len(files)} test files, {check.jobs} in parallel"
    )
    summary = junit_summary(sorted((check.work / "junit" / "suite").glob("*.xml")))
    summary["files"] = dict(Counter(v if v in ("ok", "timeout", "not run") else "failed" for v in outcome.values()))
    summary["files_not_ok"] = {k: v for k, v in outcome.items() if v != "ok"}
    bad = {v for v in outcome.values() if v != "ok"}
    result.status = "timeout" if bad & {"timeout", "not run"} else "failed" if bad or summary["failed"] else "ok"
    result.note = test_note(summary) + f"; {len(files)} files: {summary['files']}"
    return summary


# Test files that train, serve or run subprocesses (the longest ones): started first, so none starts last.
LONG_TESTS = ("tests/test_readme.py", "tests/test_cli.py", "tests/training/", "tests/experiments/", "tests/cli/",
              "tests/inference/", "tests/serving/", "tests/interop/")  # fmt: skip


def _longest_first(path: Path) -> tuple:
    return (not str(path).startswith(LONG_TESTS), -path.stat().st_size, str(path))


def _bench(check: Check, result: StepResult, limit: float, stem: str, args: list[str]) -> dict[str, Any] | None:
    out = check.name(stem)
    argv = [check.python, "-m", "deformable_detr.cli", "bench", *args, "--out", str(out)]
    out.unlink(missing_ok=True)
    rc, timed_out = run_command(argv, check.logs / f"{result.name}.log", limit, _env(TQDM_DISABLE="1"))
    result.commands.append(" ".join(argv[2:]))
    result.status = "timeout" if timed_out else "ok" if rc == 0 else "failed"
    if out.is_file():  # bench predict writes each finished cell: a timed-out run still has some
        result.result_files.append(str(out))
        return json.loads(out.read_text())
    if result.status != "ok":
        result.note = _tail(check.logs / f"{result.name}.log", 1)[:300]
    return None


# `deformable-detr bench ...` of each benchmark step (--out is added): on CUDA, and tiny on the CPU for --smoke.
# predict: its default methods on the device (eager and compiled, fp32 and bf16, HF) at batch 1 only on CUDA, as
# each compiled method compiles for about a minute per input shape.
BENCH_ARGS = {
    "op-triton": (
        "op-triton --repeats 10 --dtypes float32 bfloat16 --cases encoder decoder --locations realistic",
        "op-triton --smoke --repeats 1 --dtypes float32 --cases decoder --locations uniform",
    ),
    "model": (
        "model --device cuda --batch-sizes 1 8 --repeats 5 --threads 4",
        "model --smoke --device cpu --height 64 --width 96 --batch-sizes 1 2 --repeats 1 --threads 1",
    ),
    "predict": (
        "predict --device cuda --sizes 800 --batch-sizes 1 --repeats 10 --threads 4",
        "predict --smoke --device cpu --repeats 1 --threads 1",
    ),
    "train": (
        "train --device cuda --height 800 --width 1066 --batch-size 2 --repeats 5 --threads 4 --precisions fp32 bf16",
        "train --smoke --device cpu --image-size 64 --repeats 1 --threads 1 --precisions fp32 bf16",
    ),
    "demo": ("demo --device cuda", "demo --smoke --device cpu"),
}


def bench_args(step: str, smoke: bool, work: Path) -> list[str]:
    """The `deformable-detr bench ...` arguments of a benchmark step, without --out."""
    args = BENCH_ARGS[step][1 if smoke else 0].split()
    return args + ["--work", str(work / "demo")] if step == "demo" else args


def _bench_step(stem: str) -> Callable:
    def step(check: Check, result: StepResult, limit: float):
        return _bench(check, result, limit, stem, bench_args(result.name, check.smoke, check.work))

    return step


def step_predict(check: Check, result: StepResult, limit: float):
    """Only where this checkout's `bench predict` takes --device (the compiled GPU path adds it)."""
    help_log = check.logs / "predict_help.log"
    run_command([check.python, "-m", "deformable_detr.cli", "bench", "predict", "--help"], help_log, 60)
    if "--device" not in help_log.read_text(errors="replace"):
        result.status, result.note = "skipped", "`bench predict` has no --device in this checkout"
        return None
    return _bench(check, result, limit, "predict", bench_args("predict", check.smoke, check.work))


# (function, time limit on the GPU, minimum time left to start it) in seconds
STEP_FUNCTIONS: dict[str, tuple[Callable, int, int]] = {
    "env": (step_env, 30, 5),
    "gpu-tests": (step_gpu_tests, 150, 30),
    "tests": (step_tests, 200, 60),
    "op-triton": (_bench_step("op_triton"), 90, 20),
    "model": (_bench_step("model"), 120, 40),
    "predict": (step_predict, 180, 90),
    "train": (_bench_step("train"), 120, 40),
    "demo": (_bench_step("demo"), 240, 100),
}
SMOKE_LIMIT_S = 900  # per step in a dry run on a slow, shared CPU


# ------------------------------------------------------------------------------------------------ main


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
            print(_tail(check.logs / f"{result.name}.log", 15), flush=True)
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
    parser.add_argument("--out", type=Path, help="output folder (default $OUT, else benchmarks/results/gpu_check)")
    parser.add_argument("--jobs", type=int, help="parallel pytest processes in `tests` (default CPUs - 2, at most 12)")
    parser.add_argument("--test-files", nargs="+", help="test files for `tests` (default all; --smoke: two small ones)")
    parser.add_argument("--smoke", action="store_true", help="dry run on the CPU with tiny settings")
    args = parser.parse_args(argv)
    if not Path("src/deformable_detr").is_dir() or not Path("tests").is_dir():
        parser.error("run from the repository root (it needs src/ and tests/)")
    budget = args.budget or (3600.0 if args.smoke else 360.0)
    out = args.out or Path(os.environ.get("OUT") or "benchmarks/results/gpu_check")
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
        _kill_all()


if __name__ == "__main__":
    sys.exit(main())
