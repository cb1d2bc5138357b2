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

    def head():
        return {
            "pred_logits": torch.randn(2, 5, 3, requires_grad=True),
            "pred_boxes": torch.rand(2, 5, 4).clamp(0.1, 0.9),
        }

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


def _focal_oracle(logits, onehot, alpha=0.25, gamma=2.0):
    """Focal loss summed over every (image, query, class) entry, one Python float at a time."""
    total = 0.0
    for value, target in zip(logits.flatten().tolist(), onehot.flatten().tolist()):
        p = 1 / (1 + math.exp(-value))
        total += -alpha * (1 - p) ** gamma * math.log(p) if target else -(1 - alpha) * p**gamma * math.log(1 - p)
    return total


def _several_boxes_case():
    """2 images, 3 queries, 3 classes; image 0 has 2 boxes (labels 2, 1), image 1 one box (label 1)."""
    targets = [
        {"labels": torch.tensor([2, 1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.25, 0.25, 0.1, 0.1]])},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.6, 0.4, 0.2, 0.4]])},
    ]
    pred_boxes = torch.tensor(
        [
            [
                [0.5, 0.5, 0.2, 0.4],  # vs target 0: same centre, twice as tall: L1 0.2, IoU = hull ratio 0.5
                [0.3, 0.25, 0.1, 0.1],  # vs target 1: 0.05 to the right: L1 0.05, IoU 1/3, hull == union
                [0.7, 0.7, 0.1, 0.1],
            ],  # unmatched
            [
                [0.6, 0.4, 0.2, 0.4],  # exact: L1 0, GIoU 1
                [0.2, 0.2, 0.1, 0.1],
                [0.8, 0.8, 0.1, 0.1],
            ],
        ]
    )
    generator = torch.Generator().manual_seed(0)
    logits = lambda: torch.randn(2, 3, 3, generator=generator, dtype=torch.float64)  # noqa: E731
    outputs = {
        "pred_logits": logits(),
        "pred_boxes": pred_boxes,
        "aux_outputs": [{"pred_logits": logits(), "pred_boxes": pred_boxes}],
        "enc_outputs": {"pred_logits": logits(), "pred_boxes": pred_boxes},
    }
    return outputs, targets


def test_losses_of_several_boxes_and_images_hand_computed():
    """Normalised by the 3 boxes of the batch (not 1, not per image); the encoder term is class-agnostic."""
    outputs, targets = _several_boxes_case()
    criterion = SetCriterion(3, _Identity(), {"loss_ce": 2, "loss_bbox": 5, "loss_giou": 2})
    losses = criterion(outputs, targets)
    num_boxes = 3
    expected_l1 = (0.2 + 0.05 + 0.0) / num_boxes
    expected_giou = ((1 - 0.5) + (1 - 1 / 3) + 0.0) / num_boxes
    for suffix in ("", "_0", "_enc"):
        assert float(losses["loss_bbox" + suffix]) == pytest.approx(expected_l1, rel=1e-6)
        assert float(losses["loss_giou" + suffix]) == pytest.approx(expected_giou, rel=1e-6)
    class_aware = torch.zeros(2, 3, 3)
    class_aware[0, 0, 2] = class_aware[0, 1, 1] = class_aware[1, 0, 1] = 1
    agnostic = torch.zeros(2, 3, 3)
    agnostic[0, 0, 0] = agnostic[0, 1, 0] = agnostic[1, 0, 0] = 1  # every target labelled 0
    assert float(losses["loss_ce"]) == pytest.approx(
        _focal_oracle(outputs["pred_logits"], class_aware) / num_boxes, rel=1e-6
    )
    assert float(losses["loss_ce_0"]) == pytest.approx(
        _focal_oracle(outputs["aux_outputs"][0]["pred_logits"], class_aware) / num_boxes, rel=1e-6
    )
    enc_logits = outputs["enc_outputs"]["pred_logits"]
    assert float(losses["loss_ce_enc"]) == pytest.approx(_focal_oracle(enc_logits, agnostic) / num_boxes, rel=1e-6)
    assert float(losses["loss_ce_enc"]) != pytest.approx(_focal_oracle(enc_logits, class_aware) / num_boxes, rel=1e-3)
    weighted = sum(
        w * float(losses[n + s])
        for n, w in (("loss_ce", 2), ("loss_bbox", 5), ("loss_giou", 2))
        for s in ("", "_0", "_enc")
    )
    assert float(criterion.weighted_sum(losses)) == pytest.approx(weighted, rel=1e-6)


def test_hungarian_criterion_on_several_images_matches_brute_force_assignment():
    """With the real matcher: the loss equals the oracle at the cheapest of all query permutations."""
    import itertools

    outputs, targets = _several_boxes_case()
    outputs = {k: outputs[k] for k in ("pred_logits", "pred_boxes")}
    criterion = SetCriterion.from_config(3, LossConfig())
    losses = criterion(outputs, targets)
    matcher = HungarianMatcher()
    expected_l1 = 0.0
    for b, target in enumerate(targets):
        single = {k: v[b : b + 1] for k, v in outputs.items()}
        cost = None
        best = None
        for queries in itertools.permutations(range(3), len(target["labels"])):
            query_idx = torch.tensor(queries)
            ((q, t),) = _FixedMatcher(query_idx)(single, [target])
            total = float(_pair_cost(matcher, single, target, q, t))
            if cost is None or total < cost:
                cost, best = total, query_idx
        expected_l1 += float((outputs["pred_boxes"][b, best] - target["boxes"]).abs().sum())
    assert float(losses["loss_bbox"]) == pytest.approx(expected_l1 / 3, rel=1e-6)


class _FixedMatcher(HungarianMatcher):
    def __init__(self, query_idx):
        super().__init__()
        self.query_idx = query_idx

    def forward(self, outputs, targets):
        return [(self.query_idx, torch.arange(len(self.query_idx)))]


def _pair_cost(matcher, outputs, target, query_idx, target_idx):
    """Matching cost of one assignment, from the matcher's three cost formulas written out."""
    from deformable_detr.util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

    prob = outputs["pred_logits"][0, query_idx].float().sigmoid()  # (T, K)
    labels = target["labels"][target_idx]
    p = prob[torch.arange(len(labels)), labels]
    pos = 0.25 * (1 - p) ** 2 * -(p + 1e-8).log()
    neg = 0.75 * p**2 * -(1 - p + 1e-8).log()
    boxes = outputs["pred_boxes"][0, query_idx]
    target_boxes = target["boxes"][target_idx]
    l1 = (boxes - target_boxes).abs().sum(-1)
    giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes)))
    return (2 * (pos - neg) + 5 * l1 - 2 * giou).sum()


@pytest.mark.parametrize("hybrid_weight", [0.25, 3.0])
def test_one_to_many_terms_weigh_hybrid_weight_times_their_base_weight(hybrid_weight):
    """Hybrid matching: the total is sum(base weight x term) over the one-to-one terms plus `hybrid_weight` x the
    same sum over the one-to-many ones (`_o2m`, `_o2m_0`), summed here by hand from the per-term losses; the
    weight comes through `LossConfig`, the path training takes."""
    criterion = SetCriterion.from_config(3, LossConfig(hybrid_k=2, hybrid_weight=hybrid_weight))
    generator = torch.Generator().manual_seed(0)

    def head(queries):
        return {
            "pred_logits": torch.randn(1, queries, 3, generator=generator),
            "pred_boxes": torch.rand(1, queries, 4, generator=generator).clamp(0.1, 0.9),
        }

    outputs = {**head(3), "aux_outputs": [head(3)], "one2many_outputs": {**head(6), "aux_outputs": [head(6)]}}
    targets = [{"labels": torch.tensor([2, 1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.2]])}]
    losses = criterion(outputs, targets)
    one_to_one, one_to_many = ("", "_0"), ("_o2m", "_o2m_0")
    base = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}  # LossConfig's defaults
    assert set(losses) == {"class_error"} | {n + s for n in base for s in one_to_one + one_to_many}

    def weighted(suffixes):
        return sum(w * float(losses[n + s]) for n, w in base.items() for s in suffixes)

    assert weighted(one_to_many) > 0.1  # the one-to-many terms are not negligible: dropping their weight shows
    expected = weighted(one_to_one) + hybrid_weight * weighted(one_to_many)
    assert float(criterion.weighted_sum(losses)) == pytest.approx(expected, rel=1e-6)
