"""Box conversions and pairwise overlap measures.

Formats: `cxcywh` is (centre x, centre y, width, height), usually normalized to [0, 1];
`xyxy` is (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0 for a valid box, in any unit.
"""

import torch


def box_cxcywh_to_xyxy(boxes_cxcywh: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre/size boxes -> (..., 4) corner boxes, same units."""
    cx, cy, w, h = boxes_cxcywh.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """(..., 4) corner boxes -> (..., 4) centre/size boxes, same units."""
    x0, y0, x1, y1 = boxes_xyxy.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def box_area(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """(..., 4) corner boxes -> (...) areas; inverted (degenerate) sides count as 0."""
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]).clamp(min=0) * (boxes_xyxy[..., 3] - boxes_xyxy[..., 1]).clamp(
        min=0
    )


def _intersection_and_union(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor):
    """(N, 4), (M, 4) -> intersection (N, M) and union (N, M) areas."""
    area1 = box_area(boxes1_xyxy)  # (N,)
    area2 = box_area(boxes2_xyxy)  # (M,)
    top_left = torch.max(boxes1_xyxy[:, None, :2], boxes2_xyxy[None, :, :2])  # (N, M, 2)
    bottom_right = torch.min(boxes1_xyxy[:, None, 2:], boxes2_xyxy[None, :, 2:])  # (N, M, 2)
    size = (bottom_right - top_left).clamp(min=0)  # (N, M, 2)
    intersection = size[..., 0] * size[..., 1]  # (N, M)
    union = area1[:, None] + area2[None, :] - intersection  # (N, M)
    return intersection, union


def box_iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of (N, 4) and (M, 4) corner boxes -> (N, M) in [0, 1].

    Two zero-area boxes have union 0; their IoU is defined as 0 (not NaN).
    """
    intersection, union = _intersection_and_union(boxes1_xyxy, boxes2_xyxy)
    return torch.where(union > 0, intersection / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def generalized_box_iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor) -> torch.Tensor:
    """Pairwise generalized IoU (Rezatofighi et al., 2019) of (N, 4) and (M, 4) corner boxes -> (N, M).

    GIoU = IoU - (|hull| - |union|) / |hull|, in [-1, 1]. Degenerate boxes (zero width or height)
    are allowed; where the enclosing hull itself has zero area, GIoU equals IoU.
    """
    intersection, union = _intersection_and_union(boxes1_xyxy, boxes2_xyxy)
    tiny = torch.finfo(union.dtype).tiny
    iou = torch.where(union > 0, intersection / union.clamp(min=tiny), 0.0)  # (N, M)
    hull_top_left = torch.min(boxes1_xyxy[:, None, :2], boxes2_xyxy[None, :, :2])  # (N, M, 2)
    hull_bottom_right = torch.max(boxes1_xyxy[:, None, 2:], boxes2_xyxy[None, :, 2:])  # (N, M, 2)
    hull_size = (hull_bottom_right - hull_top_left).clamp(min=0)  # (N, M, 2)
    hull = hull_size[..., 0] * hull_size[..., 1]  # (N, M)
    return torch.where(hull > 0, iou - (hull - union) / hull.clamp(min=tiny), iou)
