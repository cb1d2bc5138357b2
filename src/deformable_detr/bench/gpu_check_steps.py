"""The steps of `make gpu-check` (see bench/gpu_check.py): each takes the run's `Check`, its `StepResult` to fill
in and its time limit in seconds, and returns what goes into the summary under its name."""

from __future__ import annotations

import concurrent.futures
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .gpu_report import StepResult, junit_summary, test_note
from .timed_command import command_env, log_tail, run_command

PACKAGES = ("torch", "triton", "transformers", "onnxruntime", "onnx", "pycocotools", "fastapi", "uvicorn", "httpx",
            "hypothesis", "schemathesis", "playwright", "scipy", "numpy", "pillow", "safetensors", "pytest")  # fmt: skip


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
        [check.python, "-c", probe], capture_output=True, text=True, timeout=max(limit, 5), env=command_env()
    )
    probe_log.write_text(completed.stdout)
    with open(log, "a") as sink:
        sink.write(completed.stdout + completed.stderr)
    if completed.returncode == 0:
        info.update(json.loads(completed.stdout.strip().splitlines()[-1]))
    else:
        result.note = f"torch probe failed: {log_tail(log, 3)}"
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
    rc, timed_out = run_command(argv, check.logs / "gpu-tests.log", limit, command_env(DDETR_ALLOW_SKIPS="1"))
    result.commands.append(" ".join(argv[1:]))
    summary = junit_summary([junit])
    result.status = "timeout" if timed_out else "ok" if rc == 0 else "failed"
    result.note = test_note(summary) + (f"; pytest exit {rc}" if rc not in (0, 1) else "")
    return summary


def step_tests(check: Check, result: StepResult, limit: float) -> dict[str, Any]:
    """The fast suite without the gpu tests (run by gpu-tests), one pytest per file, `check.jobs` at a time."""
    files = list(check.test_files) or [str(p) for p in sorted(Path("tests").rglob("test_*.py"), key=_longest_first)]
    deadline = time.monotonic() + limit
    env = command_env(DDETR_ALLOW_SKIPS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
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
    rc, timed_out = run_command(argv, check.logs / f"{result.name}.log", limit, command_env(TQDM_DISABLE="1"))
    result.commands.append(" ".join(argv[2:]))
    result.status = "timeout" if timed_out else "ok" if rc == 0 else "failed"
    if out.is_file():  # bench predict writes each finished cell: a timed-out run still has some
        result.result_files.append(str(out))
        return json.loads(out.read_text())
    if result.status != "ok":
        result.note = log_tail(check.logs / f"{result.name}.log", 1)[:300]
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
