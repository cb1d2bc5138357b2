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


def _dataset_of_saved_detections(detr_run, images, folder):
    """images/ + annotations.json whose ground truth is some of the saved model's own detections (ranks 0, 3 and 7
    of each image, shifted by 0, 1 and 3 px), so that AP lies strictly between 0 and 1 and any change in the
    detections evaluated shows in it."""
    _, saved = detr_run
    (folder / "images").mkdir(parents=True)
    instances = {"images": [], "annotations": [], "categories": saved.categories}
    for image_id, path in enumerate(images, start=1):
        (folder / "images" / path.name).write_bytes(path.read_bytes())
        width, height = Image.open(path).size
        instances["images"].append({"id": image_id, "file_name": path.name, "width": width, "height": height})
        detections = saved.predict(path, threshold=0.0)[0]
        for rank, shift in ((0, 0.0), (3, 1.0), (7, 3.0)):
            x0, y0, x1, y1 = (v + shift for v in detections.boxes[rank].tolist())
            instances["annotations"].append(
                {
                    "id": len(instances["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": detections.category_ids[rank],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    (folder / "annotations.json").write_text(json.dumps(instances))
    return folder


def test_eval_checkpoint_equals_predict_then_eval_predictions(detr_run, images, tmp_path, capsys, one_thread):
    """The README's claim: `eval --checkpoint` == `predict --threshold 0` + `eval --predictions` on the same images."""
    pytest.importorskip("pycocotools")
    data = _dataset_of_saved_detections(detr_run, images, tmp_path / "data")
    status, _, err = _run(["eval", "--checkpoint", detr_run[0], "--data", data, "--out", tmp_path / "direct"], capsys)
    assert status == 0, err
    status, _, err = _run(["predict", data / "images", "--checkpoint", detr_run[0], "--threshold", 0, "--no-draw",
                           "--out", tmp_path / "predicted"], capsys)  # fmt: skip
    assert status == 0, err
    status, _, err = _run(["eval", "--predictions", tmp_path / "predicted" / "detections.json", "--annotations",
                           data / "annotations.json", "--out", tmp_path / "two_steps"], capsys)  # fmt: skip
    assert status == 0, err
    direct = json.loads((tmp_path / "direct" / "metrics.json").read_text())
    two_steps = json.loads((tmp_path / "two_steps" / "metrics.json").read_text())
    assert 0.0 < direct["AP"] < 1.0 and 0.0 < direct["AR1"] < 1.0, direct  # the comparison is not 0 == 0
    assert direct == two_steps


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
