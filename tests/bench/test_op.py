"""`bench op` and `bench op-triton` on tiny shapes (no time asserted; the real runs are the CLI's)."""

from __future__ import annotations

import json

import pytest
import torch

from deformable_detr.bench import op as bench_op
from deformable_detr.cli import main


def test_op_benchmark_reports_every_backend_with_speedups(monkeypatch):
    # Shrink the paper's shapes so the run takes a fraction of a second.
    monkeypatch.setattr(bench_op, "ENCODER_LEVELS", [[6, 8], [3, 4]])
    results = bench_op.run_op_benchmark(
        backends=("reference", "cpu"), cases=("encoder", "decoder"), repeats=2, threads=1, memory=False
    )
    assert results["header"]["threads"] == 1
    for case in ("encoder", "decoder"):
        backends = results["cases"][case]["backends"]
        assert backends["reference"]["forward_speedup"] == pytest.approx(1.0)
        for timing in backends.values():
            assert 0 < timing["forward_ms"] <= timing["forward_median_ms"]
    text = bench_op.format_op_benchmark(results)
    assert "encoder" in text and "cpu" in text


@pytest.mark.slow
def test_bench_op_triton_smoke_writes_json(tmp_path, capsys):
    pytest.importorskip("triton")
    out = tmp_path / "triton.json"
    assert (
        main(
            [
                "bench",
                "op-triton",
                "--smoke",
                "--repeats",
                "1",
                "--dtypes",
                "float32",
                "--cases",
                "decoder",
                "--locations",
                "uniform",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    expected_device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu-interpreter"
    assert result["smoke"] and result["header"]["device"] == expected_device
    assert {row["backend"] for row in result["rows"]} == {"reference", "triton"}
    assert "decoder" in capsys.readouterr().out


def test_bench_op_triton_without_cuda_is_one_line_error(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same check on a machine with a GPU
    assert main(["bench", "op-triton"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
