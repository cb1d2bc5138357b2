"""`bench train`: the comparison with the reference implementation's figure, the table, the CLI (no time asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from deformable_detr.bench import train as bench_train
from deformable_detr.cli import main


def _runs(ours_ms: float, hf_ms: float) -> list[dict]:
    rows = []
    for precision in ("fp32", "bf16"):
        for phase in ("step", "fwd_bwd"):
            for impl, ms in (("ours", ours_ms), ("hf", hf_ms)):
                scale = 0.5 if precision == "bf16" else 1.0  # bf16 rows: half the time
                rows.append(
                    {
                        "impl": impl,
                        "precision": precision,
                        "phase": phase,
                        "min_ms": ms * scale,
                        "median_ms": ms * scale,
                        "times_ms": [ms * scale],
                        "cpu_s": 0.0,
                        "peak_mib": 100.0,
                    }
                )
    return rows


def test_speedups_and_the_reference_implementations_figure():
    runs = _runs(ours_ms=49.0, hf_ms=147.0)
    assert bench_train._speedups(runs) == {
        "fp32/step": pytest.approx(3.0),
        "fp32/fwd_bwd": pytest.approx(3.0),
        "bf16/step": pytest.approx(3.0),
        "bf16/fwd_bwd": pytest.approx(3.0),
    }
    cuda = torch.device("cuda")
    reference = bench_train._versus_reference(runs, cuda, "NVIDIA H200", 2, 800, 1066, smoke=False)
    assert reference["fwd_bwd_ms"] == 98.0 and reference["measured"]["date"] == "2026-12-04"
    assert reference["speedup_fp32_fwd_bwd"] == pytest.approx(2.0)  # 98 / 49
    assert reference["speedup_bf16_step"] == pytest.approx(4.0)  # 98 / 24.5
    assert reference["same_gpu"]
    assert not bench_train._versus_reference(runs, cuda, "NVIDIA A100", 2, 800, 1066, smoke=False)["same_gpu"]
    # Only where the figure was measured: CUDA, the paper model, batch 2 x 800x1066.
    assert bench_train._versus_reference(runs, torch.device("cpu"), None, 2, 800, 1066, smoke=False) is None
    assert bench_train._versus_reference(runs, cuda, "NVIDIA H200", 1, 800, 1066, smoke=False) is None
    assert bench_train._versus_reference(runs, cuda, "NVIDIA H200", 2, 512, 512, smoke=False) is None
    assert bench_train._versus_reference(runs, cuda, "NVIDIA H200", 2, 800, 1066, smoke=True) is None


def test_table_names_the_reference_figure():
    runs = _runs(ours_ms=49.0, hf_ms=147.0)
    result = {
        "config": "paper default (R50 ...)",
        "header": {"gpu_name": "NVIDIA H200"},
        "setup": {
            "device": "cuda",
            "image": [800, 1066],
            "batch_size": 2,
            "repeats": 5,
            "precisions": ["fp32", "bf16"],
        },
        "threads": 2,
        "runs": runs,
        "reference_implementation": bench_train._versus_reference(
            runs, torch.device("cuda"), "NVIDIA H200", 2, 800, 1066, smoke=False
        ),
        "demo": {"batch_size": 8, "image_size": 192, "amp": True, "s_per_step": 0.05, "images_per_s": 160.0},
    }
    text = bench_train.format_training_benchmark(result)
    assert "fp32 fwd+loss+bwd" in text and "bf16 full step" in text
    assert "reference implementation's 98 ms fwd+bwd" in text and "2026-12-04" in text and "OTHER GPU" not in text
    assert "fp32 fwd bwd 2.00x" in text


def test_bench_train_arguments_are_checked(capsys, monkeypatch):
    assert main(["bench", "train", "--height", "64"]) == 2
    assert "--height and --width together" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # the same check on a machine with a GPU
    assert main(["bench", "train", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_train_smoke_writes_json(tmp_path, capsys):
    pytest.importorskip("transformers")
    out = tmp_path / "train.json"
    args = ["bench", "train", "--smoke", "--image-size", "64", "--repeats", "1", "--threads", "1"]
    assert main([*args, "--precisions", "fp32", "bf16", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {(r["impl"], r["precision"], r["phase"]) for r in result["runs"]} == {
        (impl, precision, phase)
        for impl in ("ours", "hf")
        for precision in ("fp32", "bf16")
        for phase in ("step", "fwd_bwd")
    }
    assert result["trainable_parameters"] > 0 and result["speedup"] > 0 and "reference_implementation" not in result
    assert result["demo"]["images_per_s"] > 0
    assert "fp32 full step" in capsys.readouterr().out
