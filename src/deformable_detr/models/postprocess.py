"""Model outputs -> detections in pixels: sigmoid scores, top-k over queries x classes, xyxy boxes."""

from __future__ import annotations

from typing import Any

import torch

from deformable_detr.errors import ModelInputError
from deformable_detr.util.box_ops import box_cxcywh_to_xyxy


@torch.no_grad()
def postprocess(
    out: dict[str, Any], target_sizes: torch.Tensor, score_threshold: float = 0.0, top_k: int = 100
) -> list[dict[str, torch.Tensor]]:
    """The `top_k` highest-scoring (query, class) pairs of each image, as the reference PostProcess.

    A query may appear several times with different classes; there is no NMS.

    Args:
        out: model output with "pred_logits" (B, Lq, K) and "pred_boxes" (B, Lq, 4) (cx, cy, w, h) in [0, 1].
        target_sizes: (B, 2) (height, width) in pixels that the normalized boxes are scaled to.
        score_threshold: keep only detections with score > this (after the top-k).
        top_k: detections per image before thresholding (at most Lq * K).

    Returns:
        per image, {"scores": (N,) float in (0, 1), descending; "labels": (N,) int64 in 0..K-1;
        "boxes": (N, 4) float (x0, y0, x1, y1) in pixels}.
    """
    logits, boxes_cxcywh = out["pred_logits"], out["pred_boxes"]
    check_target_sizes(target_sizes, logits.shape[0])
    num_classes = logits.shape[-1]
    probabilities = logits.float().sigmoid().flatten(1)  # (B, Lq*K)
    scores, indices = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)  # (B, k)
    labels = indices % num_classes
    queries = indices // num_classes
    return detections_in_pixels(scores, labels, boxes_cxcywh, queries, target_sizes, score_threshold)


def check_target_sizes(target_sizes: torch.Tensor, batch: int) -> None:
    """Raise a ModelInputError unless `target_sizes` is (batch, 2)."""
    if target_sizes.shape != (batch, 2):
        raise ModelInputError(
            f"target_sizes has shape {tuple(target_sizes.shape)}, expected ({batch}, 2) (height, width) per image"
        )


def detections_in_pixels(
    scores: torch.Tensor,
    labels: torch.Tensor,
    boxes_cxcywh: torch.Tensor,
    queries: torch.Tensor,
    target_sizes: torch.Tensor,
    score_threshold: float,
) -> list[dict[str, torch.Tensor]]:
    """The selected detections of each image as xyxy pixel boxes, those scoring > `score_threshold`.

    Args:
        scores, labels: (B, k) of the selected detections, best first.
        boxes_cxcywh: (B, Lq, 4) every query's box, (cx, cy, w, h) in [0, 1].
        queries: (B, k) int64, the query of each selected detection.
        target_sizes: (B, 2) (height, width) in pixels.

    Returns:
        per image {"scores": (N,), "labels": (N,), "boxes": (N, 4) (x0, y0, x1, y1) in pixels}.
    """
    boxes_xyxy = box_cxcywh_to_xyxy(torch.gather(boxes_cxcywh.float(), 1, queries[..., None].expand(-1, -1, 4)))
    height, width = target_sizes.float().unbind(1)
    boxes_xyxy = boxes_xyxy * torch.stack((width, height, width, height), 1)[:, None]  # (B, k, 4)
    detections = []
    for image_scores, image_labels, image_boxes in zip(scores, labels, boxes_xyxy):
        keep = image_scores > score_threshold
        detections.append({"scores": image_scores[keep], "labels": image_labels[keep], "boxes": image_boxes[keep]})
    return detections
