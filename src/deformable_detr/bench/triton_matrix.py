"""`bench op-triton --compile-matrix`: compile the Triton kernels for every case a launch can produce, no GPU needed.

Triton ships its whole compiler (MLIR passes, LLVM, ptxas), so it builds the cubin a GPU would run on a
machine without one. Compiler bugs of one Triton release (3.6 and 3.7 failed on head dims 8/16, and on
fp64 at 24/32, before the fix in `ops/triton_kernels.py`) show up here, for whichever Triton is importable
(`make triton-matrix` runs every release that a supported torch pins). Each cell is compiled by the
launcher's own `_build` (Triton's `JITFunction.warmup`, what a first launch does minus the launch) with
a driver that only names the target, so the JIT specializes exactly as on a GPU; the only GPU step left
out is loading the cubin (the op's run-time fallback covers a failure there).

The matrix (one cell = one compiled kernel):
    arch       sm_80 (A100) and sm_90 (H100/H200), or `--arch`.
    direction  forward, backward.
    dtype      fp32, bf16, fp16, fp64: every dtype the op accepts.
    D          `HEAD_DIMS`: D = d_model / n_heads is any integer, compiled as BLOCK_D = next_power_of_2(D)
               with the channels past D masked: every BLOCK_D from 1 to 256 at D = BLOCK_D (no mask), plus
               masked tails at 12, 24 and 48 (BLOCK_D 16, 32, 64). Not compiled: tails of the other BLOCK_D
               (D = 3, 6, 96, 192, ...) and D > 256; the run-time fallback covers those.
    BLOCK_Q    every BLOCK_Q that `ops.triton_launch.block_sizes` can choose for that D at the module's current
               `TILE_ELEMENTS` and `NUM_WARPS` (the warps too come from the module).
    L, P, M    4 levels x 4 points x 8 heads (every paper preset but single-scale) at every BLOCK_Q; at
               D = 8 and 32 and their largest BLOCK_Q also 1 x 4 x 8 (single-scale) and 1 x 1 x 1 (loops of
               one iteration fold away, so the kernel body is straight-line code).
Pointers are 16-byte aligned, as fresh allocations are (an unaligned view compiles another variant,
covered only by the run-time fallback); the kernels do not specialize on their int arguments.

Workers are fresh processes (spawn) without TRITON_INTERPRET and with a temporary Triton cache, so
every run really compiles. `quick=True` keeps the cases that failed under 3.6/3.7 before the fix,
at their largest BLOCK_Q: what the fast tests compile for the installed Triton.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..util.timer import Timer

ARCHS = (80, 90)
DIRECTIONS = ("forward", "backward")
DTYPES = ("fp32", "bf16", "fp16", "fp64")
HEAD_DIMS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256)
SHAPES = ((4, 4, 8), (1, 4, 8), (1, 1, 1))  # (L, P, M): the first at every BLOCK_Q, the others at the largest
SHAPE_HEAD_DIMS = (8, 32)  # where the other SHAPES are compiled
QUICK = (  # (direction, dtype, D) that failed under Triton 3.6.0 / 3.7.x before the fix
    [("forward", dtype, d) for dtype in ("fp32", "bf16", "fp16") for d in (8, 16)]
    + [("backward", "fp32", d) for d in (8, 16)]
    + [("forward", "fp64", d) for d in (24, 32)]
)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One kernel to compile: arch, direction, dtype, D, L, P, M and the launcher's BLOCK_Q, BLOCK_D, warps."""

    arch: int
    direction: str
    dtype: str
    head_dim: int
    levels: int
    points: int
    num_heads: int
    block_q: int
    block_d: int
    num_warps: int


def block_choices(head_dim: int) -> list[tuple[int, int]]:
    """Every (BLOCK_Q, BLOCK_D) that `ops.triton_launch.block_sizes` returns for this D, largest BLOCK_Q first.

    Found by asking it: B * Lq = 1..256 and every 2^k and 3 * 2^k up to 2^24, M = 1 and 8 (it halves
    BLOCK_Q while the grid is small, so B * Lq = 2^k reaches every BLOCK_Q between its two bounds).
    """
    from deformable_detr.ops import triton_launch

    rows = set(range(1, 257)) | {2**k for k in range(25)} | {3 * 2**k for k in range(24)}
    choices = {triton_launch.block_sizes(num_rows, num_heads, head_dim) for num_rows in rows for num_heads in (1, 8)}
    return sorted(choices, reverse=True)


def matrix_cells(archs: Iterable[int] = ARCHS, quick: bool = False) -> list[Cell]:
    """The cells to compile (see the module docstring), D by D."""
    from deformable_detr.ops import triton_launch

    cells = []
    for head_dim in sorted({d for _, _, d in QUICK}) if quick else HEAD_DIMS:
        blocks = block_choices(head_dim)
        for arch in archs:
            for direction in DIRECTIONS:
                for dtype in DTYPES:
                    if quick and (direction, dtype, head_dim) not in QUICK:
                        continue
                    for index, (block_q, block_d) in enumerate(blocks[:1] if quick else blocks):
                        all_shapes = index == 0 and head_dim in SHAPE_HEAD_DIMS and not quick
                        for levels, points, heads in SHAPES if all_shapes else SHAPES[:1]:
                            cells.append(
                                Cell(arch, direction, dtype, head_dim, levels, points, heads, block_q, block_d,
                                     triton_launch.NUM_WARPS)
                            )  # fmt: skip
    return cells


# ----------------------------------------------------------------------------------------------
# One cell, in a worker process


def _init_worker(cache_dir: str) -> None:
    """Runs first in each worker, before triton is imported: compile for real, into a private cache."""
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ["TRITON_CACHE_DIR"] = cache_dir


class _CompileOnlyDriver:
    """A Triton driver that only names a target: enough for `JITFunction.warmup`, which compiles but never launches.

    The device id is the arch, so the JIT's per-device kernel caches keep sm_80 and sm_90 builds apart.
    Triton 3.0 ... 3.7 ask the active driver only for these three during a warmup.
    """

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.arch = arch
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self) -> int:
        return self.arch

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_current_target(self):
        return self.target


def _cell_call(cell: Cell):
    """(kernel, grid, args, constexprs) the launcher builds for this cell, on tiny CPU tensors.

    The JIT specializes on dtypes and pointer alignment only (not on sizes), so 1 image, 2 queries and
    1x1 levels stand in for any shape; BLOCK_Q and BLOCK_D are the cell's.
    """
    import torch

    from deformable_detr.ops import triton_kernels, triton_launch
    from deformable_detr.ops.triton import accumulator_dtype

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}[cell.dtype]
    B, Lq, M, D, L, P = 1, 2, cell.num_heads, cell.head_dim, cell.levels, cell.points
    value = torch.zeros(B, L, M, D, dtype=dtype)  # (B, S, M, D), S = L levels of 1x1
    spatial_shapes = torch.ones(L, 2, dtype=torch.int64)
    level_start_index = torch.arange(L, dtype=torch.int64)
    sampling_locations = torch.zeros(B, Lq, M, L, P, 2, dtype=dtype)
    attention_weights = torch.zeros(B, Lq, M, L, P, dtype=dtype)
    inputs = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    blocks = (cell.block_q, cell.block_d)
    if cell.direction == "forward":
        output = torch.empty(B, Lq, M * D, dtype=dtype)
        return (triton_kernels.forward_kernel, *triton_launch.forward_call(*inputs, output, *blocks))
    grad_output = torch.zeros(B, Lq, M * D, dtype=dtype)
    grad_value = torch.zeros_like(value, dtype=accumulator_dtype(value))
    grads = (grad_value, torch.zeros_like(sampling_locations), torch.zeros_like(attention_weights))
    return (triton_kernels.backward_kernel, *triton_launch.backward_call(grad_output, *inputs, *grads, *blocks))


@contextlib.contextmanager
def _captured_stderr():
    """Collect what the compiler's C++ side prints to file descriptor 2 (MLIR diagnostics)."""
    with tempfile.TemporaryFile(mode="w+b") as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        text: list[str] = []
        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text.append(capture.read().decode(errors="replace"))


def _first_error_line(error: BaseException, stderr: str) -> str:
    """The most telling line: the compiler's first `error:` diagnostic, else the exception's first line."""
    for line in stderr.splitlines():
        if "error:" in line:
            return line.strip()[:300]
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else ''}"[:300]


def compile_cell(cell: Cell) -> dict:
    """Compile one cell through the launcher's own `triton_launch.build` (Triton's warmup) for sm_<arch>.

    Returns `dataclasses.asdict(cell)` plus ok, error (one line or None), seconds and the PTX target.
    Runs in a worker process: it installs a compile-only driver for good.
    """
    import triton
    from triton.runtime.driver import driver

    from deformable_detr.ops import triton_kernels, triton_launch

    assert not triton_kernels.kernels_interpreted(), "TRITON_INTERPRET must not be set in a matrix worker"
    driver.set_active(_CompileOnlyDriver(cell.arch))
    kernel, grid, args, constexprs = _cell_call(cell)
    error, ptx_target = None, None
    with _captured_stderr() as stderr, Timer() as timer:
        try:
            compiled = triton_launch.build(kernel, grid, args, constexprs, cell.num_warps)
            if not compiled.asm.get("cubin"):
                raise RuntimeError("no cubin produced")
            ptx_target = next(
                (line.split()[1] for line in compiled.asm["ptx"].splitlines() if line.startswith(".target")), None
            )
        except Exception as exception:  # any compiler failure is this cell's result
            error = exception
    result = {**dataclasses.asdict(cell), "ok": error is None, "error": None, "seconds": timer.seconds}
    result.update(ptx_target=ptx_target, triton=triton.__version__)
    if error is not None:
        result["error"] = _first_error_line(error, "".join(stderr))
    return result


# ----------------------------------------------------------------------------------------------
# The whole matrix


def triton_version() -> str:
    """The installed Triton's version, read without importing it (so the parent never picks an interpreter mode)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("triton")
    except PackageNotFoundError:
        return "not installed"


def run_matrix(cells: list[Cell], jobs: int, progress: Callable[[dict], None] | None = None) -> list[dict]:
    """Compile every cell in `jobs` worker processes; results (see `compile_cell`) in the order of `cells`."""
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no TRITON_INTERPRET import state
    with tempfile.TemporaryDirectory(prefix="triton-matrix-") as cache_dir:
        with ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=_init_worker, initargs=(cache_dir,)
        ) as pool:
            results = []
            for result in pool.map(compile_cell, cells, chunksize=1):
                if progress is not None:
                    progress(result)
                results.append(result)
    return results


def format_cell(result: dict, version: str) -> str:
    """One line: triton version, arch, direction, dtype, D, L, P, blocks, ok/FAIL (+ first error line)."""
    status = f"ok    {result['seconds']:5.1f}s" if result["ok"] else f"FAIL  {result['error']}"
    return (
        f"triton {version}  sm_{result['arch']}  {result['direction']:<8} {result['dtype']:<4}  D={result['head_dim']:<3}"
        f" L={result['levels']} P={result['points']} M={result['num_heads']}  BLOCK_Q={result['block_q']:<3} BLOCK_D={result['block_d']:<3}  "
        f"{status}"
    )


def run_and_write(
    archs: tuple[int, ...], quick: bool, jobs: int | None, out: Path | None, echo: Callable[[str], None]
) -> tuple[dict, Path]:
    """Compile the matrix, echo one line per cell, write `{"header", "summary", "cells"}` JSON.

    Returns the result dict and the path written. `summary["failed"]` > 0 means some cell failed.
    """
    from .harness import header, write_result

    version = triton_version()
    cells = matrix_cells(archs, quick=quick)
    jobs = jobs or min(len(cells), os.cpu_count() or 1)
    with Timer() as timer:
        results = run_matrix(cells, jobs, progress=lambda result: echo(format_cell(result, result["triton"])))
    wall = timer.seconds
    compiled_by = {r["triton"] for r in results}
    if compiled_by != {version}:  # a second Triton on the path: trust what the workers imported
        raise RuntimeError(f"the workers imported Triton {sorted(compiled_by)}, but {version} is installed first")
    failed = sum(not r["ok"] for r in results)
    summary = {"cells": len(results), "passed": len(results) - failed, "failed": failed, "wall_s": round(wall, 1)}
    summary["jobs"] = jobs
    result = {
        "header": header(threads=jobs, triton=version, archs=list(archs), quick=quick),
        "summary": summary,
        "cells": results,
    }
    out = out or Path("benchmarks/results") / f"triton_matrix_{version}{'_quick' if quick else ''}.json"
    return result, write_result(out, result)
