"""COCO evaluation against cases whose AP is known by hand (101-point interpolation)."""

import json

import pytest

from deformable_detr.evaluation.coco_eval import METRIC_NAMES, evaluate_detections, format_metrics_table


def _ground_truth(boxes_per_image):
    """One category; image i+1 holds the [x, y, w, h] boxes boxes_per_image[i]."""
    images, annotations = [], []
    for index, boxes in enumerate(boxes_per_image):
        images.append({"id": index + 1, "file_name": f"{index}.jpg", "width": 200, "height": 200})
        for box in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}


def _detection(image_id, box, score, category_id=1):
    return {"image_id": image_id, "category_id": category_id, "bbox": box, "score": score}


MEDIUM_BOX = [50, 50, 60, 60]  # area 3600: COCO "medium"


def test_ground_truth_as_detections_gives_ap_one():
    gt = _ground_truth([[[10, 10, 20, 20], [100, 100, 50, 40]], [[5, 5, 150, 120]], [MEDIUM_BOX]])
    detections = [_detection(a["image_id"], a["bbox"], 1.0) for a in gt["annotations"]]
    metrics = evaluate_detections(gt, detections)
    assert set(metrics) == set(METRIC_NAMES)
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        assert metrics[name] == pytest.approx(1.0), name


def test_known_ap_with_a_missed_box_and_a_false_positive():
    # 3 images, one medium box each. Ranked detections: TP (0.9), FP far away (0.8), TP (0.7); image 3 missed.
    # Recall/precision after each: (1/3, 1), (1/3, 1/2), (2/3, 2/3); interpolated precision is 1 for
    # recall thresholds 0.00..0.33 (34 of 101), 2/3 for 0.34..0.66 (33), 0 above: AP = (34 + 33 * 2/3) / 101.
    # The boxes are exact, so every IoU threshold agrees and AP = AP50 = AP75.
    gt = _ground_truth([[MEDIUM_BOX]] * 3)
    detections = [_detection(1, MEDIUM_BOX, 0.9), _detection(2, [0, 0, 20, 20], 0.8), _detection(3, MEDIUM_BOX, 0.7)]
    metrics = evaluate_detections(gt, detections)
    expected = (34 + 33 * 2 / 3) / 101
    assert metrics["AP"] == pytest.approx(expected)
    assert metrics["AP50"] == pytest.approx(expected)
    assert metrics["AP75"] == pytest.approx(expected)
    assert metrics["AR100"] == pytest.approx(2 / 3)
    # In the medium bucket the small unmatched false positive is ignored: precision 1 up to recall 2/3.
    assert metrics["APm"] == pytest.approx(67 / 101)
    assert metrics["APs"] == -1.0 and metrics["APl"] == -1.0  # no ground truth there: undefined


def test_known_ap_at_iou_0_62():
    # One box [0, 0, 100, 100]; detection [0, 0, 100, 62] has IoU 0.62: a hit at IoU thresholds 0.50,
    # 0.55, 0.60 (3 of the 10) and a miss above, so AP = 3/10, AP50 = 1, AP75 = 0.
    gt = _ground_truth([[[0, 0, 100, 100]]])
    metrics = evaluate_detections(gt, [_detection(1, [0, 0, 100, 62], 0.5)])
    assert metrics["AP"] == pytest.approx(0.3)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(0.0)


def test_given_area_and_iscrowd_are_kept_not_recomputed_from_the_box():
    # Image 200 x 200, one category. GT A: box 40 x 40 (box area 1600, COCO "medium") whose given `area` is
    # 900 (a segmentation area, "small": < 32^2); GT B: a crowd region [100, 100, 80, 80] (iscrowd 1).
    # Detections: A exactly (0.9); a 30 x 30 box inside B (0.8), which overlaps B by 900 / 900 of its own area.
    # pycocotools measures a detection against a crowd region by intersection / detection area (1.0 here), so
    # it matches B and is ignored, not counted false. With the given fields kept:
    #   AP = AP50 = AR100 = 1 (A found, nothing false); APs = 1 (A is small by its area);
    #   APm = APl = -1 (no non-crowd ground truth there; a crowd region never counts).
    # Were `area` recomputed as w * h, A would be medium (APs -1, APm 1); were `iscrowd` reset to 0, B would be
    # a missed box and the second detection a false positive (IoU 900 / 6400): AP = 51 / 101 (precision 1 up
    # to recall 0.5, nothing above).
    gt = {
        "images": [{"id": 1, "file_name": "0.jpg", "width": 200, "height": 200}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 900.0, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 100, 80, 80], "area": 6400.0, "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    detections = [_detection(1, [10, 10, 40, 40], 0.9), _detection(1, [110, 110, 30, 30], 0.8)]
    metrics = evaluate_detections(gt, detections)
    for name in ("AP", "AP50", "AP75", "APs", "AR100", "ARs"):
        assert metrics[name] == pytest.approx(1.0), name
    for name in ("APm", "APl", "ARm", "ARl"):
        assert metrics[name] == -1.0, name


def test_empty_detections_give_zero_without_crash(capsys):
    metrics = evaluate_detections(_ground_truth([[MEDIUM_BOX], []]), [])
    assert metrics["AP"] == 0.0 and metrics["AP50"] == 0.0 and metrics["AR100"] == 0.0
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced


def test_paths_are_accepted_and_input_is_not_mutated(tmp_path):
    gt = _ground_truth([[MEDIUM_BOX]])
    detections = [_detection(1, MEDIUM_BOX, 0.5)]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(detections))
    metrics = evaluate_detections(str(tmp_path / "gt.json"), tmp_path / "dets.json")
    assert metrics["AP"] == pytest.approx(1.0)
    assert detections == [_detection(1, MEDIUM_BOX, 0.5)]


def test_verbose_prints_pycocotools_summary(capsys):
    evaluate_detections(_ground_truth([[MEDIUM_BOX]]), [_detection(1, MEDIUM_BOX, 0.5)], verbose=True)
    assert "Average Precision" in capsys.readouterr().out


@pytest.mark.parametrize(
    "bad, match",
    [
        (_detection(9, MEDIUM_BOX, 0.5), r"detections\[1\]: image_id 9"),
        (_detection(1, MEDIUM_BOX, 0.5, category_id=7), r"detections\[1\]: category_id 7"),
        (_detection(1, [1, 2, 3], 0.5), r"detections\[1\]: bbox \[1, 2, 3\]"),
        (_detection(1, [1, 2, -3, 4], 0.5), r"detections\[1\]: bbox .* w, h >= 0"),
        (_detection(1, MEDIUM_BOX, float("nan")), r"detections\[1\]: score nan"),
        ({"image_id": 1, "bbox": MEDIUM_BOX, "score": 0.5}, r"detections\[1\]: missing 'category_id'"),
    ],
)
def test_bad_detections_raise_one_line_naming_index_and_field(bad, match):
    with pytest.raises(ValueError, match=match) as error:
        evaluate_detections(_ground_truth([[MEDIUM_BOX]]), [_detection(1, MEDIUM_BOX, 0.5), bad])
    assert "\n" not in str(error.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        evaluate_detections(tmp_path / "nope.json", [])
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        evaluate_detections(tmp_path / "broken.json", [])


def test_format_metrics_table_shows_percent_and_na():
    table = format_metrics_table({"AP": 0.5545, "APs": -1.0})
    assert "AP" in table and "55.5" in table
    assert "n/a" in table.splitlines()[-1]


def _predicted_item(box_xywh, score, category_id=1):
    """One detection of a `predict` output file (`Detections.to_dict()`'s form: xyxy, label = category id)."""
    x, y, w, h = box_xywh
    return {"box_xyxy": [x, y, x + w, y + h], "label": category_id, "name": "thing", "score": score}


def test_predict_output_file_is_matched_to_the_ground_truth_by_file_name(tmp_path):
    # `deformable-detr predict` numbers images in input order and records their paths: ids 0, 1 here are the
    # ground truth's images 2 and 1 (file names 1.jpg and 0.jpg), so one right match and one swapped match
    gt = _ground_truth([[[10, 10, 20, 20]], [MEDIUM_BOX]])
    gt["images"][1]["file_name"] = "sub/1.jpg"
    predicted = {
        "categories": gt["categories"],
        "images": [
            {
                "id": 0,
                "file_name": str(tmp_path / "images" / "sub" / "1.jpg"),
                "detections": [_predicted_item(MEDIUM_BOX, 0.9)],
            },
            {
                "id": 1,
                "file_name": str(tmp_path / "images" / "0.jpg"),
                "detections": [_predicted_item([10, 10, 20, 20], 0.8)],
            },
        ],
    }
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(predicted))
    assert evaluate_detections(gt, path)["AP"] == pytest.approx(1.0)
    # the same boxes with the images swapped find nothing
    predicted["images"][0]["file_name"], predicted["images"][1]["file_name"] = "0.jpg", "sub/1.jpg"
    assert evaluate_detections(gt, predicted)["AP"] == pytest.approx(0.0)
    predicted["images"][0]["file_name"] = "elsewhere/2.jpg"
    with pytest.raises(ValueError, match=r"'elsewhere/2.jpg' is not in the ground truth"):
        evaluate_detections(gt, predicted)


def test_predict_output_of_another_image_with_the_same_name_is_refused():
    gt = _ground_truth([[[10, 10, 20, 20]], [MEDIUM_BOX]])
    gt["images"][0].update(width=128, height=96)
    predicted = {
        "images": [
            {
                "id": 1,
                "file_name": "train/images/" + gt["images"][0]["file_name"],
                "width": 109,
                "height": 128,
                "detections": [_predicted_item([10, 10, 20, 20], 0.9)],
            }
        ],
    }
    with pytest.raises(ValueError, match=r"is 109x128 px but the ground truth's .* is 128x96: a different image"):
        evaluate_detections(gt, predicted)
    predicted["images"][0].update(width=128, height=96)
    assert evaluate_detections(gt, predicted)["AP"] >= 0
