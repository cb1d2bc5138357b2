"""Set-prediction loss of Deformable DETR: Hungarian matching, then focal + L1 + GIoU per matched pair.

Losses are computed on the final decoder output, on every auxiliary (intermediate) decoder output
(`aux_outputs`, keys suffixed `_0`, `_1`, ...) and, for two-stage models, on the encoder proposals
(`enc_outputs`, suffix `_enc`, class-agnostic: every target is labelled 0). All terms are divided
by the number of target boxes in the global batch (summed over processes, at least 1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deformable_detr.errors import ConfigError

from ..util import distributed
from ..util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from .matcher import HungarianMatcher


@dataclass(frozen=True)
class LossConfig:
    """Matcher costs and loss weights (paper values: focal 2, L1 5, GIoU 2; focal α 0.25, γ 2)."""

    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    loss_ce: float = 2.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    aux_loss: bool = True

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and value < 0:
                raise ConfigError(f"LossConfig.{field.name} = {value} must be >= 0")


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, num_boxes: float, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) exactly as the official Deformable DETR: mean over queries, sum, / num_boxes.

    Args:
        logits: (B, Q, K) raw logits.
        targets: (B, Q, K) one-hot float targets (all zero for unmatched queries).
        num_boxes: normaliser, the number of target boxes.

    Returns:
        scalar: sum over (B, K) of the per-query mean focal loss, divided by num_boxes. The criterion
        multiplies it by Q, so the result is the focal loss summed over all entries / num_boxes.
    """
    prob = logits.sigmoid()
    ce_loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # (B, Q, K)
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return loss.mean(1).sum() / num_boxes


class SetCriterion(nn.Module):
    """Loss of DETR-style set prediction with a sigmoid (focal) classifier.

    Args:
        num_classes: K, number of object classes (no background class).
        matcher: assigns queries to targets.
        weight_dict: weight per base loss name (`loss_ce`, `loss_bbox`, `loss_giou`); the same
            weight applies to the `_i` and `_enc` copies.
        focal_alpha, focal_gamma: focal loss parameters.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_dict: dict[str, float],
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    @classmethod
    def from_config(cls, num_classes: int, config: LossConfig) -> "SetCriterion":
        matcher = HungarianMatcher(config.cost_class, config.cost_bbox, config.cost_giou, config.focal_alpha, config.focal_gamma)
        weights = {"loss_ce": config.loss_ce, "loss_bbox": config.loss_bbox, "loss_giou": config.loss_giou}
        return cls(num_classes, matcher, weights, config.focal_alpha, config.focal_gamma)

    def weight_of(self, name: str) -> float:
        """Weight of a loss key such as `loss_giou_3` or `loss_ce_enc`; 0 for logged-only keys."""
        for base, weight in self.weight_dict.items():
            if name == base or name.startswith(base + "_"):
                return weight
        return 0.0

    def _labels_loss(self, outputs, targets, indices, num_boxes):
        logits = outputs["pred_logits"]  # (B, Q, K')
        batch_idx, query_idx = _matched_query_index(indices)
        matched_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])  # (N,)
        onehot = torch.zeros_like(logits, dtype=torch.float32)  # (B, Q, K')
        onehot[batch_idx, query_idx, matched_labels] = 1.0
        loss_ce = sigmoid_focal_loss(logits.float(), onehot, num_boxes, self.focal_alpha, self.focal_gamma)
        loss_ce = loss_ce * logits.shape[1]
        if len(matched_labels):
            correct = logits[batch_idx, query_idx].argmax(-1) == matched_labels
            class_error = 100.0 - 100.0 * correct.float().mean()
        else:
            class_error = logits.new_zeros(())
        return {"loss_ce": loss_ce, "class_error": class_error.detach()}

    def _boxes_loss(self, outputs, targets, indices, num_boxes):
        batch_idx, query_idx = _matched_query_index(indices)
        src_boxes = outputs["pred_boxes"][batch_idx, query_idx].float()  # (N, 4) cxcywh
        target_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).float()  # (N, 4)
        loss_bbox = F.l1_loss(src_boxes, target_boxes, reduction="none").sum() / num_boxes
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(target_boxes)))
        loss_giou = (1 - giou).sum() / num_boxes
        return {"loss_bbox": loss_bbox, "loss_giou": loss_giou}

    def _losses_for(self, outputs, targets, num_boxes, suffix: str) -> dict[str, torch.Tensor]:
        indices = self.matcher(outputs, targets)
        device = outputs["pred_logits"].device
        indices = [(i.to(device), j.to(device)) for i, j in indices]
        losses = {**self._labels_loss(outputs, targets, indices, num_boxes), **self._boxes_loss(outputs, targets, indices, num_boxes)}
        if suffix:
            losses = {f"{k}{suffix}": v for k, v in losses.items() if k != "class_error"}
        return losses

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """All loss terms (unweighted) plus `class_error` (percent, logged only).

        Args:
            outputs: model output dict (`pred_logits` (B, Q, K), `pred_boxes` (B, Q, 4), optional
                `aux_outputs` list and `enc_outputs` dict of the same two keys).
            targets: B dicts with `labels` (T_b,) int64 and `boxes` (T_b, 4) cxcywh normalized.

        Returns:
            dict of scalar tensors: loss_ce, loss_bbox, loss_giou, class_error, and loss_*_{i}
            per aux output, loss_*_enc for encoder proposals. Use `weighted_sum` to combine.
        """
        num_boxes = sum(len(t["labels"]) for t in targets)
        num_boxes = torch.as_tensor([float(num_boxes)], device=outputs["pred_logits"].device)
        num_boxes = (distributed.all_reduce_sum(num_boxes) / distributed.world_size()).clamp(min=1).item()

        losses = self._losses_for(outputs, targets, num_boxes, "")
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update(self._losses_for(aux, targets, num_boxes, f"_{i}"))
        if "enc_outputs" in outputs:
            agnostic = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]
            losses.update(self._losses_for(outputs["enc_outputs"], agnostic, num_boxes, "_enc"))
        return losses

    def weighted_sum(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar total: sum of each term times its weight (logged-only keys weigh 0)."""
        return sum(value * self.weight_of(name) for name, value in losses.items() if self.weight_of(name) > 0)


def _matched_query_index(indices):
    """Flatten per-image matches -> (batch_idx (N,), query_idx (N,))."""
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    query_idx = torch.cat([src for src, _ in indices])
    return batch_idx, query_idx
