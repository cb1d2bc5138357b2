"""HungarianMatcher against brute force over all permutations (oracle), empty images, NaN errors."""

import itertools

import pytest
import torch

from deformable_detr.training.matcher import HungarianMatcher, focal_class_cost
from deformable_detr.util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou


def _random_boxes(n, generator):
    centre = torch.rand(n, 2, generator=generator) * 0.6 + 0.2
    size = torch.rand(n, 2, generator=generator) * 0.3 + 0.05
    return torch.cat([centre, size], dim=1)


def _pair_cost(prob, box, label, target_box, alpha=0.25, gamma=2.0):
    """Cost of one query vs one target, written out by hand from the paper's definition."""
    p = prob[label]
    pos = alpha * (1 - p) ** gamma * -torch.log(p + 1e-8)
    neg = (1 - alpha) * p**gamma * -torch.log(1 - p + 1e-8)
    l1 = (box - target_box).abs().sum()
    giou = generalized_box_iou(box_cxcywh_to_xyxy(box[None]), box_cxcywh_to_xyxy(target_box[None]))[0, 0]
    return 2 * (pos - neg) + 5 * l1 - 2 * giou


def _brute_force(prob, boxes, labels, target_boxes):
    """Minimum total cost over every injective map targets -> queries."""
    num_queries, num_targets = len(boxes), len(target_boxes)
    pair = [
        [float(_pair_cost(prob[q], boxes[q], labels[t], target_boxes[t])) for t in range(num_targets)]
        for q in range(num_queries)
    ]
    return min(
        sum(pair[q][t] for t, q in enumerate(queries))
        for queries in itertools.permutations(range(num_queries), num_targets)
    )


@pytest.mark.parametrize("seed", range(6))
def test_matcher_matches_brute_force(seed):
    generator = torch.Generator().manual_seed(seed)
    num_queries, num_classes = 6, 3
    sizes = [int(torch.randint(1, 6, (1,), generator=generator)), int(torch.randint(0, 5, (1,), generator=generator))]
    outputs = {
        "pred_logits": torch.randn(2, num_queries, num_classes, generator=generator, dtype=torch.float64),
        "pred_boxes": torch.stack([_random_boxes(num_queries, generator) for _ in range(2)]).double(),
    }
    targets = [
        {
            "labels": torch.randint(0, num_classes, (n,), generator=generator),
            "boxes": _random_boxes(n, generator).double(),
        }
        for n in sizes
    ]
    indices = HungarianMatcher()(outputs, targets)
    for b, (query_idx, target_idx) in enumerate(indices):
        assert len(query_idx) == len(target_idx) == sizes[b]
        assert len(set(query_idx.tolist())) == sizes[b]
        prob = outputs["pred_logits"][b].sigmoid()
        got = sum(
            float(_pair_cost(prob[q], outputs["pred_boxes"][b, q], targets[b]["labels"][t], targets[b]["boxes"][t]))
            for q, t in zip(query_idx.tolist(), target_idx.tolist())
        )
        if sizes[b] == 0:
            assert got == 0
            continue
        expected = _brute_force(prob, outputs["pred_boxes"][b], targets[b]["labels"], targets[b]["boxes"])
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_focal_class_cost_formula():
    prob = torch.tensor([[0.3, 0.9]], dtype=torch.float64)
    cost = focal_class_cost(prob, torch.tensor([1, 0]))
    p = 0.9
    expected_1 = 0.25 * (1 - p) ** 2 * -torch.log(
        torch.tensor(p + 1e-8, dtype=torch.float64)
    ) - 0.75 * p**2 * -torch.log(torch.tensor(1 - p + 1e-8, dtype=torch.float64))
    torch.testing.assert_close(cost[0, 0], expected_1)


def test_all_images_empty():
    outputs = {"pred_logits": torch.randn(2, 4, 3), "pred_boxes": torch.rand(2, 4, 4)}
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * 2
    for query_idx, target_idx in HungarianMatcher()(outputs, targets):
        assert query_idx.numel() == 0 and target_idx.numel() == 0


def test_non_finite_cost_names_batch_index():
    outputs = {"pred_logits": torch.randn(2, 4, 3), "pred_boxes": torch.rand(2, 4, 4) * 0.5 + 0.2}
    outputs["pred_boxes"][1, 2, 0] = float("nan")
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}] * 2
    with pytest.raises(ValueError, match="batch index 1"):
        HungarianMatcher()(outputs, targets)
