"""Contrastive denoising (DN-DETR, DINO): noised ground-truth boxes as extra decoder queries, trained
against their known targets without matching.

Per batch, G groups; each group holds, for every image, one positive and one negative query per ground
truth box (padded to the batch's largest box count T):
    positives: box corners moved by up to `box_noise` x half the box size; target = the box and its label.
    negatives: corners moved by 1..2 x `box_noise` x half the size; target = no object.
Labels of both are replaced by a random class with probability `label_noise` / 2. G = max(1, number //
(2 T)), so the number of denoising queries stays about `number` whatever the box count. The attention
mask keeps each group from seeing the others; the model blocks the matching queries from seeing any
denoising query. Layout of the Ld = 2 T G queries: group g occupies [2 T g, 2 T (g + 1)), positives first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..util.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh


@dataclass
class DenoisingQueries:
    """Denoising queries of one batch and what they must predict.

    labels: (B, Ld) int64, noised labels in [0, K); K on padding slots.
    boxes_cxcywh: (B, Ld, 4) noised boxes in [0, 1] (zeros on padding slots).
    attention_mask: (Ld, Ld) bool, True = query i may not attend to query j (other groups).
    target_index: (B, Ld) int64, the ground-truth box each positive query reconstructs; -1 for negative
        and padding queries (targets: no object).
    num_groups: G.
    """

    labels: torch.Tensor
    boxes_cxcywh: torch.Tensor
    attention_mask: torch.Tensor
    target_index: torch.Tensor
    num_groups: int


def make_denoising_queries(
    targets: list[dict],
    num_classes: int,
    number: int = 100,
    box_noise: float = 1.0,
    label_noise: float = 0.5,
    generator: torch.Generator | None = None,
) -> DenoisingQueries | None:
    """Contrastive denoising queries for a batch (see the module docstring).

    Args:
        targets: B dicts with `labels` (T_b,) int64 in [0, K) and `boxes` (T_b, 4) cxcywh in [0, 1].
        num_classes: K.
        number: about how many denoising queries per image (G = max(1, number // (2 T))).
        box_noise: scale of the corner jitter, in half box sizes (DINO: 1.0).
        label_noise: twice the probability of replacing a label by a random class (DINO: 0.5).
        generator: CPU random generator (None = torch's global one).

    Returns:
        `DenoisingQueries` on the targets' device, or None when no image has a box.
    """
    device = targets[0]["boxes"].device if targets else torch.device("cpu")
    counts = [len(t["labels"]) for t in targets]
    most = max(counts, default=0)
    if most == 0:
        return None
    groups = max(1, number // (2 * most))
    group_size = 2 * most
    total = groups * group_size
    batch = len(targets)
    labels = torch.full((batch, total), num_classes, dtype=torch.int64)
    boxes = torch.zeros(batch, total, 4)
    target_index = torch.full((batch, total), -1, dtype=torch.int64)
    for b, target in enumerate(targets):
        count = counts[b]
        if count == 0:
            continue
        gt_labels = target["labels"].cpu()
        gt_boxes = target["boxes"].cpu().float()
        for g in range(groups):
            for negative in (False, True):
                start = g * group_size + (most if negative else 0)
                slots = slice(start, start + count)
                labels[b, slots] = _flip_labels(gt_labels, num_classes, label_noise, generator)
                boxes[b, slots] = _jitter_boxes(gt_boxes, box_noise, negative, generator)
                if not negative:
                    target_index[b, slots] = torch.arange(count)
    group_of = torch.arange(total) // group_size
    attention_mask = group_of[:, None] != group_of[None, :]  # (Ld, Ld): only the own group is visible
    return DenoisingQueries(
        labels.to(device), boxes.to(device), attention_mask.to(device), target_index.to(device), groups
    )


def _flip_labels(
    labels: torch.Tensor, num_classes: int, label_noise: float, generator: torch.Generator | None
) -> torch.Tensor:
    """(T,) labels, each replaced by a uniformly random class with probability label_noise / 2 (DINO)."""
    flip = torch.rand(len(labels), generator=generator) < label_noise * 0.5
    random_labels = torch.randint(0, num_classes, (len(labels),), generator=generator)
    return torch.where(flip, random_labels, labels)


def _jitter_boxes(
    boxes_cxcywh: torch.Tensor, box_noise: float, negative: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """(T, 4) boxes whose corners move by u * box_noise * half the box size, u ~ +-U(0, 1) for positives
    and +-U(1, 2) for negatives, clipped to [0, 1] (DINO's contrastive noise)."""
    corners = box_cxcywh_to_xyxy(boxes_cxcywh)  # (T, 4)
    half_size = boxes_cxcywh[:, 2:].repeat(1, 2) / 2  # (T, 4) (w/2, h/2, w/2, h/2)
    sign = torch.randint(0, 2, corners.shape, generator=generator).float() * 2 - 1
    magnitude = torch.rand(corners.shape, generator=generator) + (1.0 if negative else 0.0)
    corners = (corners + sign * magnitude * half_size * box_noise).clamp(0.0, 1.0)
    return box_xyxy_to_cxcywh(corners)
