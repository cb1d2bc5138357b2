"""postprocess: top-k over queries x classes on a hand-built output."""

import math

import pytest
import torch

from deformable_detr.pipeline.processor import postprocess


def _logit(p):
    return math.log(p / (1 - p))


def _hand_built_output():
    """2 images, 3 queries, 2 classes, scores chosen so the ranking is known."""
    probabilities = torch.tensor(
        [
            [[0.10, 0.90], [0.80, 0.05], [0.30, 0.60]],  # image 0: (q0,c1) .9, (q1,c0) .8, (q2,c1) .6, (q2,c0) .3, ...
            [[0.20, 0.01], [0.02, 0.03], [0.70, 0.40]],  # image 1: (q2,c0) .7, (q2,c1) .4, (q0,c0) .2, ...
        ]
    )
    boxes_cxcywh = torch.tensor(
        [
            [[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.5, 0.5], [0.1, 0.1, 0.2, 0.2]],
            [[0.5, 0.5, 1.0, 1.0], [0.3, 0.3, 0.2, 0.2], [0.9, 0.2, 0.2, 0.4]],
        ]
    )
    logits = probabilities.clone().apply_(_logit)
    return {"pred_logits": logits, "pred_boxes": boxes_cxcywh}


def test_top_k_scores_labels_and_pixel_boxes():
    out = _hand_built_output()
    detections = postprocess(out, torch.tensor([[100, 200], [50, 40]]), top_k=3)  # (h, w) per image
    first, second = detections
    torch.testing.assert_close(first["scores"], torch.tensor([0.9, 0.8, 0.6]))
    assert first["labels"].tolist() == [1, 0, 1]
    # (q0) cx .5 cy .5 w .2 h .4 in a 200 x 100 image -> x 80..120, y 30..70
    torch.testing.assert_close(
        first["boxes"], torch.tensor([[80.0, 30.0, 120.0, 70.0], [0.0, 50.0, 100.0, 100.0], [0.0, 0.0, 40.0, 20.0]])
    )
    torch.testing.assert_close(second["scores"], torch.tensor([0.7, 0.4, 0.2]))
    assert second["labels"].tolist() == [0, 1, 0]
    torch.testing.assert_close(
        second["boxes"], torch.tensor([[32.0, 0.0, 40.0, 20.0], [32.0, 0.0, 40.0, 20.0], [0.0, 0.0, 40.0, 50.0]])
    )


def test_threshold_and_top_k_larger_than_queries_times_classes():
    detections = postprocess(_hand_built_output(), torch.tensor([[10, 10], [10, 10]]), score_threshold=0.5)
    assert [len(d["scores"]) for d in detections] == [3, 1]  # .9 .8 .6 | .7
    everything = postprocess(_hand_built_output(), torch.tensor([[10, 10], [10, 10]]))
    assert [len(d["scores"]) for d in everything] == [6, 6]  # 100 > 3 queries x 2 classes
    assert (everything[0]["scores"][:-1] >= everything[0]["scores"][1:]).all()


def test_target_sizes_must_match_the_batch():
    with pytest.raises(ValueError, match=r"target_sizes has shape \(1, 2\), expected \(2, 2\)"):
        postprocess(_hand_built_output(), torch.tensor([[10, 10]]))


def test_a_score_equal_to_the_threshold_is_kept():
    """The one comparison is `score >= threshold`: sigmoid(0) is exactly 0.5 in float32."""
    out = {"pred_logits": torch.tensor([[[0.0], [-1.0]]]), "pred_boxes": torch.full((1, 2, 4), 0.5)}
    (found,) = postprocess(out, torch.tensor([[10, 10]]), score_threshold=0.5)
    assert found["scores"].tolist() == [0.5] and found["queries"].tolist() == [0]


def test_resized_size_is_detrs_rule_by_hand():
    from deformable_detr.pipeline.processor import resized_size

    assert resized_size(480, 640, 800, 1333) == (800, 1066)  # 640 * 800 / 480 = 1066.67, truncated
    assert resized_size(640, 480, 800, 1333) == (1066, 800)
    assert resized_size(100, 1000, 800, 1333) == (133, 1330)  # cap binds: short = round(1333 * 100 / 1000)
    assert resized_size(100, 1000, 800, None) == (800, 8000)  # no cap (training's pre-crop resize)


def test_boxes_xyxy_to_xywh_by_hand():
    from deformable_detr.pipeline.detections import boxes_xyxy_to_xywh

    boxes = torch.tensor([[10.0, 20.0, 40.0, 60.0], [0.0, 0.0, 0.5, 2.0]])
    assert boxes_xyxy_to_xywh(boxes).tolist() == [[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 0.5, 2.0]]
