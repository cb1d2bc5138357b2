"""`torchrun --nproc-per-node 2 -m deformable_detr.cli predict ...` writes the single-process detections.json."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import deformable_detr

SRC = str(Path(deformable_detr.__file__).parents[1])


def _predict(launcher, images, model_dir, out):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    command = [
        *launcher,
        "-m",
        "deformable_detr.cli",
        "predict",
        str(images),
        "--checkpoint",
        str(model_dir),
        "--out",
        str(out),
        "--threshold",
        "0.1",
        "--batch-size",
        "2",
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
def test_two_gloo_processes_write_the_single_process_detections(model_dir, image_folder, tmp_path):
    root, good, bad = image_folder
    single = _predict([sys.executable], root, model_dir, tmp_path / "single")
    sharded = _predict(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"],
        root,
        model_dir,
        tmp_path / "sharded",
    )
    assert single.returncode == 1 and sharded.returncode == 1, sharded.stderr[-3000:]  # 1: the bad files
    # Exit 1 on every rank; torchrun itself then reports ChildFailedError, but no frame of ours fails.
    assert "deformable_detr/" not in sharded.stderr
    listed = [line for line in sharded.stderr.splitlines() if line.startswith("failed: ")]
    assert len(listed) == len(bad)  # listed once, by rank 0
    expected = json.loads((tmp_path / "single" / "detections.json").read_text())
    actual = json.loads((tmp_path / "sharded" / "detections.json").read_text())
    assert actual == expected
    assert len(expected["images"]) == len(good) and len(expected["errors"]) == len(bad)
    assert sum(len(image["detections"]) for image in expected["images"]) > 0
    for image in expected["images"]:  # every rank drew its own share
        assert (tmp_path / "sharded" / image["drawing"]).read_bytes() == (
            tmp_path / "single" / image["drawing"]
        ).read_bytes()
    assert sharded.stdout.count("image(s)") == 1  # only rank 0 prints the summary
