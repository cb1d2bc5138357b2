"""The trivial mean-box baseline, against boxes averaged by hand."""

import pytest

from deformable_detr.evaluation.baseline import mean_box_detections


def test_mean_box_by_hand():
    train = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "annotations": [
            {"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10]},  # cxcywh (0.05, 0.05, 0.1, 0.1)
            {"image_id": 1, "category_id": 2, "bbox": [20, 20, 30, 30]},  # cxcywh (0.35, 0.35, 0.3, 0.3)
            {"image_id": 1, "category_id": 5, "bbox": [50, 0, 50, 100]},
        ],
        "categories": [{"id": 2}, {"id": 5}],
    }
    detections = mean_box_detections(train, [{"id": 7, "width": 200, "height": 100}])
    assert [d["category_id"] for d in detections] == [2, 5]
    # Category 2: mean cxcywh (0.2, 0.2, 0.2, 0.2) on a 200 x 100 image -> [20, 10, 40, 20]; 2 of 3 boxes.
    assert detections[0]["image_id"] == 7
    assert detections[0]["bbox"] == pytest.approx([20, 10, 40, 20])
    assert detections[0]["score"] == pytest.approx(2 / 3)
    assert detections[1]["bbox"] == pytest.approx([100, 0, 100, 100])
