"""Contrastive denoising: query count and layout, noise ranges, the attention mask (no leakage), the
known-target loss on a hand-built case, and training with denoising on then off."""

import math

import pytest
import torch

from deformable_detr.models.detector import DeformableDETR
from deformable_detr.models.query_selection import self_attention_mask
from deformable_detr.training.criterion import LossConfig, SetCriterion
from deformable_detr.training.denoising import DenoisingQueries, make_denoising_queries
from deformable_detr.util.box_ops import box_cxcywh_to_xyxy

TARGETS = [
    {"labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.2]])},
    {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
]


@pytest.mark.parametrize("number, groups", [(10, 2), (8, 2), (7, 1), (3, 1), (100, 25)])
def test_query_count_and_layout(number, groups):
    dn = make_denoising_queries(TARGETS, num_classes=3, number=number, box_noise=0.0, label_noise=0.0)
    most = 2
    assert dn.num_groups == groups == max(1, number // (2 * most))
    assert dn.labels.shape == (2, groups * 2 * most) and dn.boxes_cxcywh.shape == (2, groups * 2 * most, 4)
    for g in range(groups):
        start = g * 2 * most
        # image 0: positives 0, 1 then negatives 2, 3; image 1: positive 0, padding 1, negative 2, padding 3
        assert dn.target_index[0, start : start + 4].tolist() == [0, 1, -1, -1]
        assert dn.target_index[1, start : start + 4].tolist() == [0, -1, -1, -1]
        assert dn.labels[0, start : start + 4].tolist() == [1, 2, 1, 2]
        assert dn.labels[1, start : start + 4].tolist() == [0, 3, 0, 3]  # 3 = K marks padding
        torch.testing.assert_close(dn.boxes_cxcywh[0, start : start + 2], TARGETS[0]["boxes"])  # no noise
        torch.testing.assert_close(dn.boxes_cxcywh[1, start + 2], TARGETS[1]["boxes"][0])


def test_no_boxes_no_denoising():
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    assert make_denoising_queries(empty, num_classes=3) is None


def test_attention_mask_blocks_other_groups_and_keeps_matching_queries_blind():
    dn = make_denoising_queries(TARGETS, num_classes=3, number=12)  # 3 groups of 4
    ld = dn.labels.shape[1]
    for i in range(ld):
        for j in range(ld):
            assert bool(dn.attention_mask[i, j]) == (i // 4 != j // 4)
    full = self_attention_mask(num_one2one=5, denoising_mask=dn.attention_mask)
    assert full[ld:, :ld].all()  # matching queries see no denoising query
    assert not full[ld:, ld:].any() and not full[:ld, ld:].any()  # ... each other, and are seen by all


def test_box_noise_ranges_positive_within_one_negative_between_one_and_two_half_sizes():
    torch.manual_seed(0)
    box = torch.tensor([[0.5, 0.5, 0.2, 0.3]])  # far from the borders: no clipping at noise 0.5
    targets = [{"labels": torch.tensor([0]), "boxes": box}]
    dn = make_denoising_queries(targets, num_classes=2, number=2000, box_noise=0.5, label_noise=0.0)
    corners = box_cxcywh_to_xyxy(dn.boxes_cxcywh[0])  # (Ld, 4)
    half = torch.tensor([0.1, 0.15, 0.1, 0.15])
    moved = (corners - box_cxcywh_to_xyxy(box)).abs() / (0.5 * half)  # in units of box_noise * half size
    positive = dn.target_index[0] >= 0
    assert moved[positive].max() <= 1 + 1e-5 and moved[~positive].min() >= 1 - 1e-5
    assert moved[~positive].max() <= 2 + 1e-5
    assert moved[positive].mean() == pytest.approx(0.5, abs=0.05)  # U(0, 1)
    assert moved[~positive].mean() == pytest.approx(1.5, abs=0.05)  # U(1, 2)


def test_label_flipping_rate():
    torch.manual_seed(0)
    targets = [{"labels": torch.zeros(500, dtype=torch.int64), "boxes": torch.full((500, 4), 0.5)}]
    dn = make_denoising_queries(targets, num_classes=5, number=4000, box_noise=0.0, label_noise=0.6)
    flipped = (dn.labels != 0).float().mean()
    assert float(flipped) == pytest.approx(0.6 / 2 * (1 - 1 / 5), abs=0.02)  # p/2 replaced, 1/K by itself


def _focal(logit, positive, alpha=0.25):
    p = 1 / (1 + math.exp(-logit))
    return -alpha * (1 - p) ** 2 * math.log(p) if positive else -(1 - alpha) * p**2 * math.log(1 - p)


def test_known_target_loss_hand_built():
    """One image with 2 boxes, 2 groups: positives predict their box, negatives (and nothing else) no object."""
    targets = [{"labels": torch.tensor([1, 0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.25, 0.25, 0.1, 0.1]])}]
    # slots: g0 [pos0, pos1, neg0, neg1], g1 [pos0, pos1, neg0, neg1]
    queries = DenoisingQueries(
        labels=torch.tensor([[1, 0, 1, 0, 1, 0, 1, 0]]),
        boxes_cxcywh=torch.rand(1, 8, 4),
        attention_mask=torch.zeros(8, 8, dtype=torch.bool),
        target_index=torch.tensor([[0, 1, -1, -1, 0, 1, -1, -1]]),
        num_groups=2,
    )
    logits = torch.tensor(
        [[[0.5, 1.0], [2.0, -1.0], [0.0, 0.3], [-2.0, 1.5], [1.0, 0.0], [0.2, 0.2], [-0.5, -0.5], [3.0, -3.0]]]
    )  # (1, 8, K=2)
    boxes = torch.tensor(
        [
            [
                [0.5, 0.5, 0.2, 0.4],  # pos of box 0: L1 0.2, GIoU 0.5
                [0.3, 0.25, 0.1, 0.1],  # pos of box 1: L1 0.05, GIoU 1/3
                [0.9, 0.9, 0.1, 0.1],
                [0.9, 0.9, 0.1, 0.1],
                [0.5, 0.5, 0.2, 0.2],  # exact
                [0.25, 0.25, 0.1, 0.1],  # exact
                [0.1, 0.1, 0.1, 0.1],
                [0.1, 0.1, 0.1, 0.1],
            ]
        ]
    )
    outputs = {
        "pred_logits": torch.zeros(1, 3, 2),
        "pred_boxes": torch.full((1, 3, 4), 0.5),
        "dn_outputs": {"pred_logits": logits, "pred_boxes": boxes, "aux_outputs": [], "queries": queries},
    }
    criterion = SetCriterion.from_config(2, LossConfig())
    losses = criterion(outputs, targets)
    normaliser = 2 * 2  # boxes x groups
    positive_class = {0: 1, 1: 0, 4: 1, 5: 0}
    focal = sum(_focal(float(logits[0, q, k]), positive_class.get(q) == k) for q in range(8) for k in range(2))
    assert float(losses["loss_ce_dn"]) == pytest.approx(focal / normaliser, rel=1e-5)
    assert float(losses["loss_bbox_dn"]) == pytest.approx((0.2 + 0.05) / normaliser, rel=1e-5)
    assert float(losses["loss_giou_dn"]) == pytest.approx((0.5 + 2 / 3) / normaliser, rel=1e-5)
    assert criterion.weight_of("loss_bbox_dn") == 5.0 and criterion.weight_of("loss_ce_dn_0") == 2.0


@pytest.mark.parametrize("two_stage", [False, True])
def test_denoising_queries_do_not_change_the_matching_outputs(make_tiny_model_config, two_stage):
    """No leakage: in training mode (dropout 0), the matching queries' outputs are those of the same model
    run without denoising queries."""
    torch.manual_seed(0)
    model = DeformableDETR(make_tiny_model_config(num_classes=3, two_stage=two_stage, denoising=True)).train()
    images = torch.randn(2, 3, 64, 80)
    dn = make_denoising_queries(TARGETS, num_classes=3, number=10)
    with torch.no_grad():
        plain = model(images)
        joined = model(images, denoising=dn)
    torch.testing.assert_close(joined["pred_boxes"], plain["pred_boxes"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(joined["pred_logits"], plain["pred_logits"], rtol=1e-5, atol=1e-5)
    assert joined["dn_outputs"]["pred_boxes"].shape == (2, dn.labels.shape[1], 4)
    assert len(joined["dn_outputs"]["aux_outputs"]) == len(plain["aux_outputs"])


def test_denoising_queries_need_a_denoising_model(make_tiny_model_config):
    from deformable_detr.errors import ConfigError

    model = DeformableDETR(make_tiny_model_config(num_classes=3))
    with pytest.raises(ConfigError, match="denoising=True"):
        model(torch.randn(1, 3, 64, 80), denoising=make_denoising_queries(TARGETS, num_classes=3))


def test_train_with_denoising_on_then_off_on_one_image(make_tiny_model_config, one_thread):
    torch.manual_seed(0)
    model = DeformableDETR(make_tiny_model_config(num_classes=3, two_stage=True, denoising=True)).train()
    criterion = SetCriterion.from_config(3, LossConfig(dn_number=8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, targets = torch.randn(1, 3, 64, 80), TARGETS[:1]
    fixed = make_denoising_queries(targets, 3, number=8, generator=torch.Generator().manual_seed(0))

    def denoising_loss():
        with torch.no_grad():
            losses = criterion(model(images, denoising=fixed), targets)
        return float(losses["loss_bbox_dn"] + losses["loss_giou_dn"] + losses["loss_ce_dn"])

    before = denoising_loss()
    for use_denoising in (True,) * 8 + (False,) * 2:
        dn = criterion.denoising_queries(targets) if use_denoising else None
        losses = criterion(model(images, denoising=dn), targets)
        assert ("loss_ce_dn" in losses) == use_denoising
        loss = criterion.weighted_sum(losses)
        assert torch.isfinite(loss)
        loss.backward()
        assert (model.label_embed.weight.grad is not None) == use_denoising
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert denoising_loss() < before
