"""`evaluate` scores every image as if it ran alone: the same detections whatever the batch, equal to `predict`'s."""

import json

import pytest
import torch

from deformable_detr.data.synthetic import make_dataset
from deformable_detr.evaluation import evaluate as evaluate_module
from deformable_detr.evaluation.evaluate import evaluate_checkpoint
from deformable_detr.models import DeformableDETR, ModelConfig
from deformable_detr.models.preprocess import PreprocessConfig


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    make_dataset(root / "data", num_train=1, num_val=5, image_size=96, seed=3, num_workers=1)
    annotations = root / "data" / "val" / "annotations.json"
    sizes = {(image["height"], image["width"]) for image in json.loads(annotations.read_text())["images"]}
    assert len(sizes) > 1, "the test needs images of different sizes"
    categories = [{"id": c["id"], "name": c["name"]} for c in json.loads(annotations.read_text())["categories"]]
    torch.manual_seed(0)
    model = DeformableDETR(
        ModelConfig.preset("tiny", num_classes=len(categories)),
        preprocess=PreprocessConfig(min_size=64, max_size=96),
        categories=categories,
    )
    model.save_pretrained(root / "model")
    return root / "model", root / "data" / "val", model.eval()


def _detections(monkeypatch, checkpoint, split, batch_size):
    captured = []

    def capture(ground_truth, results):
        captured.extend(results)
        return {"AP": 0.0}

    monkeypatch.setattr(evaluate_module, "evaluate_detections", capture)
    evaluate_checkpoint(checkpoint, split / "images", split / "annotations.json", batch_size=batch_size, progress=False)
    return sorted(captured, key=lambda r: (r["image_id"], -r["score"], r["category_id"]))


def _assert_same(got, want):
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=2e-5)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=0.02)


def test_detections_do_not_depend_on_the_batch(model_and_data, monkeypatch, one_thread):
    checkpoint, split, _ = model_and_data
    alone = _detections(monkeypatch, checkpoint, split, batch_size=1)
    batched = _detections(monkeypatch, checkpoint, split, batch_size=5)  # padded to the largest image
    _assert_same(batched, alone)


def test_detections_equal_model_predict_on_the_files(model_and_data, monkeypatch, one_thread):
    checkpoint, split, model = model_and_data
    evaluated = _detections(monkeypatch, checkpoint, split, batch_size=3)
    images = json.loads((split / "annotations.json").read_text())["images"]
    found = model.predict([split / "images" / image["file_name"] for image in images], threshold=0.0)
    predicted = [
        {**record, "bbox": [round(x, 2) for x in record["bbox"]], "score": round(record["score"], 5)}
        for image, detections in zip(images, found)
        for record in detections.to_coco(image["id"])
    ]
    _assert_same(evaluated, sorted(predicted, key=lambda r: (r["image_id"], -r["score"], r["category_id"])))


@pytest.mark.parametrize("layout", ["yolo", "voc"])
def test_eval_checkpoint_on_yolo_or_voc_data_says_to_convert_first(tmp_path, capsys, layout):
    from PIL import Image

    from deformable_detr.cli import main

    data = tmp_path / "mine"
    if layout == "yolo":
        (data / "images/val").mkdir(parents=True)
        (data / "labels/val").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(data / "images/val/a.jpg")
        (data / "classes.txt").write_text("a\n")
    else:
        (data / "Annotations").mkdir(parents=True)
        (data / "JPEGImages").mkdir()
    status = main(["eval", "--checkpoint", str(tmp_path / "no_model_needed"), "--data", str(data)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert f"{data}: is a {'YOLO' if layout == 'yolo' else 'Pascal VOC'} dataset; eval --checkpoint reads COCO" in err
    assert f"deformable-detr convert {data} --to coco {data}_coco" in err, err
    assert f"--data {data}_coco" in err and "annotations file not found" not in err, err
