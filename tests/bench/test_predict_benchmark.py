"""`bench predict` on a tiny model (the real run is `deformable-detr bench predict`; no time asserted)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from deformable_detr.bench.predict import METHODS, _checked_methods, onnx_sampling_bytes
from deformable_detr.cli import main
from deformable_detr.errors import ConfigError
from deformable_detr.models.config import ModelConfig


@pytest.mark.slow  # exports an ONNX file and builds an HF model: ~10-30 s
def test_bench_predict_smoke(tmp_path, capsys):
    pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "predict_cpu_smoke.json"
    assert main(["bench", "predict", "--smoke", "--repeats", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    methods = {(r["size"], r["batch"], r["method"]) for r in result["results"]}
    assert methods == {(64, b, m) for b in (1, 2) for m in ("ours-fp32", "ours-bf16", "onnxruntime", "hf")}
    for row in result["results"]:
        assert row["images_per_s"] > 0 and row["first_call_s"] > 0 and row["forward_ms_per_image"] > 0
        assert row["ms_per_image"] == pytest.approx(1e3 / row["images_per_s"])
    assert {"ours_fp32_over_hf", "ours_fp32_over_onnxruntime"} <= set(result["ratios"][0])
    printed = capsys.readouterr().out
    assert "ours/hf" in printed and "model ms/image" in printed
    assert result["complete"] is True and result["setup"]["device"] == "cpu"


@pytest.mark.slow
def test_bench_predict_keeps_finished_cells_when_a_later_one_dies(tmp_path, monkeypatch):
    # the full grid once died out of memory in its last cell (onnxruntime, 800 px, batch 8) and lost everything
    pytest.importorskip("transformers")
    from deformable_detr.bench import predict as bench_predict

    original, cells = bench_predict.interleaved_times, []

    def dies_in_the_second_cell(runs, repeats, **options):
        cells.append(1)
        if len(cells) == 3:  # two timings per cell: end to end, then the model alone
            raise MemoryError("simulated")
        return original(runs, repeats=repeats, **options)

    monkeypatch.setattr(bench_predict, "interleaved_times", dies_in_the_second_cell)
    out = tmp_path / "partial.json"
    with pytest.raises(MemoryError):
        main(["bench", "predict", "--smoke", "--repeats", "1", "--methods", "ours-fp32", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["complete"] is False
    assert [(r["batch"], r["method"]) for r in result["results"]] == [(1, "ours-fp32")]


@pytest.mark.slow
def test_bench_predict_skips_onnxruntime_where_it_would_not_fit_in_memory(tmp_path, monkeypatch, capsys):
    pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    from deformable_detr.bench import predict as bench_predict

    monkeypatch.setattr(bench_predict, "available_bytes", lambda: 1024)
    out = tmp_path / "skipped.json"
    args = ["bench", "predict", "--smoke", "--repeats", "1", "--methods", "ours-fp32", "onnxruntime", "--out", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert [(r["batch"], r["method"]) for r in result["results"]] == [(1, "ours-fp32"), (2, "ours-fp32")]
    assert [(s["batch"], s["method"]) for s in result["skipped"]] == [(1, "onnxruntime"), (2, "onnxruntime")]
    assert "GiB available" in result["skipped"][0]["why"]
    assert "skipped onnxruntime at 64 px, batch 2" in capsys.readouterr().out


@pytest.mark.slow  # builds an HF model and two of ours: ~10-30 s
def test_bench_predict_times_the_compiled_path_fp32_and_bf16(tmp_path, monkeypatch, capsys):
    """The compiled methods go through `pipeline.compiled` (torch.compile replaced by the identity here: the
    real compile is `test_compiled`'s); first calls, model-alone times and the compile records are kept."""
    pytest.importorskip("transformers")
    from deformable_detr.pipeline import compiled

    monkeypatch.setattr(compiled, "_compile", lambda function, **options: function)
    out = tmp_path / "compiled.json"
    methods = ["ours-fp32", "ours-compile", "ours-compile-bf16"]
    assert main(["bench", "predict", "--smoke", "--repeats", "1", "--methods", *methods, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(r["batch"], r["method"]) for r in result["results"]] == [(b, m) for b in (1, 2) for m in methods]
    for row in result["results"]:  # the same weights: padding to a bucket changes only rounding (README: 1e-5, 1e-6)
        difference = row["max_abs_diff_vs_ours_fp32"]
        if row["method"] == "ours-compile-bf16":
            assert 0 < difference["pred_logits"] < math.inf
        else:
            assert difference["pred_logits"] <= 1e-5 and difference["pred_boxes"] <= 1e-6
    records = result["compiled"]["64"]["compiles"]
    assert {(r["batch"], r["amp"]) for r in records} == {("1", False), ("1", True), (">=2", False), (">=2", True)}
    assert "torch.compile (default, cpu): 4 shape(s)" in capsys.readouterr().out


def test_default_methods_are_those_that_run_on_the_device():
    assert _checked_methods(None, on_gpu=False, smoke=False) == METHODS
    assert "onnxruntime" not in _checked_methods(None, on_gpu=True, smoke=False)
    assert _checked_methods(None, on_gpu=True, smoke=True) == ("ours-fp32", "ours-bf16", "hf")  # no compile
    assert _checked_methods(("ours-compile",), on_gpu=False, smoke=True) == ("ours-compile",)  # asked for
    with pytest.raises(ConfigError, match=r"onnxruntime runs on the CPU only here; leave it out with a CUDA --device"):
        _checked_methods(("ours-fp32", "onnxruntime"), on_gpu=True, smoke=False)
    with pytest.raises(ConfigError, match=r"unknown method\(s\) \['ours-fast'\]"):
        _checked_methods(("ours-fast",), on_gpu=False, smoke=False)


def test_onnx_sampling_bytes_counts_every_gathered_corner():
    # 800 x 1066 input: levels 100x134, 50x67, 25x34, 13x17 = 17,821 tokens; 8 heads of 32 channels,
    # 4 levels x 4 points x 4 corners each, float32
    model = SimpleNamespace(config=ModelConfig(), attention_backend="auto")  # the default model's Detector members
    assert onnx_sampling_bytes(model, 1, 800, 1066) == 17_821 * 8 * (4 * 4 * 4) * 32 * 4
    assert onnx_sampling_bytes(model, 8, 800, 1066) == 8 * onnx_sampling_bytes(model, 1, 800, 1066)
    assert 9.0e9 < onnx_sampling_bytes(model, 8, 800, 1066) < 9.5e9


def test_onnx_sampling_bytes_of_a_detr_run_is_zero(tmp_path):
    """A DETR has no deformable attention, so its export gathers no corners (it read config.num_feature_levels,
    which DetrConfig has not, and crashed)."""
    from deformable_detr.inference.load import load
    from tiny_models import write_detr_run

    folder, _ = write_detr_run(tmp_path / "run")
    assert onnx_sampling_bytes(load(folder), 8, 800, 1066) == 0
