"""A DETR training run through every command that runs a model: predict, eval --checkpoint, export onnx work;
explain refuses in one line (DETR has no sampling points). The run folder is built by hand (tiny_models).

Oracle: the DETR that was saved, in memory (its `predict`, its forward).
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import deformable_detr
from deformable_detr import cli
from tiny_models import write_detr_run

THRESHOLD = 0.1  # class biases are zeroed: 7-way softmax scores spread around 1/7


@pytest.fixture(scope="module")
def detr_run(tmp_path_factory):
    return write_detr_run(tmp_path_factory.mktemp("detr") / "run")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    generator = torch.Generator().manual_seed(0)
    paths = []
    for index, size in enumerate([(80, 60), (50, 90)]):
        pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8).numpy()
        paths.append(folder / f"{index}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def _run(argv, capsys):
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_predict_and_model_predict(detr_run, images, tmp_path, capsys, one_thread):
    folder, saved = detr_run
    status, out, err = _run(["predict", *images, "--checkpoint", folder, "--out", tmp_path / "out",
                             "--threshold", THRESHOLD, "--no-draw"], capsys)  # fmt: skip
    assert status == 0, err
    by_file = {
        image["file_name"]: image["detections"]
        for image in json.loads((tmp_path / "out" / "detections.json").read_text())["images"]
    }
    loaded = deformable_detr.load(folder)
    for path in images:
        expected = saved.predict(path, threshold=THRESHOLD)[0].to_dict()["detections"]
        assert loaded.predict(path, threshold=THRESHOLD)[0].to_dict()["detections"] == expected
        got = by_file[str(path.resolve())]
        assert len(got) == len(expected) > 0
        for item, reference in zip(got, expected):
            assert (item["label"], item["name"]) == (reference["label"], reference["name"])
            assert item["score"] == pytest.approx(reference["score"], abs=1e-4)
            assert item["box_xyxy"] == pytest.approx(reference["box_xyxy"], abs=1e-2)


def test_eval_checkpoint(detr_run, tiny_dataset, capsys, one_thread):
    status, out, err = _run(["eval", "--checkpoint", detr_run[0], "--data", tiny_dataset], capsys)
    assert status == 0, err
    values = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}
    assert 0.0 <= float(values["AP"]) <= 1.0 and 0.0 <= float(values["AR100"]) <= 1.0


def test_explain_refuses_detr_in_one_line(detr_run, images, tmp_path, capsys, one_thread):
    status, out, err = _run(["explain", images[0], "--checkpoint", detr_run[0], "--out", tmp_path / "x"], capsys)
    assert status == 2
    assert err.splitlines() == [
        "error: explain: DETR has no sampling points (no deformable attention: DETR, resnet18, single-scale global "
        "attention); explain needs a Deformable DETR model"
    ]
    assert not any((tmp_path / "x").glob("*.png"))


def test_export_onnx_verifies(detr_run, tmp_path, capsys, one_thread):
    pytest.importorskip("onnxruntime")
    status, out, err = _run(["export", "onnx", "--checkpoint", detr_run[0], "--out", tmp_path / "exported",
                             "--dynamic", "--verify"], capsys)  # fmt: skip
    assert status == 0, err
    assert (tmp_path / "exported" / "model.onnx").is_file()
    rows = [line for line in out.splitlines() if line.startswith("verify")]
    assert len(rows) == 2  # two image sizes with --dynamic
    for row in rows:
        logits, boxes = (float(part.split()[-1].rstrip(",")) for part in row.split("pred_")[1:])
        assert logits < 1e-4 and boxes < 1e-4
