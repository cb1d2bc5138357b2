"""`bench demo`: the demo recipe trained on a device; AP evaluated, or kept for later without pycocotools."""

from __future__ import annotations

import json

import pytest

from deformable_detr.bench import demo as bench_demo
from deformable_detr.cli import main


def _result(metrics):
    return {
        "header": {"gpu_name": "NVIDIA H200"},
        "setup": {"device": "cuda", "batch_size": 8},
        "render_s": 9.0,
        "train": {"steps": 950, "train_seconds": 47.5, "s_per_step": 0.05, "images_per_s": 160.0, "wall_s": 60.0},
        "evaluation": {"metrics": metrics, "status": "evaluated", "images": 250, "command": "deformable-detr eval ..."},
        "cpu_demo": bench_demo.CPU_DEMO_METRICS,
        "ap_within_tolerance": None
        if metrics is None
        else abs(metrics["AP"] - bench_demo.CPU_DEMO_METRICS["AP"]) <= 0.03,
    }


def test_table_compares_the_ap_with_the_cpu_demo():
    cpu_ap = bench_demo.CPU_DEMO_METRICS["AP"]
    text = bench_demo.format_demo_benchmark(_result({"AP": cpu_ap + 0.02, "AP50": 0.56}))
    assert "950 steps of 8 images in 47.5 s (50.0 ms/step, 160 images/s" in text
    assert f"validation AP {cpu_ap + 0.02:.3f}" in text and f"CPU demo AP {cpu_ap:.3f}: within ±0.03" in text
    assert "NOT within" in bench_demo.format_demo_benchmark(_result({"AP": cpu_ap - 0.06, "AP50": 0.45}))
    pending = _result(None)
    pending["evaluation"]["status"] = "pending: pycocotools is not installed here"
    assert "validation AP pending" in bench_demo.format_demo_benchmark(pending)


@pytest.mark.slow
def test_without_pycocotools_the_detections_are_kept_for_evaluation_elsewhere(tmp_path, monkeypatch, capsys):
    from deformable_detr.evaluation import coco_eval, evaluate

    real_evaluate_detections = coco_eval.evaluate_detections

    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'pycocotools'", name="pycocotools")

    monkeypatch.setattr(coco_eval, "evaluate_detections", missing)
    monkeypatch.setattr(evaluate, "evaluate_detections", missing)
    out = tmp_path / "demo.json"
    args = ["bench", "demo", "--device", "cpu", "--smoke", "--work", str(tmp_path / "work"), "--out", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["train"]["steps"] == 4 and result["train"]["s_per_step"] > 0
    evaluation = result["evaluation"]
    assert evaluation["metrics"] is None and evaluation["status"].startswith("pending")
    assert result["ap_within_tolerance"] is None and "pycocotools" in result["fit_note"]
    assert "validation AP pending" in capsys.readouterr().out
    # where pycocotools is installed, the kept files evaluate as `deformable-detr eval` would
    metrics = real_evaluate_detections(evaluation["annotations"], evaluation["detections"])
    assert 0.0 <= metrics["AP"] <= 1.0
