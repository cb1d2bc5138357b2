"""Box ops against hand-computed values (the oracle is arithmetic done by hand in the comments)."""

import torch

from deformable_detr.util.box_ops import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
)


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_cxcywh_to_xyxy_by_hand():
    # centre (0.5, 0.5), size 0.2 x 0.4 -> corners (0.4, 0.3) and (0.6, 0.7)
    torch.testing.assert_close(box_cxcywh_to_xyxy(t([0.5, 0.5, 0.2, 0.4])), t([0.4, 0.3, 0.6, 0.7]))


def test_xyxy_to_cxcywh_by_hand_and_round_trip_over_batch_dims():
    torch.testing.assert_close(box_xyxy_to_cxcywh(t([10, 20, 30, 60])), t([20, 40, 20, 40]))
    boxes = torch.rand(2, 3, 4, dtype=torch.float64)  # (..., 4) batch dims are kept
    torch.testing.assert_close(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(boxes)), boxes)


def test_box_area_including_degenerate_boxes():
    boxes = t([[0, 0, 2, 3], [1, 1, 1, 5], [2, 2, 1, 1], [0, 0, 0, 0]])  # normal, zero width, inverted, point
    torch.testing.assert_close(box_area(boxes), t([6, 0, 0, 0]))


def test_box_iou_by_hand():
    a = t([[0, 0, 2, 2]])
    b = t([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6], [1, 1, 1, 1]])
    # overlap 1x1 = 1, union 4 + 4 - 1 = 7; identical; disjoint; a point inside a (area 0, union 4)
    torch.testing.assert_close(box_iou(a, b), t([[1 / 7, 1.0, 0.0, 0.0]]))


def test_box_iou_of_two_degenerate_boxes_is_zero_not_nan():
    points = t([[1, 1, 1, 1], [2, 2, 2, 5]])
    iou = box_iou(points, points)
    assert not torch.isnan(iou).any()
    torch.testing.assert_close(iou, torch.zeros(2, 2, dtype=torch.float64))


def test_generalized_box_iou_by_hand():
    a = t([[0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 1, 1]])
    b = t([[1, 1, 3, 3], [2, 0, 3, 1], [99, 99, 100, 100]])
    giou = generalized_box_iou(a, b).diagonal()
    # 1/7 - (hull 9 - union 7) / 9 = -5/63;  0 - (3 - 2) / 3 = -1/3;  0 - (10000 - 2) / 10000
    torch.testing.assert_close(giou, t([-5 / 63, -1 / 3, -9998 / 10000]))


def test_generalized_box_iou_identical_is_one_and_degenerate_hull_gives_iou():
    boxes = t([[0, 0, 4, 2]])
    torch.testing.assert_close(generalized_box_iou(boxes, boxes), t([[1.0]]))
    point = t([[3, 3, 3, 3]])
    torch.testing.assert_close(generalized_box_iou(point, point), t([[0.0]]))  # hull area 0 -> IoU, which is 0


def test_generalized_box_iou_in_range_and_shape():
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(50, 2, 2, generator=generator, dtype=torch.float64) * 10  # (N, 2 points, xy)
    boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=-1)  # (50, 4) xyxy
    giou = generalized_box_iou(boxes[:20], boxes[20:])
    assert giou.shape == (20, 30)
    assert giou.min() >= -1 and giou.max() <= 1
    assert (giou <= box_iou(boxes[:20], boxes[20:]) + 1e-12).all()  # GIoU never exceeds IoU
