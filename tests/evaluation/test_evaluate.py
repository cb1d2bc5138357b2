"""`evaluate` scores every image as if it ran alone: the same detections whatever the batch, equal to `predict`'s."""

import json

import pytest
import torch

from deformable_detr.data.coco import DatasetError
from deformable_detr.data.synthetic import make_dataset
from deformable_detr.evaluation import evaluate as evaluate_module
from deformable_detr.evaluation.evaluate import evaluate_checkpoint
from deformable_detr.models import DeformableDETR, ModelConfig
from deformable_detr.pipeline.processor import PreprocessConfig


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


# Classes are matched by name. Oracle: ground truth made of the model's own detections scoring at least t
# (boxes rounded as `evaluate` rounds them) is found exactly: every such detection is a true positive ranked
# above every detection under t, so AP = 1 whatever ids and name spellings the data gives its categories.


def _self_ground_truth(model, split, rename):
    """(instances dict, threshold): the model's detections >= t as annotations; category k renamed by `rename`."""
    images = json.loads((split / "annotations.json").read_text())["images"]
    found = model.predict([split / "images" / image["file_name"] for image in images], threshold=0.0)
    records = [r for image, dets in zip(images, found) for r in dets.to_coco(image["id"])]
    scores = sorted({round(r["score"], 5) for r in records}, reverse=True)
    threshold = (scores[11] + scores[12]) / 2  # 12 annotations; no score equals t
    categories, new_id = rename(model.categories)
    annotations = [
        {
            "id": index + 1,
            "image_id": r["image_id"],
            "category_id": new_id[r["category_id"]],
            "bbox": [round(x, 2) for x in r["bbox"]],
            "area": 100.0,
            "iscrowd": 0,
        }
        for index, r in enumerate(x for x in records if round(x["score"], 5) > threshold)
        if new_id.get(r["category_id"]) is not None
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def _evaluate_on(tmp_path, checkpoint, split, instances):
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(instances))
    return evaluate_checkpoint(checkpoint, split / "images", path, progress=False)


def _permuted_and_respelled(categories):
    """The same names (other case, spaces around) under the same ids in reverse order, listed in another order."""
    ids = [c["id"] for c in categories]
    new_id = dict(zip(ids, ids[::-1]))  # circle 1 -> 6, square 2 -> 5, ...
    renamed = [
        {"id": new_id[c["id"]], "name": f"  {c['name'].upper()} " if k % 2 else c["name"].title()}
        for k, c in enumerate(categories)
    ]
    return renamed[::-1], new_id


def test_classes_are_matched_by_name_whatever_the_ids(model_and_data, tmp_path, one_thread):
    checkpoint, split, model = model_and_data
    instances = _self_ground_truth(model, split, _permuted_and_respelled)
    assert len({a["category_id"] for a in instances["annotations"]}) > 1, "the test needs several classes"
    assert _evaluate_on(tmp_path, checkpoint, split, instances)["AP"] == pytest.approx(1.0)


def test_data_classes_the_model_does_not_know_are_left_out_with_a_warning(model_and_data, tmp_path, one_thread):
    checkpoint, split, model = model_and_data
    instances = _self_ground_truth(model, split, _permuted_and_respelled)
    box = instances["annotations"][0]
    extra = [{"id": 500, "name": "zebra"}, {"id": 501, "name": "kite"}]
    instances["categories"] += extra
    instances["annotations"] += [{**box, "id": 1000 + k, "category_id": c["id"]} for k, c in enumerate(extra)]
    with pytest.warns(UserWarning, match=r"2 of the data's .* classes are not among the model's .*zebra, kite"):
        metrics = _evaluate_on(tmp_path, checkpoint, split, instances)
    assert metrics["AP"] == pytest.approx(1.0)  # zebra and kite, never predicted, do not count


def test_a_subset_of_the_model_classes_is_evaluated_on_those(model_and_data, tmp_path, one_thread):
    checkpoint, split, model = model_and_data
    instances = _self_ground_truth(model, split, _permuted_and_respelled)
    kept_id = instances["annotations"][0]["category_id"]
    instances["categories"] = [c for c in instances["categories"] if c["id"] == kept_id]
    instances["annotations"] = [a for a in instances["annotations"] if a["category_id"] == kept_id]
    assert _evaluate_on(tmp_path, checkpoint, split, instances)["AP"] == pytest.approx(1.0)


def test_disjoint_class_sets_are_refused(model_and_data, tmp_path):
    checkpoint, split, model = model_and_data
    instances = json.loads((split / "annotations.json").read_text())
    names = ["hexagon", "crescent", "arrow", "semicircle", "kite", "zebra", "lamp", "fork"]
    instances["categories"] = [{"id": c["id"], "name": names[k]} for k, c in enumerate(instances["categories"])]
    with pytest.raises(
        DatasetError, match=r"no class of the data is one of the model's .*circle.*hexagon.*train --init"
    ):
        _evaluate_on(tmp_path, checkpoint, split, instances)


def test_a_name_held_by_two_classes_is_refused(model_and_data, tmp_path):
    checkpoint, split, model = model_and_data
    instances = json.loads((split / "annotations.json").read_text())
    name = instances["categories"][0]["name"]
    instances["categories"].append({"id": 99, "name": f" {name.upper()}"})
    with pytest.raises(DatasetError, match=rf"the data has 2 classes named '{name}'.*distinct name"):
        _evaluate_on(tmp_path, checkpoint, split, instances)


def test_a_model_without_class_names_is_matched_by_id(tmp_path, one_thread):
    model = DeformableDETR(
        ModelConfig.preset("tiny", num_classes=3), preprocess=PreprocessConfig(min_size=64, max_size=64)
    )
    model.save_pretrained(tmp_path / "model")  # categories class_1..class_3, ids 1..3
    split = tmp_path / "data"
    (split / "images").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (64, 48), (90, 120, 30)).save(split / "images" / "a.png")
    instances = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [4, 4, 20, 20], "area": 400, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    captured = []
    with pytest.warns(UserWarning, match="carry no names.*matched to the data's categories by id"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(evaluate_module, "evaluate_detections", lambda gt, results: captured.extend(results) or {})
            _evaluate_on(tmp_path, tmp_path / "model", split, instances)
    assert {r["category_id"] for r in captured} <= {1, 2} and captured  # class_3 (id 3) dropped


def test_cli_refuses_disjoint_classes_in_one_line(model_and_data, tmp_path, capsys):
    from deformable_detr.cli import main

    checkpoint, split, _ = model_and_data
    instances = json.loads((split / "annotations.json").read_text())
    for k, category in enumerate(instances["categories"]):
        category["name"] = f"other{k}"
    (tmp_path / "images").symlink_to(split / "images")
    (tmp_path / "annotations.json").write_text(json.dumps(instances))
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "no class of the data is one of the model's" in err


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
