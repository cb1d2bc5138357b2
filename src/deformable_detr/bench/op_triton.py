"""`bench op-triton`: GPU benchmark of the Triton backend vs `reference` (and the official CUDA kernel if
importable).

Run on a CUDA machine (from the source tree: `PYTHONPATH=src python -m deformable_detr.cli bench op-triton`):

    deformable-detr bench op-triton                                # full table, ~1-2 min on an H100
    deformable-detr bench op-triton --repeats 5 --dtypes float32

Cases (DESIGN.md "Machine facts"): the encoder of an 800x1066 image (value (1, 17821, 8, 32),
levels [[100,134],[50,67],[25,34],[13,17]], P = 4, Lq = S = 17821), the decoder (Lq = 300) and the
encoder at batch 2; sampling locations "realistic" (each query's reference point plus the paper's
initial ring of head directions, point p at (p + 1) pixels, plus ~1 pixel of noise, per level) and
"uniform" (uniform in [0, 1], cache-hostile); float32, bfloat16, float16. Each backend's forward
and forward+backward: median of `--repeats` warm runs (CUDA events around one call, so the host's
launch work counts, as it does in an eager model), speed-up over `reference` measured in the same run,
effective GB/s (minimum bytes each pass must move / time; value gathers count once), peak memory of
forward+backward above the inputs, and max |output - float64 reference of the same inputs|. On CUDA also
"graph" times: the same call captured once in a CUDA graph and replayed (median of `--repeats` replays):
the device's time alone, what a compiled model (`--compile`, CUDA graphs) pays.

Prints a table and writes JSON to benchmarks/results/op_triton_<gpu>.json (with `harness.header()`). No assertions on time.
`--smoke` runs tiny shapes to check the script itself: on the GPU where there is one, else on the CPU under
TRITON_INTERPRET=1.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

import torch

from deformable_detr.errors import ConfigError

from ..util.timer import time_once
from .harness import header, write_result

ENCODER_LEVELS = [[100, 134], [50, 67], [25, 34], [13, 17]]  # 800x1066 image, strides 8..64
SIZES = {  # (levels, M, D, P, decoder Lq)
    "full": (ENCODER_LEVELS, 8, 32, 4, 300),  # the paper's d_model 256, 8 heads, 4 points, 300 queries
    "smoke": ([[3, 5], [2, 3], [1, 1]], 2, 8, 2, 7),  # interpreter-sized
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _levels(shapes: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64, device=device)  # (L, 2)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])  # (L,)
    return spatial_shapes, level_start_index, int(sizes.sum())


def _reference_points(case: str, shapes: list[list[int]], batch: int, num_queries: int, generator) -> torch.Tensor:
    """(B, Lq, 2) normalized (x, y): encoder = every pixel centre of every level; decoder = spread out."""
    if case.startswith("encoder"):
        points = []
        for height, width in shapes:
            ys, xs = torch.meshgrid(
                (torch.arange(height, dtype=torch.float64) + 0.5) / height,
                (torch.arange(width, dtype=torch.float64) + 0.5) / width,
                indexing="ij",
            )
            points.append(torch.stack([xs, ys], -1).reshape(-1, 2))  # (H_l * W_l, 2)
        return torch.cat(points).expand(batch, -1, -1)  # (B, S, 2)
    return 0.05 + 0.9 * torch.rand(batch, num_queries, 2, generator=generator, dtype=torch.float64)


def make_inputs(case: str, locations: str, dtype: torch.dtype, device: torch.device, smoke: bool = False, seed=0):
    """(value (B,S,M,D), spatial_shapes, level_start_index, sampling_locations (B,Lq,M,L,P,2),
    attention_weights (B,Lq,M,L,P)) for case in {"encoder", "decoder", "encoder-b2"}."""
    shapes, M, D, P, decoder_queries = SIZES["smoke" if smoke else "full"]
    spatial_shapes, level_start_index, S = _levels(shapes, device)
    batch = 2 if case.endswith("b2") else 1
    num_queries = S if case.startswith("encoder") else decoder_queries
    L = len(shapes)
    generator = torch.Generator().manual_seed(seed)
    value = torch.randn(batch, S, M, D, generator=generator)
    if locations == "uniform":
        sampling_locations = torch.rand(batch, num_queries, M, L, P, 2, generator=generator, dtype=torch.float64)
    else:
        angles = 2 * math.pi * torch.arange(M, dtype=torch.float64) / M
        ring = torch.stack([angles.cos(), angles.sin()], -1)  # (M, 2)
        ring = ring / ring.abs().max(-1, keepdim=True).values  # paper's initialisation
        pixels = ring[:, None, None, :] * torch.arange(1, P + 1, dtype=torch.float64)[None, None, :, None]  # (M,1,P,2)
        pixels = pixels + torch.randn(batch, num_queries, M, L, P, 2, generator=generator, dtype=torch.float64)
        level_sizes = torch.tensor(shapes, dtype=torch.float64).flip(1)  # (L, 2) as (W_l, H_l)
        reference_points = _reference_points(case, shapes, batch, num_queries, generator)  # (B, Lq, 2)
        sampling_locations = reference_points[:, :, None, None, None, :] + pixels / level_sizes[:, None, :]
    attention_weights = torch.randn(batch, num_queries, M, L * P, generator=generator).softmax(-1)
    attention_weights = attention_weights.view(batch, num_queries, M, L, P)
    return (
        value.to(device=device, dtype=dtype),
        spatial_shapes,
        level_start_index,
        sampling_locations.to(device=device, dtype=dtype),
        attention_weights.to(device=device, dtype=dtype),
    )


def _time_ms(fn, repeats: int, device: torch.device) -> float:
    """Median wall time of `fn()` in milliseconds after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            times.append(time_once(fn) * 1e3)
    return statistics.median(times)


def _graph_ms(fn, repeats: int, device: torch.device) -> float | None:
    """Median time of replaying `fn` captured in a CUDA graph (no host launch work), or None if it cannot be captured."""
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up outside the graph: compiles kernels, fills allocator pools
            for _ in range(2):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    except Exception:  # a backend that syncs or allocates on the host cannot be captured
        return None
    return _time_ms(graph.replay, repeats, device)


def _passes(backend: str, inputs, grad_output):
    """(forward(), forward_backward()) closures for one backend."""
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = inputs
    if backend == "reference":
        from deformable_detr.ops import reference

        leaves = [t.detach().requires_grad_() for t in (value, sampling_locations, attention_weights)]

        def forward():
            with torch.no_grad():
                return reference.forward(
                    value, spatial_shapes, level_start_index, sampling_locations, attention_weights
                )

        def forward_backward():
            output = reference.forward(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])
            grads = torch.autograd.grad(output, leaves, grad_output)
            return output, grads

        return forward, forward_backward
    if backend == "triton":
        from deformable_detr.ops import triton as triton_backend

        def forward():
            return triton_backend.forward(*inputs)

        def forward_backward():
            output = triton_backend.forward(*inputs)
            return output, triton_backend.backward(grad_output, *inputs)

        return forward, forward_backward
    if backend == "official-cuda":  # the paper's kernel, built by hand with nvcc; fp32/fp64 only
        import MultiScaleDeformableAttention as official  # noqa: N813

        im2col_step = 64

        def forward():
            return official.ms_deform_attn_forward(*inputs, im2col_step)

        def forward_backward():
            output = official.ms_deform_attn_forward(*inputs, im2col_step)
            return output, official.ms_deform_attn_backward(*inputs, grad_output.contiguous(), im2col_step)

        return forward, forward_backward
    raise ConfigError(f"unknown backend {backend!r}; expected reference, triton or official-cuda")


def _float64_reference(inputs) -> torch.Tensor:
    """(B, Lq, M * D) float64 `reference` output of the inputs as given (cast up, not re-drawn)."""
    from deformable_detr.ops import reference

    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = inputs
    with torch.no_grad():
        return reference.forward(
            value.double(), spatial_shapes, level_start_index, sampling_locations.double(), attention_weights.double()
        )


def _bytes_moved(inputs, output_numel: int, backward: bool) -> int:
    """Minimum bytes a pass must move: inputs read once, outputs written once (no cache misses counted)."""
    value, _, _, sampling_locations, attention_weights = inputs
    size = value.element_size()
    forward_bytes = (value.numel() + sampling_locations.numel() + attention_weights.numel() + output_numel) * size
    if not backward:
        return forward_bytes
    # + grad_output read, value re-read, grad_value (fp32 buffer, read-modify-write, then cast), grad loc/attn
    backward_bytes = (output_numel + value.numel()) * size + value.numel() * (8 + 4 + size)
    backward_bytes += (sampling_locations.numel() + attention_weights.numel()) * size
    return forward_bytes + backward_bytes


def _official_available() -> bool:
    try:
        import MultiScaleDeformableAttention  # noqa: F401
    except ImportError:
        return False
    return True


def run(
    repeats: int = 20,
    dtypes: tuple[str, ...] = tuple(DTYPES),
    cases: tuple[str, ...] = ("encoder", "decoder", "encoder-b2"),
    location_kinds: tuple[str, ...] = ("realistic", "uniform"),
    smoke: bool = False,
) -> list[dict]:
    """Time every backend on every (case, locations, dtype); one dict per measurement."""
    device = torch.device("cuda" if torch.cuda.is_available() or not smoke else "cpu")
    backends = ["reference", "triton"] + (["official-cuda"] if _official_available() and not smoke else [])
    rows = []
    for case in cases:
        for location_kind in location_kinds:
            for dtype_name in dtypes:
                dtype = DTYPES[dtype_name]
                inputs = make_inputs(case, location_kind, dtype, device, smoke=smoke)
                value, _, _, sampling_locations, _ = inputs
                B, _, M, D = value.shape
                grad_output = torch.randn(B, sampling_locations.shape[1], M * D, device=device, dtype=dtype)
                baseline = {}
                expected = _float64_reference(inputs)
                for backend in backends:
                    if backend == "official-cuda" and dtype not in (torch.float32, torch.float64):
                        continue
                    forward, forward_backward = _passes(backend, inputs, grad_output)
                    output = forward()
                    row = {
                        "case": case, "locations": location_kind, "dtype": dtype_name, "backend": backend,
                        "B": B, "Lq": sampling_locations.shape[1], "S": value.shape[1],
                        "max_abs_error": (output.double() - expected).abs().max().item(),
                    }  # fmt: skip
                    for pass_name, fn in (("forward", forward), ("forward_backward", forward_backward)):
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                            torch.cuda.reset_peak_memory_stats(device)
                            before = torch.cuda.memory_allocated(device)
                        ms = _time_ms(fn, repeats, device)
                        row[f"{pass_name}_ms"] = ms
                        moved = _bytes_moved(inputs, output.numel(), backward=pass_name == "forward_backward")
                        row[f"{pass_name}_gbps"] = moved / (ms * 1e-3) / 1e9
                        if device.type == "cuda":
                            row[f"{pass_name}_peak_mib"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
                        if backend == "reference":
                            baseline[pass_name] = ms
                        row[f"{pass_name}_speedup"] = baseline[pass_name] / ms
                        if device.type == "cuda":
                            row[f"{pass_name}_graph_ms"] = _graph_ms(fn, repeats, device)
                    rows.append(row)
                del inputs, grad_output, expected
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(rows: list[dict]) -> str:
    """A fixed-width table, one line per measurement."""
    header = (
        f"{'case':<11}{'locations':<10}{'dtype':<9}{'backend':<14}{'fwd ms':>9}{'x ref':>7}{'GB/s':>7}"
        f"{'f+b ms':>9}{'x ref':>7}{'GB/s':>7}{'peak MiB':>10}{'max err':>10}{'graph fwd':>10}{'graph f+b':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        peak = r.get("forward_backward_peak_mib", float("nan"))
        lines.append(
            f"{r['case']:<11}{r['locations']:<10}{r['dtype']:<9}{r['backend']:<14}"
            f"{r['forward_ms']:>9.3f}{r['forward_speedup']:>7.1f}{r['forward_gbps']:>7.0f}"
            f"{r['forward_backward_ms']:>9.3f}{r['forward_backward_speedup']:>7.1f}{r['forward_backward_gbps']:>7.0f}"
            f"{peak:>10.0f}{r['max_abs_error']:>10.2e}"
            f"{_ms(r.get('forward_graph_ms')):>10}{_ms(r.get('forward_backward_graph_ms')):>10}"
        )
    return "\n".join(lines)


def run_and_write(
    repeats: int,
    dtypes: tuple[str, ...],
    cases: tuple[str, ...],
    locations: tuple[str, ...],
    smoke: bool,
    out: Path | None,
) -> tuple[list[dict], Path]:
    """Run the benchmark and write `{"header", "smoke", "rows"}` JSON; returns the rows and the path.

    Raises:
        ConfigError: no CUDA device and not `smoke`.
    """
    from ..errors import ConfigError

    interpreted = smoke and not torch.cuda.is_available()
    if interpreted:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported
    elif not torch.cuda.is_available():
        raise ConfigError("bench op-triton needs a CUDA device (or --smoke for tiny shapes on the CPU interpreter)")
    rows = run(repeats, dtypes, cases, locations, smoke=smoke)
    import triton

    device_name = "cpu-interpreter" if interpreted else torch.cuda.get_device_name()
    out = out or Path("benchmarks/results") / f"op_triton_{device_name.replace(' ', '_')}.json"
    write_result(
        out,
        {
            "header": header(triton=triton.__version__, device=device_name),
            "repeats": repeats,
            "smoke": smoke,
            "rows": rows,
        },
    )
    return rows, out
