"""`bench op`: benchmark of the operator's backends on the shapes of a real Deformable DETR (`deformable-detr bench op`).

Cases (the paper's model on an 800x1066 image: value (B, 17821, 8, 32), levels
[[100,134],[50,67],[25,34],[13,17]], 4 points):
    encoder          B 1, Lq 17821: every pixel of every level is a query; realistic locations.
    encoder_uniform  the same with locations uniform in [0, 1]: the cache-hostile worst case.
    decoder          B 1, Lq 300, reference points spread over the image; realistic locations.
    encoder_batch2   B 2, Lq 17821; realistic locations.
"Realistic" locations are what a trained encoder produces: the query's reference point plus, per
level, the paper's initial ring of head directions (point p at p + 1 pixels) and ~1 pixel of noise.

Per backend and case: the minimum (and median) wall time of `repeats` warm forwards and forward+backwards,
the backends interleaved run by run; speed-up over `reference` measured in the same run, effective GB/s (the bytes each pass must move at least:
inputs read once, outputs written once, divided by the time) and, for the encoder case, the peak
memory of one forward+backward: in a fresh subprocess, with the inputs built and the backend warmed
up, the peak resident set size is reset to the current one (Linux /proc/self/clear_refs) and its
growth during the pass is reported (torch's CPU allocator has no peak counter; tracemalloc cannot see it).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Callable

import torch

from deformable_detr.errors import ConfigError

from ..ops import multi_scale_deformable_attention
from .harness import header, interleaved_times, peak_rss_mib, reset_peak_rss_mib

ENCODER_LEVELS = [[100, 134], [50, 67], [25, 34], [13, 17]]  # 800x1066 image, strides 8, 16, 32, 64
HEADS, HEAD_DIM, POINTS, DECODER_QUERIES = 8, 32, 4, 300  # the paper's d_model 256, 8 heads, 4 points, 300 queries
CASES = ("encoder", "encoder_uniform", "decoder", "encoder_batch2")


def make_case(case: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs of one benchmark case.

    Returns:
        value (B, S, 8, 32), spatial_shapes (4, 2), level_start_index (4,),
        sampling_locations (B, Lq, 8, 4, 4, 2), attention_weights (B, Lq, 8, 4, 4) (softmaxed over L * P).
    """
    if case not in CASES:
        raise ConfigError(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(ENCODER_LEVELS, dtype=torch.int64)  # (L, 2) as (H_l, W_l)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    S, L, M, D, P = int(sizes.sum()), len(ENCODER_LEVELS), HEADS, HEAD_DIM, POINTS
    B = 2 if case == "encoder_batch2" else 1
    if case == "decoder":
        reference_points = torch.rand(B, DECODER_QUERIES, 2, generator=generator)  # (B, Lq, 2) spread over the image
    else:
        centres = []
        for height, width in ENCODER_LEVELS:  # every pixel centre of every level, level by level
            ys, xs = torch.meshgrid(
                (torch.arange(height) + 0.5) / height, (torch.arange(width) + 0.5) / width, indexing="ij"
            )
            centres.append(torch.stack([xs, ys], -1).reshape(-1, 2))
        reference_points = torch.cat(centres).expand(B, S, 2)  # (B, S, 2)
    Lq = reference_points.shape[1]
    angles = torch.arange(M) * (2 * torch.pi / M)
    ring = torch.stack([angles.cos(), angles.sin()], -1)  # (M, 2)
    ring = ring / ring.abs().max(-1, keepdim=True).values
    steps = torch.arange(1, P + 1).view(1, P, 1)  # point p at p + 1 pixels
    offsets = ring.view(1, 1, M, 1, 1, 2) * steps.view(1, 1, 1, 1, P, 1)  # (1, 1, M, 1, P, 2) in pixels
    offsets = offsets + torch.randn(B, Lq, M, L, P, 2, generator=generator)  # ~1 pixel of noise
    level_wh = spatial_shapes.flip(-1).view(1, 1, 1, L, 1, 2)  # (W_l, H_l)
    sampling_locations = reference_points.view(B, Lq, 1, 1, 1, 2) + offsets / level_wh  # (B, Lq, M, L, P, 2)
    if case == "encoder_uniform":
        sampling_locations = torch.rand(B, Lq, M, L, P, 2, generator=generator)
    logits = torch.randn(B, Lq, M, L * P, generator=generator)
    attention_weights = logits.softmax(-1).view(B, Lq, M, L, P)
    value = torch.randn(B, S, M, D, generator=generator)
    return (
        value.to(dtype),
        spatial_shapes,
        level_start_index,
        sampling_locations.to(dtype).contiguous(),
        attention_weights.to(dtype),
    )


def _bytes_moved(inputs: tuple[torch.Tensor, ...], backward: bool) -> int:
    """Least bytes a pass moves: every input read once and every output written once."""
    value, _, _, sampling_locations, attention_weights = inputs
    B, _, M, D = value.shape
    output = B * sampling_locations.shape[1] * M * D * value.element_size()
    tensors = sum(t.numel() * t.element_size() for t in (value, sampling_locations, attention_weights))
    forward = tensors + output
    return forward + (output + tensors if backward else 0)  # backward: read grad_output, write three grads


def _forward_backward(inputs: tuple[torch.Tensor, ...], backend: str) -> Callable[[], None]:
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = inputs
    leaves = [t.detach().requires_grad_() for t in (value, sampling_locations, attention_weights)]
    B, _, M, D = value.shape
    grad_output = torch.randn(B, sampling_locations.shape[1], M * D, dtype=value.dtype)

    def run() -> None:
        out = multi_scale_deformable_attention(
            leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2], backend=backend
        )
        out.backward(grad_output)
        for leaf in leaves:
            leaf.grad = None

    return run


def peak_memory_mb(case: str, backend: str, threads: int) -> float:
    """Growth of the peak RSS, in MiB, of one forward+backward in a fresh subprocess (see module docstring)."""
    code = (
        "import sys, torch; from deformable_detr.bench.op import peak_memory_child; "
        f"print(peak_memory_child({case!r}, {backend!r}, {threads}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def peak_memory_child(case: str, backend: str, threads: int) -> float:
    torch.set_num_threads(threads)
    small = make_case("decoder")  # loads the backend (and torch's lazy modules) before the baseline
    _forward_backward(small, backend)()
    run = _forward_backward(make_case(case), backend)
    before = reset_peak_rss_mib()
    run()
    return peak_rss_mib() - before


def run_op_benchmark(
    backends: tuple[str, ...] = ("reference", "cpu"),
    cases: tuple[str, ...] = CASES,
    repeats: int = 5,
    threads: int = 2,
    memory: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Time every backend on every case (float32, CPU tensors).

    Args:
        backends: backends to compare; "reference" must be among them for the speed-ups.
        cases: names from `CASES`.
        repeats: timed rounds after one warm-up; each round runs every backend once (interleaved).
        threads: torch.set_num_threads for the run.
        memory: also measure the peak memory of forward+backward on the encoder case (subprocesses).
        progress: called with a short message before each measurement.

    Returns:
        {"header": harness.header(), "repeats", "threads", "cases": {case: {"shape": {...}, "backends":
        {backend: {"forward_ms" (min), "forward_median_ms", "forward_backward_ms" (min),
        "forward_backward_median_ms", "forward_speedup", "forward_backward_speedup" (of the minima),
        "forward_gbps", "forward_backward_gbps", "peak_memory_mb" (encoder only)}}}}}.
    """
    report = progress or (lambda message: None)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    results: dict = {
        "header": header(threads=threads),
        "repeats": repeats,
        "threads": threads,
        "dtype": "float32",
        "cases": {},
    }
    try:
        for case in cases:
            inputs = make_case(case)
            value, sampling_locations = inputs[0], inputs[3]
            entry: dict = {
                "shape": {"value": list(value.shape), "sampling_locations": list(sampling_locations.shape)},
                "backends": {},
            }
            report(f"{case}: {', '.join(backends)} (interleaved)")
            forwards = {
                b: (lambda b=b, inputs=inputs: multi_scale_deformable_attention(*inputs, backend=b)) for b in backends
            }
            forward_times = interleaved_times(forwards, repeats)
            passes = {b: _forward_backward(inputs, b) for b in backends}
            forward_backward_times = interleaved_times(passes, repeats)
            for backend in backends:
                forward, forward_backward = min(forward_times[backend]), min(forward_backward_times[backend])
                timing = {
                    "forward_ms": 1e3 * forward,
                    "forward_median_ms": 1e3 * statistics.median(forward_times[backend]),
                    "forward_backward_ms": 1e3 * forward_backward,
                    "forward_backward_median_ms": 1e3 * statistics.median(forward_backward_times[backend]),
                    "forward_gbps": _bytes_moved(inputs, backward=False) / forward / 1e9,
                    "forward_backward_gbps": _bytes_moved(inputs, backward=True) / forward_backward / 1e9,
                }
                if memory and case == "encoder":
                    report(f"{case}: {backend} peak memory (subprocess)")
                    timing["peak_memory_mb"] = peak_memory_mb(case, backend, threads)
                entry["backends"][backend] = timing
            if "reference" in entry["backends"]:
                base = entry["backends"]["reference"]
                for timing in entry["backends"].values():
                    timing["forward_speedup"] = base["forward_ms"] / timing["forward_ms"]
                    timing["forward_backward_speedup"] = base["forward_backward_ms"] / timing["forward_backward_ms"]
            results["cases"][case] = entry
    finally:
        torch.set_num_threads(previous_threads)
    return results


def format_op_benchmark(results: dict) -> str:
    """A plain-text table of `run_op_benchmark`'s result."""
    header = (
        f"{'case':<16} {'backend':<10} {'fwd ms':>9} {'x ref':>6} {'GB/s':>6} "
        f"{'fwd+bwd ms':>11} {'x ref':>6} {'GB/s':>6} {'peak MiB':>9}"
    )
    machine = results["header"]
    lines = [
        f"multi-scale deformable attention, float32, {results['threads']} threads, min of {results['repeats']} "
        f"interleaved runs; {machine['machine']}, load average {machine['load_average'][0]:.1f}",
        header,
        "-" * len(header),
    ]
    for case, entry in results["cases"].items():
        for backend, t in entry["backends"].items():
            memory = f"{t['peak_memory_mb']:.0f}" if "peak_memory_mb" in t else "-"
            lines.append(
                f"{case:<16} {backend:<10} {t['forward_ms']:>9.1f} {t.get('forward_speedup', float('nan')):>6.1f} "
                f"{t['forward_gbps']:>6.2f} {t['forward_backward_ms']:>11.1f} "
                f"{t.get('forward_backward_speedup', float('nan')):>6.1f} {t['forward_backward_gbps']:>6.2f} {memory:>9}"
            )
    return "\n".join(lines)
