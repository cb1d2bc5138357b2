"""Dataset checks: a clean synthetic dataset passes; each injected defect is reported with its count."""

import json
import shutil

import pytest
from PIL import Image

from deformable_detr.data.check import check_dataset
from deformable_detr.data.check_report import PROBLEM_KINDS
from deformable_detr.data.coco import DatasetError
from deformable_detr.data.synthetic import make_dataset


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("clean"), num_train=8, num_val=0, image_size=96, seed=0)["train"]


def _corrupted_copy(clean, tmp_path):
    """Copy of the clean split with exactly one instance of every defect kind (and two warnings)."""
    images_dir = tmp_path / "images"
    shutil.copytree(clean.images_dir, images_dir)
    data = json.loads(clean.annotations_file.read_text())
    images, annotations = data["images"], data["annotations"]
    assert len(images) == 8 and len(annotations) >= 8
    (images_dir / images[0]["file_name"]).unlink()  # missing_image
    (images_dir / images[1]["file_name"]).write_bytes(b"")  # empty_image
    (images_dir / images[2]["file_name"]).write_bytes(b"\xff\xd8 this is not a jpeg")  # unreadable_image
    Image.new("RGB", (10, 10)).save(images_dir / images[3]["file_name"])  # size_mismatch
    images.append(dict(images[4]))  # duplicate_image_id
    images.append({**images[5], "id": 100})  # duplicate_file_name warning: a new id naming images[5]'s file
    data["categories"].append({"id": 1, "name": "again"})  # duplicate_category_id
    data["categories"].append({"id": 10, "name": "gap"})  # noncontiguous_category_ids warning
    annotations[0]["bbox"] = [1, 1, 0, 5]  # degenerate_box
    image_of_1 = next(im for im in images if im["id"] == annotations[1]["image_id"])
    annotations[1]["bbox"] = [image_of_1["width"] - 2, 0, 10, 5]  # out_of_bounds_box
    annotations[2]["image_id"] = 9999  # unknown_image_id
    annotations[3]["category_id"] = 99  # unknown_category_id
    annotations[4]["id"] = annotations[5]["id"]  # duplicate_annotation_id
    annotations[6]["bbox"] = "x"  # malformed_entry
    annotations_file = tmp_path / "annotations.json"
    annotations_file.write_text(json.dumps(data))
    return images_dir, annotations_file


def test_clean_dataset_passes(clean):
    report = check_dataset(clean.images_dir, clean.annotations_file)
    assert report.ok and report.counts() == {}
    assert "0 problems" in report.format()


def test_every_injected_defect_is_reported_with_its_count(clean, tmp_path):
    report = check_dataset(*_corrupted_copy(clean, tmp_path))
    assert not report.ok
    expected = {kind: 1 for kind in PROBLEM_KINDS}
    expected.update(noncontiguous_category_ids=1, duplicate_file_name=1)
    assert report.counts() == expected
    text = report.format()
    for kind in expected:
        assert kind in text


def test_counts_accumulate_over_many_occurrences(clean, tmp_path):
    images_dir, annotations_file = _corrupted_copy(clean, tmp_path)
    data = json.loads(annotations_file.read_text())
    for ann in data["annotations"][7:]:
        ann["category_id"] = 42
    annotations_file.write_text(json.dumps(data))
    report = check_dataset(images_dir, annotations_file)
    assert report.counts()["unknown_category_id"] == 1 + len(data["annotations"][7:])
    assert "... and" in report.format(examples=2)


def test_malformed_json_is_one_line_dataset_error(clean, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(DatasetError, match="broken.json: not valid JSON") as error:
        check_dataset(clean.images_dir, broken)
    assert "\n" not in str(error.value)
    broken.write_text('{"images": []}')
    with pytest.raises(DatasetError, match="top-level lists"):
        check_dataset(clean.images_dir, broken)


def test_missing_paths_raise_file_not_found(clean, tmp_path):
    with pytest.raises(DatasetError, match="annotations file not found"):
        check_dataset(clean.images_dir, tmp_path / "none.json")
    with pytest.raises(DatasetError, match="images folder not found"):
        check_dataset(tmp_path / "no_images", clean.annotations_file)


def test_a_box_crossing_the_border_by_less_than_a_pixel_is_accepted(tmp_path):
    from deformable_detr.data.check import check_split
    from deformable_detr.data.split import DatasetSplit

    Image.new("RGB", (128, 96)).save(tmp_path / "a.jpg")

    def report(bbox):
        coco = {
            "images": [{"id": 1, "file_name": "a.jpg", "width": 128, "height": 96}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "thing"}],
        }
        return check_split(DatasetSplit("train", "coco", tmp_path, coco, tmp_path / "a.json")).counts()

    assert report([108, 5, 20.4, 10]) == {}  # 0.4 px past the right border: rounding, clipped when loading
    assert report([-0.9, 0, 10, 10]) == {}
    assert report([108, 5, 21.5, 10]) == {"out_of_bounds_box": 1}  # 1.5 px: a real problem
