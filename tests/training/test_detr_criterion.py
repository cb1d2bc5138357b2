"""DETR's loss against hand-computed values, its softmax matcher against brute force, and DETR through `fit`."""

import dataclasses
import itertools
import math

import pytest
import torch

import deformable_detr
from deformable_detr.models.detr import DETR
from deformable_detr.training.detr_criterion import DetrCriterion, SoftmaxHungarianMatcher, detr_loss_config
from deformable_detr.util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from tiny_models import tiny_detr_config


def _toy():
    logits = torch.tensor([[[0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]])  # (B=1, Q=2, K+1=3)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1]]])
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.4]])}]
    return {"pred_logits": logits, "pred_boxes": boxes}, targets


def test_loss_on_toy_batch_matches_hand_computation():
    outputs, targets = _toy()
    outputs["aux_outputs"] = [{k: v.clone() for k, v in outputs.items()}]
    criterion = DetrCriterion.from_config(2, detr_loss_config())
    losses = criterion(outputs, targets)
    # Query 0 is matched to the target (class 1); query 1 must predict no-object (index 2), weighted 0.1.
    ce_matched = math.log(math.exp(2) + 2) - 2
    ce_no_object = math.log(2 + math.e) - 1
    expected_ce = (1.0 * ce_matched + 0.1 * ce_no_object) / (1.0 + 0.1)
    # Boxes: |0.2 - 0.4| in h; xyxy (0.4,0.4,0.6,0.6) inside (0.4,0.3,0.6,0.7): IoU 0.04/0.08, enclosing = union.
    expected = {"loss_ce": expected_ce, "loss_bbox": 0.2, "loss_giou": 0.5, "class_error": 0.0}
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, abs=1e-6), key
        if key != "class_error":
            assert losses[f"{key}_0"].item() == pytest.approx(value, abs=1e-6), key
    total = criterion.weighted_sum(losses).item()
    assert total == pytest.approx(2 * (1.0 * expected_ce + 5 * 0.2 + 2 * 0.5), abs=1e-5)


def test_class_error_counts_a_winning_no_object_logit_and_class_error_objects_does_not():
    """Two matched queries (K = 2, no-object last): query 0's right class is beaten by no-object, query 1's object
    argmax is the wrong class. DETR's class_error: both wrong (100); over the K object logits only: query 0 right (50)."""
    logits = torch.tensor([[[2.0, 0.0, 3.0], [0.0, 1.0, -1.0], [0.0, 0.0, 5.0]]])  # (B=1, Q=3, K+1=3)
    boxes = torch.tensor([[[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1]]])
    targets = [{"labels": torch.tensor([0, 0]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])}]
    outputs = {
        "pred_logits": logits,
        "pred_boxes": boxes,
        "aux_outputs": [{"pred_logits": logits, "pred_boxes": boxes}],
    }
    losses = DetrCriterion.from_config(2, detr_loss_config())(outputs, targets)
    assert losses["class_error"].item() == pytest.approx(100.0)
    assert losses["class_error_objects"].item() == pytest.approx(50.0)
    assert not any(k.startswith("class_error_") and k[-1].isdigit() for k in losses)  # logged for the last layer only
    assert DetrCriterion.from_config(2, detr_loss_config()).weight_of("class_error_objects") == 0.0


def test_wrong_number_of_logits_is_a_clear_error():
    outputs, targets = _toy()
    with pytest.raises(ValueError, match="expected num_classes \\+ 1 = 4"):
        DetrCriterion.from_config(3, detr_loss_config())(outputs, targets)


def test_softmax_matcher_equals_brute_force():
    torch.manual_seed(0)
    logits, boxes = torch.randn(1, 5, 4), torch.rand(1, 5, 4) * 0.5 + 0.25
    target_boxes = torch.rand(3, 4) * 0.5 + 0.25
    labels = torch.tensor([0, 2, 2])
    matcher = SoftmaxHungarianMatcher(1.0, 5.0, 2.0)
    ((query_idx, target_idx),) = matcher(
        {"pred_logits": logits, "pred_boxes": boxes}, [{"labels": labels, "boxes": target_boxes}]
    )
    prob = logits[0].softmax(-1)
    giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes[0]), box_cxcywh_to_xyxy(target_boxes))

    def cost(q, t):
        return -prob[q, labels[t]] + 5 * (boxes[0, q] - target_boxes[t]).abs().sum() - 2 * giou[q, t]

    best = min(itertools.permutations(range(5), 3), key=lambda qs: sum(cost(q, t) for t, q in enumerate(qs)))
    assert dict(zip(target_idx.tolist(), query_idx.tolist())) == dict(enumerate(best))


def test_fit_trains_and_reloads_detr(tiny_train_config):
    model = tiny_detr_config(backbone_base_width=8)
    config = dataclasses.replace(tiny_train_config, model=model, loss=detr_loss_config(), epochs=1)
    from deformable_detr.training.engine import fit

    result = fit(config, progress=False)
    assert set(result.metrics) >= {"AP", "AP50", "APs"}
    assert math.isfinite(result.history[-1]["train_loss"])
    loaded = deformable_detr.load(result.checkpoint)
    assert isinstance(loaded, DETR) and loaded.checkpoint_info.format == "training-checkpoint"
    assert loaded.config == dataclasses.replace(model, num_classes=6)  # the class count comes from the data
    assert loaded.preprocess.min_size == config.val_size  # the run's evaluation size, not the paper's 800
