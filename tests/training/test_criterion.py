"""SetCriterion: focal loss vs a direct formula, L1/GIoU vs hand-computed values, aux/enc terms, empty targets."""

import math

import pytest
import torch

from deformable_detr.training.criterion import LossConfig, SetCriterion, sigmoid_focal_loss
from deformable_detr.training.matcher import HungarianMatcher


def test_sigmoid_focal_loss_matches_direct_formula():
    logits = torch.tensor([[[2.0, -1.0], [0.5, 0.0]]], dtype=torch.float64)  # (1, 2, 2)
    targets = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    total = 0.0
    for q in range(2):
        for k in range(2):
            p = 1 / (1 + math.exp(-float(logits[0, q, k])))
            if targets[0, q, k] == 1:
                total += -0.25 * (1 - p) ** 2 * math.log(p)
            else:
                total += -0.75 * p**2 * math.log(1 - p)
    num_boxes = 1.0
    # official: mean over queries, sum, / num_boxes; times Q in the criterion = plain sum / num_boxes
    got = sigmoid_focal_loss(logits, targets, num_boxes) * logits.shape[1]
    assert float(got) == pytest.approx(total / num_boxes, rel=1e-12)


class _Identity(HungarianMatcher):
    """Matches query i to target i (to test the losses independently of matching)."""

    def forward(self, outputs, targets):
        return [(torch.arange(len(t["boxes"])), torch.arange(len(t["boxes"]))) for t in targets]


def test_box_losses_hand_computed():
    criterion = SetCriterion(2, _Identity(), {"loss_ce": 2, "loss_bbox": 5, "loss_giou": 2})
    pred = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]]])
    target = torch.tensor([[0.5, 0.5, 0.2, 0.4]])  # same centre, twice as tall
    outputs = {"pred_logits": torch.zeros(1, 2, 2), "pred_boxes": pred}
    losses = criterion(outputs, [{"labels": torch.tensor([1]), "boxes": target}])
    # L1 = |0.2 - 0.4| = 0.2; IoU = 0.04/0.08 = 0.5, hull == union -> GIoU 0.5, loss 0.5
    assert float(losses["loss_bbox"]) == pytest.approx(0.2, abs=1e-6)
    assert float(losses["loss_giou"]) == pytest.approx(0.5, abs=1e-6)
    # logits all 0 -> argmax 0 != label 1 -> 100 % class error
    assert float(losses["class_error"]) == pytest.approx(100.0)
    # focal: 4 entries, p = 0.5; one positive
    positive = -0.25 * 0.25 * math.log(0.5)
    negative = -0.75 * 0.25 * math.log(0.5)
    assert float(losses["loss_ce"]) == pytest.approx(positive + 3 * negative, rel=1e-5)
    total = criterion.weighted_sum(losses)
    assert float(total) == pytest.approx(2 * (positive + 3 * negative) + 5 * 0.2 + 2 * 0.5, rel=1e-5)


def test_aux_and_encoder_terms_and_empty_targets():
    criterion = SetCriterion.from_config(3, LossConfig())
    head = lambda: {"pred_logits": torch.randn(2, 5, 3, requires_grad=True), "pred_boxes": torch.rand(2, 5, 4).clamp(0.1, 0.9)}
    outputs = {**head(), "aux_outputs": [head(), head()], "enc_outputs": head()}
    targets = [
        {"labels": torch.tensor([2, 1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.2]])},
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
    ]
    losses = criterion(outputs, targets)
    for suffix in ("", "_0", "_1", "_enc"):
        for name in ("loss_ce", "loss_bbox", "loss_giou"):
            assert torch.isfinite(losses[name + suffix])
    total = criterion.weighted_sum(losses)
    total.backward()
    assert outputs["enc_outputs"]["pred_logits"].grad is not None


def test_no_targets_at_all_gives_finite_loss():
    criterion = SetCriterion.from_config(3, LossConfig())
    outputs = {"pred_logits": torch.randn(1, 4, 3), "pred_boxes": torch.rand(1, 4, 4)}
    losses = criterion(outputs, [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}])
    assert float(losses["loss_bbox"]) == 0.0 and float(losses["loss_giou"]) == 0.0
    assert float(losses["loss_ce"]) > 0
