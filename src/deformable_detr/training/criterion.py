"""Set-prediction loss of Deformable DETR: Hungarian matching, then focal + L1 + GIoU per matched pair.

Losses are computed on the final decoder output, on every auxiliary (intermediate) decoder output
(`aux_outputs`, keys suffixed `_0`, `_1`, ...) and, for two-stage models, on the encoder proposals
(`enc_outputs`, suffix `_enc`, class-agnostic: every target is labelled 0). All terms are divided
by the number of target boxes in the global batch (summed over processes, at least 1).
Training add-ons: hybrid matching (`one2many_outputs`, suffix `_o2m`, targets repeated k times, divided
by k x boxes) and denoising (`dn_outputs`, suffix `_dn`, known targets, divided by groups x boxes).
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
from ..util.config_fields import check_fields
from .denoising import DenoisingQueries, make_denoising_queries
from .matcher import HungarianMatcher


@dataclass(frozen=True)
class LossConfig:
    """Matcher costs and loss weights (paper values: focal 2, L1 5, GIoU 2; focal α 0.25, γ 2).

    Denoising (models with `ModelConfig.denoising`; DINO's values): about `dn_number` queries per image,
    corner jitter `dn_box_noise` half-sizes, labels flipped with probability `dn_label_noise` / 2.
    Hybrid matching (models with `num_queries_one2many`): targets repeated `hybrid_k` times (H-DETR: 6),
    its loss terms weighted `hybrid_weight` times the main ones.
    """

    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    loss_ce: float = 2.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    aux_loss: bool = True
    dn_number: int = 100
    dn_box_noise: float = 1.0
    dn_label_noise: float = 0.5
    hybrid_k: int = 6
    hybrid_weight: float = 1.0

    def __post_init__(self):
        check_fields(self)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"LossConfig.{field.name} = {value} must be >= 0")
        if self.dn_label_noise > 1:
            raise ConfigError(f"LossConfig.dn_label_noise = {self.dn_label_noise} must be in [0, 1]")
        if self.dn_number < 2 or self.hybrid_k < 1:
            raise ConfigError(
                f"LossConfig.dn_number = {self.dn_number} must be >= 2 and hybrid_k = {self.hybrid_k} >= 1"
            )


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
        hybrid_k, hybrid_weight: one-to-many targets per box and the weight of their terms (see `LossConfig`).
        denoising: noise settings of the denoising queries (`make_denoising_queries`'s number, box_noise,
            label_noise); None = the model takes none and `denoising_queries` returns None.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        hybrid_k: int = 6,
        hybrid_weight: float = 1.0,
        denoising: dict | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.hybrid_k, self.hybrid_weight = hybrid_k, hybrid_weight
        self.denoising = None if denoising is None else dict(denoising)

    @classmethod
    def from_config(cls, num_classes: int, config: LossConfig, denoising: bool = True) -> SetCriterion:
        """The criterion of `config`; `denoising`: whether it makes denoising queries (the model has `denoising`)."""
        matcher = HungarianMatcher(
            config.cost_class, config.cost_bbox, config.cost_giou, config.focal_alpha, config.focal_gamma
        )
        weights = {"loss_ce": config.loss_ce, "loss_bbox": config.loss_bbox, "loss_giou": config.loss_giou}
        noise = {"number": config.dn_number, "box_noise": config.dn_box_noise, "label_noise": config.dn_label_noise}
        return cls(
            num_classes,
            matcher,
            weights,
            config.focal_alpha,
            config.focal_gamma,
            config.hybrid_k,
            config.hybrid_weight,
            noise if denoising else None,
        )

    def denoising_queries(self, targets: list[dict]) -> DenoisingQueries | None:
        """Contrastive denoising queries for `targets` with this criterion's noise settings (see denoising.py);
        None for a criterion built without denoising (or targets without boxes)."""
        if self.denoising is None:
            return None
        return make_denoising_queries(targets, self.num_classes, **self.denoising)

    def weight_of(self, name: str) -> float:
        """Weight of a loss key such as `loss_giou_3`, `loss_ce_enc`, `loss_bbox_dn_0`; 0 for logged-only keys.

        One-to-many terms (`..._o2m...`) weigh `hybrid_weight` times their base weight.
        """
        for base, weight in self.weight_dict.items():
            if name == base or name.startswith(base + "_"):
                return weight * self.hybrid_weight if "_o2m" in name else weight
        return 0.0

    def _labels_loss(self, outputs, targets, indices, num_boxes):
        logits = outputs["pred_logits"]  # (B, Q, K')
        batch_idx, query_idx = matched_query_index(indices)
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
        batch_idx, query_idx = matched_query_index(indices)
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
        losses = {
            **self._labels_loss(outputs, targets, indices, num_boxes),
            **self._boxes_loss(outputs, targets, indices, num_boxes),
        }
        if suffix:
            losses = {f"{k}{suffix}": v for k, v in losses.items() if not k.startswith("class_error")}
        return losses

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """All loss terms (unweighted) plus `class_error` (percent, logged only).

        Args:
            outputs: model output dict (`pred_logits` (B, Q, K), `pred_boxes` (B, Q, 4), optional
                `aux_outputs` list and `enc_outputs` dict of the same two keys).
            targets: B dicts with `labels` (T_b,) int64 and `boxes` (T_b, 4) cxcywh normalized.

        Returns:
            dict of scalar tensors: loss_ce, loss_bbox, loss_giou, class_error (`DetrCriterion` adds
            class_error_objects), and loss_*_{i}
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
        if "one2many_outputs" in outputs:  # hybrid matching: the ground truth k times, matched one-to-many
            k = self.hybrid_k
            repeated = [{**t, "labels": t["labels"].repeat(k), "boxes": t["boxes"].repeat(k, 1)} for t in targets]
            one2many = outputs["one2many_outputs"]
            losses.update(self._losses_for(one2many, repeated, num_boxes * k, "_o2m"))
            for i, aux in enumerate(one2many.get("aux_outputs", [])):
                losses.update(self._losses_for(aux, repeated, num_boxes * k, f"_o2m_{i}"))
        if "dn_outputs" in outputs:
            dn = outputs["dn_outputs"]
            queries = dn["queries"]
            losses.update(self._denoising_losses(dn, queries, targets, num_boxes * queries.num_groups, "_dn"))
            for i, aux in enumerate(dn.get("aux_outputs", [])):
                losses.update(self._denoising_losses(aux, queries, targets, num_boxes * queries.num_groups, f"_dn_{i}"))
        return losses

    def _denoising_losses(self, outputs, queries: DenoisingQueries, targets, normaliser: float, suffix: str):
        """Focal loss of every real denoising query (positives: their box's label, negatives: no object),
        L1 and GIoU of the positives against their boxes; no matching. Divided by boxes x groups."""
        logits = outputs["pred_logits"]  # (B, Ld, K)
        real = queries.labels < self.num_classes  # (B, Ld): not a padding slot
        positive = queries.target_index >= 0  # (B, Ld)
        batch_idx, query_idx = positive.nonzero(as_tuple=True)  # (N,), (N,) in row-major order
        box_idx = [queries.target_index[b][positive[b]] for b in range(len(targets))]  # per image, (N_b,)
        labels = torch.cat([t["labels"][i] for t, i in zip(targets, box_idx)])  # (N,)
        target_boxes = torch.cat([t["boxes"][i] for t, i in zip(targets, box_idx)])  # (N, 4)
        onehot = torch.zeros_like(logits, dtype=torch.float32)  # (B, Ld, K)
        onehot[batch_idx, query_idx, labels] = 1.0
        real_logits, real_onehot = logits[real].float()[None], onehot[real][None]  # (1, N_real, K)
        loss_ce = sigmoid_focal_loss(real_logits, real_onehot, normaliser, self.focal_alpha, self.focal_gamma)
        loss_ce = loss_ce * real_logits.shape[1]
        src_boxes = outputs["pred_boxes"][batch_idx, query_idx].float()  # (N, 4)
        loss_bbox = F.l1_loss(src_boxes, target_boxes.float(), reduction="none").sum() / normaliser
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(target_boxes.float())))
        loss_giou = (1 - giou).sum() / normaliser
        return {f"loss_ce{suffix}": loss_ce, f"loss_bbox{suffix}": loss_bbox, f"loss_giou{suffix}": loss_giou}

    def weighted_sum(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar total: sum of each term times its weight (logged-only keys weigh 0)."""
        return sum(value * self.weight_of(name) for name, value in losses.items() if self.weight_of(name) > 0)


def matched_query_index(indices):
    """Flatten per-image matches -> (batch_idx (N,), query_idx (N,))."""
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    query_idx = torch.cat([src for src, _ in indices])
    return batch_idx, query_idx
