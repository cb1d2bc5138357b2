"""`bench predict-load`: the load test of `predict` over files, on a tiny count (one bad file in 38)."""

import json

from deformable_detr.cli import main


def test_bench_predict_load_counts_good_and_bad_files(tmp_path, capsys):
    out = tmp_path / "predict_load.json"
    assert main(["bench", "predict-load", "--images", "38", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    # 38 files, every 37th bad (index 36): 37 good, 1 bad; the first run takes 10 % of the sorted files (3).
    assert (result["good_files"], result["bad_files"]) == (37, 1)
    first, whole = result["runs"]
    assert (first["files"], first["processed"], first["failed"]) == (3, 3, 0)
    assert (whole["files"], whole["processed"], whole["failed"]) == (38, 37, 1)
    assert first["bad_files_listed"] and whole["bad_files_listed"]
    assert "bad listed" in capsys.readouterr().out


def test_bench_predict_load_refuses_zero_images(capsys):
    assert main(["bench", "predict-load", "--images", "0"]) == 2
    assert "--images, --batch-size and --threads must be >= 1" in capsys.readouterr().err
