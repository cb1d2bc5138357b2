"""`bench model` harness, on a tiny model (the real run is `deformable-detr bench model`; no time asserted)."""

from __future__ import annotations

import json

import pytest

from deformable_detr.cli import main


@pytest.mark.slow
def test_bench_model_smoke(tmp_path, capsys):
    pytest.importorskip("transformers")
    out = tmp_path / "model_cpu_smoke.json"
    assert (
        main(["bench", "model", "--smoke", "--height", "64", "--width", "96", "--repeats", "1", "--out", str(out)]) == 0
    )
    result = json.loads(out.read_text())
    assert max(result["max_abs_diff"].values()) <= 1e-5  # same weights, same outputs
    for impl in ("ours", "hf"):
        assert result[impl]["fp32_ms"] > 0 and result[impl]["peak_rss_mb"] > 0
    assert "forward fp32 (ms)" in capsys.readouterr().out
    assert result["header"]["torch"] and result["header"]["threads"] == 2
