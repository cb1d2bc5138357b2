"""Launching the Triton kernels: block sizes, each kernel's arguments, and compile-once-then-launch with
a fallback where the installed Triton fails to compile a case.

Block sizes come from `block_sizes` (full tiles for big grids, smaller ones for small grids such as the
decoder's). The first launch of each specialization compiles the kernel apart from launching it; if the
installed Triton fails to compile it, that case warns once and `launch` returns False, so the caller runs
`reference` (forward) or its torch.func vjp (backward) from then on. `bench op-triton --compile-matrix`
compiles every case ahead of time with `build`, without a GPU.
"""

import functools
import warnings

import torch
import triton
import triton.language as tl

from deformable_detr.ops import triton_kernels

# BLOCK_Q * BLOCK_D per program: 4 elements per thread at 4 warps. sm_90 builds of D = 32, L = P = 4
# (cuobjdump -res-usage) use ~50 registers forward and ~72 backward, no spills; a 2048-element
# tile needed ~180-220 (and spilled with the level/point loops unrolled). Chosen from register counts; GPU timings unmeasured.
TILE_ELEMENTS = 512
NUM_WARPS = 4
# Small problems get smaller tiles (down to one element per thread) until the grid has this many programs.
# Measured on an H200 (Triton 3.6, fp32, CUDA-graph replay so launch work is left out, 2026-12-04): the decoder
# (B * Lq = 300 rows x 8 heads, D = 32) at 16 rows per program (152 programs) took 0.024 / 0.047 ms fwd / fwd+bwd,
# at 8 rows (304 programs) 0.019 / 0.043, the reference implementation's CUDA op 0.017 / 0.049; 256 picks 8 rows
# there. The encoder (17821 rows x 8 heads) keeps 16 rows (0.104 / 0.507 ms; 8 rows was no faster).
# Tuning scripts (benchmarks/triton_tune.py) monkeypatch these.
MIN_PROGRAMS = 256


def block_sizes(num_rows: int, num_heads: int, head_dim: int) -> tuple[int, int]:
    """(BLOCK_Q, BLOCK_D) for B * Lq = `num_rows` rows and M = `num_heads` heads: see `_block_sizes_for`."""
    return _block_sizes_for(num_rows, num_heads, head_dim, TILE_ELEMENTS, NUM_WARPS, MIN_PROGRAMS)


@functools.lru_cache(maxsize=1024)
def _block_sizes_for(
    num_rows: int, num_heads: int, head_dim: int, tile_elements: int, num_warps: int, min_programs: int
) -> tuple[int, int]:
    """BLOCK_D = next_power_of_2(D); BLOCK_Q fills a tile of `tile_elements` (at most 128 rows), then halves,
    down to one element per thread, while the grid has fewer than `min_programs` programs."""
    block_d = triton.next_power_of_2(head_dim)
    largest = max(1, min(tile_elements // block_d, 128))
    smallest = min(largest, max(1, 32 * num_warps // block_d))
    block_q = largest
    while block_q > smallest and triton.cdiv(num_rows, block_q) * num_heads < min_programs:
        block_q //= 2
    return block_q, block_d


_compiled: dict[tuple, bool] = {}
"""Per specialization key (see `launch`): whether the kernel compiled (False: that case runs `reference`)."""

_warned: set[str] = set()


def _constexprs(value: torch.Tensor, num_levels: int, num_points: int, block_q: int, block_d: int) -> dict:
    """The kernels' constexpr arguments (one cached dict per case: never mutate it)."""
    _, _, num_heads, head_dim = value.shape
    return _constexprs_for(num_heads, head_dim, num_levels, num_points, block_q, block_d, value.dtype == torch.float64)


@functools.lru_cache(maxsize=1024)
def _constexprs_for(
    num_heads: int, head_dim: int, num_levels: int, num_points: int, block_q: int, block_d: int, fp64: bool
) -> dict:
    return {
        "NUM_HEADS": num_heads, "HEAD_DIM": head_dim, "NUM_LEVELS": num_levels, "NUM_POINTS": num_points,
        "BLOCK_Q": block_q, "BLOCK_D": block_d, "ACC_DTYPE": tl.float64 if fp64 else tl.float32,
    }  # fmt: skip


def forward_call(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, output, block_q, block_d
) -> tuple[tuple[int, int], tuple, dict]:
    """(grid, args, constexprs) of `triton_kernels.forward_kernel` for prepared inputs and the contiguous
    (B, Lq, M * D) output."""
    B, S, M, _ = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    args = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights, output, B * Lq, Lq, S)
    return (-(-B * Lq // block_q), M), args, _constexprs(value, L, P, block_q, block_d)


def backward_call(
    grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
    grad_value, grad_sampling_locations, grad_attention_weights, block_q, block_d,
) -> tuple[tuple[int, int], tuple, dict]:  # fmt: skip
    """(grid, args, constexprs) of `triton_kernels.backward_kernel` for prepared inputs and the three gradient
    buffers."""
    B, S, M, _ = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    args = (
        grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
        grad_value, grad_sampling_locations, grad_attention_weights, B * Lq, Lq, S,
    )  # fmt: skip
    return (-(-B * Lq // block_q), M), args, _constexprs(value, L, P, block_q, block_d)


def build(kernel, grid: tuple[int, int], args: tuple, constexprs: dict, num_warps: int):
    """Compile `kernel` for these arguments without launching it (Triton's `warmup`); the CompiledKernel.

    Compiles for the current device of Triton's active driver (the compile matrix installs one that only
    names a target) and specializes as a launch would: pointer dtypes and 16-byte alignment, constexprs.
    """
    return kernel.warmup(*args, grid=grid, num_warps=num_warps, **constexprs)


def _compile(kernel, grid: tuple[int, int], args: tuple, constexprs: dict) -> None:
    """`build`, then load the binary onto the current GPU; raises what the compiler (or loader) raises.

    Under the interpreter there is nothing to compile.
    """
    if triton_kernels.kernels_interpreted():
        return
    compiled = build(kernel, grid, args, constexprs, NUM_WARPS)
    load = getattr(compiled, "_init_handles", None)  # loading can fail too (too much shared memory, registers)
    if load is not None:
        load()


def _compiles(kernel, grid: tuple[int, int], args: tuple, constexprs: dict, case: str) -> bool:
    """`_compile`, turning a failure into one warning per case and False."""
    try:
        _compile(kernel, grid, args, constexprs)
    except Exception as error:  # nothing but compiling runs in here, so any failure is the compiler's
        lines = str(error).strip().splitlines()
        message = (
            f"Triton {triton.__version__} failed to compile the {case} ({type(error).__name__}: "
            f"{lines[0] if lines else ''}); this case runs the reference backend instead (correct, slower). "
            "Please report it, or install the Triton your torch pins"
        )
        if message not in _warned:
            _warned.add(message)
            warnings.warn(message, RuntimeWarning, stacklevel=4)  # the caller of forward / backward
        return False
    return True


def launch(kernel, direction: str, grid: tuple[int, int], args: tuple, constexprs: dict) -> bool:
    """Launch `kernel[grid](*args, **constexprs)` on the tensors' device; False (nothing launched) if it cannot compile.

    The first call of each specialization (device, dtype and 16-byte alignment of every pointer, constexprs,
    warps: what Triton compiles a kernel for; the kernels do not specialize on their int arguments) compiles
    it apart from the launch, so only a compiler failure, never a launch error, turns into the fallback.
    """
    device = args[0].device
    if device.type == "cuda" and device.index != torch.cuda.current_device():  # cheaper than always entering
        with torch.cuda.device(device):
            return launch(kernel, direction, grid, args, constexprs)
    tensors = args[:-3]  # both kernels end with three ints: num_rows, num_queries, num_keys
    key = (direction, device, NUM_WARPS, *constexprs.values(), *[(t.dtype, t.data_ptr() % 16 == 0) for t in tensors])
    ok = _compiled.get(key)
    if ok is None:
        value = args[1] if direction == "backward" else args[0]  # backward's first argument is grad_output
        case = (
            f"{direction} kernel for {value.dtype}, D={constexprs['HEAD_DIM']}, L={constexprs['NUM_LEVELS']}, "
            f"P={constexprs['NUM_POINTS']} (M={constexprs['NUM_HEADS']}, BLOCK_Q={constexprs['BLOCK_Q']}, "
            f"BLOCK_D={constexprs['BLOCK_D']}, {NUM_WARPS} warps, {device})"
        )
        ok = _compiled[key] = _compiles(kernel, grid, args, constexprs, case)
    if ok:
        kernel[grid](*args, **constexprs, num_warps=NUM_WARPS)
    return ok
