"""Hungarian matching of predictions to targets (DETR, with Deformable DETR's focal class cost)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from deformable_detr.errors import ConfigError

from ..util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou


def focal_class_cost(prob: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Focal-loss classification cost of every prediction for every target label.

    Args:
        prob: (N, K) sigmoid probabilities.
        labels: (T,) int64 target labels in [0, K).

    Returns:
        (N, T): positive focal term minus negative focal term at each target's class (official formula).
    """
    neg_cost = (1 - alpha) * (prob**gamma) * (-(1 - prob + 1e-8).log())  # (N, K)
    pos_cost = alpha * ((1 - prob) ** gamma) * (-(prob + 1e-8).log())  # (N, K)
    return pos_cost[:, labels] - neg_cost[:, labels]  # (N, T)


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising cost_class*focal + cost_bbox*L1 + cost_giou*(-GIoU).

    Args:
        cost_class, cost_bbox, cost_giou: weights of the three costs (paper: 2, 5, 2).
        focal_alpha, focal_gamma: focal cost parameters (0.25, 2).
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ConfigError(
                "HungarianMatcher: all costs are 0; set at least one of cost_class, cost_bbox, cost_giou > 0"
            )
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    def class_cost(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, K) raw logits, (T,) labels -> (N, T) classification cost: the focal cost of the sigmoid scores."""
        return focal_class_cost(logits.sigmoid(), labels, self.focal_alpha, self.focal_gamma)

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match each image's queries to its targets.

        Args:
            outputs: `pred_logits` (B, Q, K) raw logits, `pred_boxes` (B, Q, 4) cxcywh normalized.
            targets: B dicts with `labels` (T_b,) int64 and `boxes` (T_b, 4) cxcywh normalized.

        Returns:
            B pairs (query_indices, target_indices), each (min(Q, T_b),) int64 on the CPU; query i of
            the pair is matched to target j. Images without targets give two empty tensors.

        Raises:
            ValueError: naming the batch index when a cost is NaN or infinite (e.g. NaN predictions).
        """
        batch_size, num_queries = outputs["pred_logits"].shape[:2]
        boxes_cxcywh = outputs["pred_boxes"].flatten(0, 1).float()  # (B*Q, 4)
        target_labels = torch.cat([t["labels"] for t in targets])  # (sum T,)
        target_boxes = torch.cat([t["boxes"] for t in targets]).float()  # (sum T, 4)
        sizes = [len(t["boxes"]) for t in targets]
        empty = torch.empty(0, dtype=torch.int64)
        if target_labels.numel() == 0:
            return [(empty, empty) for _ in targets]

        cost_class = self.class_cost(outputs["pred_logits"].flatten(0, 1).float(), target_labels)  # (B*Q, sum T)
        cost_bbox = torch.cdist(boxes_cxcywh, target_boxes, p=1)  # (B*Q, sum T)
        cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(boxes_cxcywh), box_cxcywh_to_xyxy(target_boxes))
        cost = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        cost = cost.view(batch_size, num_queries, -1).cpu()  # (B, Q, sum T)

        indices = []
        for b, cost_b in enumerate(cost.split(sizes, dim=-1)):
            cost_b = cost_b[b]  # (Q, T_b): image b's queries against image b's targets
            if cost_b.shape[1] == 0:
                indices.append((empty, empty))
                continue
            if not bool(torch.isfinite(cost_b).all()):
                raise ConfigError(
                    f"HungarianMatcher: non-finite matching cost in batch index {b} "
                    f"(NaN/inf in pred_logits or pred_boxes, or a degenerate target box); check the model outputs and targets"
                )
            query_idx, target_idx = linear_sum_assignment(cost_b.numpy())
            indices.append(
                (torch.as_tensor(query_idx, dtype=torch.int64), torch.as_tensor(target_idx, dtype=torch.int64))
            )
        return indices
