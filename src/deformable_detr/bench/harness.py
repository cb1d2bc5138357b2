"""What every benchmark shares: the JSON header, interleaved timing, peak-RSS probes, the JSON writer.

times = interleaved_min({"ours": run_ours, "hf": run_hf}, repeats=5)   # seconds, min of interleaved runs
write_result(path, {"header": header(threads=2), "results": ...})
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..checkpoint.files import atomic_write_text
from ..util.timer import time_once


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The checkout's HEAD commit (None outside a git checkout)."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def header(threads: int | None = None, **extra: Any) -> dict[str, Any]:
    """The header every benchmark JSON starts with: machine, threads, versions, load, commit, time."""
    info = {
        "machine": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "git_commit": git_commit(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    info.update(extra)
    return info


def interleaved_times(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, sync: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """Run each function `warmup` times, then `repeats` rounds of one call each, in turn, so that a busy
    moment of a shared machine hits every side alike. Returns the seconds of every timed call."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_once(fn, sync))
    return times


def summarize(seconds: list[float]) -> dict[str, float]:
    """min (the figure to quote on a shared machine), median and max of a list of timings, in seconds."""
    return {"min_s": min(seconds), "median_s": statistics.median(seconds), "max_s": max(seconds), "runs": len(seconds)}


def interleaved_min(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, sync: Callable[[], None] | None = None
) -> dict[str, float]:
    """Minimum seconds of each function over interleaved runs (see `interleaved_times`)."""
    return {name: min(t) for name, t in interleaved_times(fns, repeats, warmup, sync).items()}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def reset_peak_rss_mib() -> float:
    """Reset this process's peak RSS to its current RSS (Linux clear_refs 5) and return it, in MiB.
    Elsewhere ru_maxrss cannot be reset: temporaries made earlier may then hide a later peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmHWM") / 1024
    except OSError:
        return peak_rss_mib()


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB."""
    try:
        return _status_kib("VmHWM") / 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """This process's current resident set size, in MiB."""
    try:
        return _status_kib("VmRSS") / 1024
    except OSError:
        return peak_rss_mib()


def write_result(path: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Write `result` (which should start with a `header()`) as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(result, indent=2) + "\n")
