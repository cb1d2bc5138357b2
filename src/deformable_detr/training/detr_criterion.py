"""DETR's set-prediction loss: Hungarian matching with a softmax class cost, then cross-entropy + L1 + GIoU.

Differs from Deformable DETR's `SetCriterion` only in the classifier: a softmax over K classes and
"no object" (the last logit), whose cross-entropy weighs the no-object class by `eos_coef` (0.1 in
DETR) and is a weighted mean over all queries (not divided by the number of boxes). Matching costs
class 1 / L1 5 / GIoU 2 and loss weights CE 1 / L1 5 / GIoU 2 are DETR's (`detr_loss_config`);
the box losses and the auxiliary-layer losses are the shared ones.

Logged, not trained: `class_error`, DETR's own (100 - top-1 accuracy of the matched queries over all K + 1 logits,
so a matched query whose no-object logit wins counts as wrong), and `class_error_objects`, the same over the K
object logits only, which is what Deformable DETR's `class_error` measures (its sigmoid classifier has no
no-object logit). While DETR has not learnt which queries hold objects, the first reads 100 even when the second
shows the classes are right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .criterion import LossConfig, SetCriterion, matched_query_index
from .matcher import HungarianMatcher

EOS_COEF = 0.1  # DETR's relative weight of the no-object class


def detr_loss_config() -> LossConfig:
    """DETR's matcher costs and loss weights: class 1, L1 5, GIoU 2 for both (focal fields unused)."""
    return LossConfig(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0, loss_ce=1.0, loss_bbox=5.0, loss_giou=2.0)


class SoftmaxHungarianMatcher(HungarianMatcher):
    """`HungarianMatcher` whose class cost is DETR's: minus the softmax probability of the target class."""

    def class_cost(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, K + 1) raw logits, (T,) labels in [0, K) -> (N, T) cost -p(label)."""
        return -logits.softmax(-1)[:, labels]


class DetrCriterion(SetCriterion):
    """DETR's loss (see the module docstring).

    Args:
        num_classes: K object classes; the logits have K + 1 entries, the last = no object.
        matcher: a `SoftmaxHungarianMatcher`.
        weight_dict: weight per base loss name (`loss_ce`, `loss_bbox`, `loss_giou`), also for the `_i` copies.
        eos_coef: cross-entropy weight of the no-object class (0.1 in DETR).
    """

    def __init__(
        self, num_classes: int, matcher: HungarianMatcher, weight_dict: dict[str, float], eos_coef: float = EOS_COEF
    ):
        super().__init__(num_classes, matcher, weight_dict)
        class_weight = torch.ones(num_classes + 1)
        class_weight[-1] = eos_coef
        self.register_buffer("class_weight", class_weight)  # (K + 1,)

    @classmethod
    def from_config(cls, num_classes: int, config: LossConfig) -> DetrCriterion:
        matcher = SoftmaxHungarianMatcher(config.cost_class, config.cost_bbox, config.cost_giou)
        weights = {"loss_ce": config.loss_ce, "loss_bbox": config.loss_bbox, "loss_giou": config.loss_giou}
        return cls(num_classes, matcher, weights)

    def _labels_loss(self, outputs, targets, indices, num_boxes):
        logits = outputs["pred_logits"].float()  # (B, Q, K + 1)
        if logits.shape[-1] != self.num_classes + 1:
            raise ValueError(
                f"DetrCriterion: pred_logits has {logits.shape[-1]} classes, expected num_classes + 1 = "
                f"{self.num_classes + 1} (K classes and no-object)"
            )
        batch_idx, query_idx = matched_query_index(indices)
        matched_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])  # (N,)
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )  # (B, Q)
        target_classes[batch_idx, query_idx] = matched_labels
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, weight=self.class_weight.to(logits.device))
        if len(matched_labels):
            matched_logits = logits[batch_idx, query_idx]  # (N, K + 1)
            class_error = 100.0 - 100.0 * (matched_logits.argmax(-1) == matched_labels).float().mean()
            correct_object = matched_logits[:, :-1].argmax(-1) == matched_labels
            class_error_objects = 100.0 - 100.0 * correct_object.float().mean()
        else:
            class_error = class_error_objects = logits.new_zeros(())
        return {
            "loss_ce": loss_ce,
            "class_error": class_error.detach(),
            "class_error_objects": class_error_objects.detach(),
        }
