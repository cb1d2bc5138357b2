"""`bench serve`: throughput and latency of `deformable-detr serve` under a bounded load, batched vs not.

For each model, two server processes run side by side on loopback: one with dynamic batching
(`--batch-size 8 --max-wait-ms 10`) and one without (`--batch-size 1 --max-wait-ms 0`). This process is
the client: for each concurrency it sends the same N requests to one server and then the other
(interleaved, so a busy moment of a shared machine hits both alike), and reads each server's resident
memory from /proc before and after all the load.

    result = run_serve_benchmark(models=("demo", "r50"), concurrencies=(1, 4, 8), requests=200)
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deformable_detr.bench.harness import header
from deformable_detr.util.timer import Timer

MODES = {
    "batched": ["--batch-size", "8", "--max-wait-ms", "10"],
    "unbatched": ["--batch-size", "1", "--max-wait-ms", "0"],
}
# name -> (ModelConfig preset, preprocess min_size, max_size, test image (width, height))
MODELS = {
    "smoke": ("tiny", 64, 96, (96, 72)),
    "demo": ("demo", 256, 256, (256, 192)),  # the `make demo` model at its training size
    "r50": ("deformable-detr", 800, 1333, (640, 480)),  # the paper's model at the paper's size (800 x 1066)
}


def _proc_status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _save_model(name: str, directory: Path) -> Path:
    """A randomly initialised model of preset `name` (timing does not depend on the weights' values)."""
    import torch

    from deformable_detr import DeformableDETR, ModelConfig
    from deformable_detr.pipeline.processor import PreprocessConfig

    preset, min_size, max_size, _ = MODELS[name]
    torch.manual_seed(0)
    model = DeformableDETR(
        ModelConfig.preset(preset), preprocess=PreprocessConfig(min_size=min_size, max_size=max_size)
    )
    model.save_pretrained(directory / name)
    return directory / name


@contextlib.contextmanager
def _server(checkpoint: Path, mode_arguments: list[str]):
    """`deformable-detr serve` in a subprocess; yields (pid, base_url) once /health answers."""
    import httpx

    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deformable_detr.cli",
            "serve",
            "--checkpoint",
            str(checkpoint),
            "--port",
            str(port),
            "--max-queue",
            "256",
            *mode_arguments,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {process.stderr.read()[-1000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 15 minutes")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            time.sleep(0.2)
        yield process.pid, url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _load(url: str, images: list[bytes], requests: int, concurrency: int) -> dict[str, Any]:
    """Send `requests` detect requests, at most `concurrency` at a time; latency and throughput."""
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    batch_sizes: list[int] = []
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def one(index: int) -> None:
            async with semaphore:
                with Timer() as latency:
                    response = await client.post(
                        url + "/v1/detect",
                        data={"threshold": "0.3"},
                        files={"image": ("bench.jpg", images[index % len(images)], "image/jpeg")},
                    )
                latencies.append(latency.seconds)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    batch_sizes.append(response.json()["timing"]["batch_size"])

        with Timer() as timer:
            await asyncio.gather(*(one(i) for i in range(requests)))
        wall = timer.seconds
    ordered = sorted(latencies)
    return {
        "requests": requests,
        "concurrency": concurrency,
        "statuses": {str(k): v for k, v in statuses.items()},
        "wall_s": wall,
        "throughput_rps": requests / wall,
        "p50_ms": 1e3 * statistics.median(ordered),
        "p95_ms": 1e3 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "mean_batch_size": statistics.fmean(batch_sizes) if batch_sizes else 0.0,
    }


def _images(size: tuple[int, int], count: int = 4) -> list[bytes]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(count):
        pixels = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).resize(size, Image.BILINEAR)  # smooth blobs, a realistic JPEG size
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def run_serve_benchmark(
    models: tuple[str, ...] = ("demo", "r50"),
    concurrencies: tuple[int, ...] = (1, 4, 8),
    requests: dict[str, int] | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Measure every model x concurrency x mode; see the module docstring.

    Args:
        models: names in `MODELS`. concurrencies: clients in flight at once.
        requests: per model, requests per (concurrency, mode) run; default 200 (r50: 24, ~2 s a forward on 2 cores).

    Returns:
        {"header", "modes", "models": {name: {"image", "runs": [...], "memory": {mode: {...}}}}}.
    """
    requests = {"smoke": 16, "demo": 200, "r50": 24, **(requests or {})}
    result: dict[str, Any] = {"header": header(), "modes": MODES, "models": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for name in models:
            checkpoint = _save_model(name, Path(scratch))
            images = _images(MODELS[name][3])
            progress(f"{name}: starting a batched and an unbatched server")
            with _server(checkpoint, MODES["batched"]) as batched, _server(checkpoint, MODES["unbatched"]) as unbatched:
                servers = {"batched": batched, "unbatched": unbatched}
                memory = {
                    mode: {
                        "rss_before_mib": _proc_status_mib(pid, "VmRSS"),
                        "peak_before_mib": _proc_status_mib(pid, "VmHWM"),
                    }
                    for mode, (pid, _) in servers.items()
                }
                for _, url in servers.values():  # one warm request each (the server already ran its warm-up)
                    asyncio.run(_load(url, images, 1, 1))
                runs = []
                for concurrency in concurrencies:
                    for mode, (_, url) in servers.items():
                        progress(f"{name}: {requests[name]} requests at concurrency {concurrency}, {mode}")
                        runs.append({"mode": mode, **asyncio.run(_load(url, images, requests[name], concurrency))})
                for mode, (pid, _) in servers.items():
                    memory[mode].update(
                        rss_after_mib=_proc_status_mib(pid, "VmRSS"), peak_after_mib=_proc_status_mib(pid, "VmHWM")
                    )
            result["models"][name] = {
                "preset": MODELS[name][0],
                "image": list(MODELS[name][3]),
                "preprocess": {"min_size": MODELS[name][1], "max_size": MODELS[name][2]},
                "runs": runs,
                "memory": memory,
            }
    return result


def format_serve_benchmark(result: dict[str, Any]) -> str:
    """A plain-text table of `run_serve_benchmark`'s result."""
    lines = [f"{'model':<6} {'conc':>4} {'mode':<9} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'batch':>5} {'ok':>5}"]
    for name, entry in result["models"].items():
        for run in entry["runs"]:
            lines.append(
                f"{name:<6} {run['concurrency']:>4} {run['mode']:<9} {run['throughput_rps']:>7.2f} "
                f"{run['p50_ms']:>8.0f} {run['p95_ms']:>8.0f} {run['mean_batch_size']:>5.2f} "
                f"{run['statuses'].get('200', 0):>5}"
            )
        for mode, memory in entry["memory"].items():
            lines.append(
                f"{name:<6} {mode}: RSS {memory['rss_before_mib']:.0f} -> {memory['rss_after_mib']:.0f} MiB, "
                f"peak {memory['peak_before_mib']:.0f} -> {memory['peak_after_mib']:.0f} MiB"
            )
    return "\n".join(lines)
