"""`bench op-triton --compile-matrix`: the kernels compile for a GPU under the installed Triton, no GPU needed.

The compiles run in a subprocess: tests/conftest.py sets TRITON_INTERPRET=1 on a machine without CUDA,
and under it there is nothing to compile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

from deformable_detr.bench import triton_matrix  # noqa: E402
from deformable_detr.cli import main  # noqa: E402


def _run_matrix_cli(tmp_path, *options: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    out = tmp_path / "matrix.json"
    command = [sys.executable, "-m", "deformable_detr.cli", "bench", "op-triton", "--compile-matrix", "--out", str(out)]
    result = subprocess.run([*command, *options], env=env, capture_output=True, text=True, timeout=1800)
    return result, json.loads(out.read_text()) if out.exists() else {}


def test_quick_matrix_compiles_what_triton_3_6_and_3_7_failed(tmp_path):
    # Before the fix in `_corner_offsets` these 10 kernels failed under Triton 3.6.0 / 3.7.x with
    # "'arith.select' op expected condition type to have the same shape as the result type" (issue 20).
    # Two spawned workers (no TRITON_INTERPRET) import torch and triton and compile 5 kernels each:
    # ~8 CPU-seconds, ~5 s on an idle 2-core machine.
    lines = []
    written, out = triton_matrix.run_and_write((90,), quick=True, jobs=2, out=tmp_path / "m.json", echo=lines.append)
    assert len(lines) == 10 and all(" ok " in line for line in lines), "\n".join(lines)
    assert any("forward  fp64  D=24" in line for line in lines) and any("backward fp32  D=16" in line for line in lines)
    assert written["summary"]["cells"] == written["summary"]["passed"] == 10
    assert {cell["ptx_target"] for cell in written["cells"]} <= {"sm_90", "sm_90a"}
    assert json.loads(out.read_text())["header"]["triton"] == triton_matrix.triton_version()


def test_quick_cells_are_the_failed_cases_at_their_largest_block():
    cells = triton_matrix.matrix_cells(archs=(90,), quick=True)
    cases = {(c.direction, c.dtype, c.head_dim, c.block_q, c.block_d) for c in cells}
    # Largest BLOCK_Q = min(TILE_ELEMENTS 512 // BLOCK_D, 128): 64 rows at D = 8, 32 at 16, 16 at 24 and 32.
    assert cases == {
        *[("forward", dtype, 8, 64, 8) for dtype in ("fp32", "bf16", "fp16")],
        *[("forward", dtype, 16, 32, 16) for dtype in ("fp32", "bf16", "fp16")],
        ("backward", "fp32", 8, 64, 8),
        ("backward", "fp32", 16, 32, 16),
        ("forward", "fp64", 24, 16, 32),
        ("forward", "fp64", 32, 16, 32),
    }
    assert all((c.arch, c.levels, c.points, c.num_heads, c.num_warps) == (90, 4, 4, 8, 4) for c in cells)


def test_block_choices_run_from_the_full_tile_down_to_one_element_per_thread():
    # 4 warps = 128 threads: the launcher halves BLOCK_Q from 512 / BLOCK_D (at most 128) down to 128 / BLOCK_D.
    assert triton_matrix.block_choices(32) == [(16, 32), (8, 32), (4, 32)]
    assert triton_matrix.block_choices(24) == [(16, 32), (8, 32), (4, 32)]
    assert triton_matrix.block_choices(1) == [(128, 1)]
    assert triton_matrix.block_choices(256) == [(2, 256), (1, 256)]


def test_full_matrix_covers_every_dtype_direction_arch_and_block():
    cells = triton_matrix.matrix_cells()
    assert {c.arch for c in cells} == {80, 90}
    assert {(c.direction, c.dtype) for c in cells} == {
        (direction, dtype) for direction in ("forward", "backward") for dtype in ("fp32", "bf16", "fp16", "fp64")
    }
    for head_dim in triton_matrix.HEAD_DIMS:
        blocks = {(c.block_q, c.block_d) for c in cells if c.head_dim == head_dim}
        assert blocks == set(triton_matrix.block_choices(head_dim))
    assert {(c.levels, c.points, c.num_heads) for c in cells} == {(4, 4, 8), (1, 4, 8), (1, 1, 1)}
    assert len(cells) == len(set(cells))


def test_failed_cell_makes_the_command_exit_1(monkeypatch, tmp_path, capsys):
    def one_failure(archs, quick, jobs, out, echo):
        echo("triton x  sm_90  forward  fp32  D=8 ... FAIL  error: boom")
        return {"summary": {"cells": 2, "passed": 1, "failed": 1, "wall_s": 0.1, "jobs": 1}}, tmp_path / "m.json"

    monkeypatch.setattr(triton_matrix, "run_and_write", one_failure)
    assert main(["bench", "op-triton", "--compile-matrix", "--quick"]) == 1
    assert "1/2 cells compiled" in capsys.readouterr().out


@pytest.mark.slow
def test_full_matrix_compiles_with_installed_triton(tmp_path):
    # 576 kernels: about 5 minutes on 2 idle CPU cores.
    result, written = _run_matrix_cli(tmp_path)
    assert result.returncode == 0, "\n".join(line for line in result.stdout.splitlines() if "FAIL" in line)[-5000:]
    assert written["summary"]["failed"] == 0 and written["summary"]["cells"] == len(triton_matrix.matrix_cells())


def test_arch_below_triton_targets_is_a_usage_error(capsys):
    assert main(["bench", "op-triton", "--compile-matrix", "--arch", "90", "12"]) == 2
    assert "--arch 12 is not a Triton target" in capsys.readouterr().err
