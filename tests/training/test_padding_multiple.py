"""Training batches padded to a multiple of the coarsest stride: every level's padding mask is exact.

Oracle: each image run alone (no padding), whose level maps have exactly the valid size.
"""

import random

import pytest
import torch

from deformable_detr.data.coco import collate
from deformable_detr.models import DeformableDETR, ModelConfig
from deformable_detr.models.detr import DETR
from deformable_detr.models.detr_config import DetrConfig
from deformable_detr.training.dataloaders import padding_multiple


@pytest.mark.parametrize(
    "model, expected",
    [
        (lambda: DeformableDETR(ModelConfig.preset("tiny")), 64),  # C3..C5 + one stride-2 level
        (lambda: DeformableDETR(ModelConfig.preset("tiny", num_feature_levels=1)), 32),
        (lambda: DeformableDETR(ModelConfig.preset("tiny", num_feature_levels=1, dilation=True)), 16),
        (lambda: DETR(DetrConfig.preset("detr-tiny")), 32),
    ],
)
def test_padding_multiple_is_the_coarsest_stride(model, expected):
    assert padding_multiple(model()) == expected


def _valid_sizes(masks):
    """Per level, per image: (valid rows, valid columns) of (B, H_l, W_l) masks."""
    return [[(int((~m).any(1).sum()), int((~m).any(0).sum())) for m in level] for level in masks]


@torch.no_grad()
def test_masks_of_a_batch_padded_to_the_multiple_match_each_image_alone():
    torch.manual_seed(0)
    model = DeformableDETR(ModelConfig.preset("tiny")).eval()
    rng = random.Random(0)
    sizes = [(rng.randint(40, 140), rng.randint(40, 140)) for _ in range(6)]
    batch = [(torch.rand(3, h, w), {}) for h, w in sizes]
    alone = [[tuple(source.shape[-2:]) for source in model.image_features(image[None])[0]] for image, _ in batch]
    expected = [[alone[i][level] for i in range(len(batch))] for level in range(4)]

    images, padding_mask, _ = collate(batch, size_divisibility=padding_multiple(model))
    _, masks = model.image_features(images, padding_mask)
    assert _valid_sizes(masks) == expected

    images, padding_mask, _ = collate(batch)  # the batch's own largest size: the reference's padding
    _, masks = model.image_features(images, padding_mask)
    assert _valid_sizes(masks) != expected  # nearest-neighbour downsampling miscounts on some level


def test_fit_trains_on_batches_padded_to_the_multiple(tiny_train_config, monkeypatch):
    import dataclasses

    from deformable_detr.training import dataloaders
    from deformable_detr.training.engine import fit

    shapes, original = [], dataloaders.collate

    def recording(batch, size_divisibility=1):
        images, padding_mask, targets = original(batch, size_divisibility)
        shapes.append((size_divisibility, tuple(images.shape[-2:])))
        return images, padding_mask, targets

    monkeypatch.setattr(dataloaders, "collate", recording)
    fit(dataclasses.replace(tiny_train_config, max_steps=2), progress=False)
    training = [shape for multiple, shape in shapes if multiple == 64]
    assert len(training) >= 3  # the drawn first batch and two steps (evaluation crops each image anyway)
    assert all(h % 64 == 0 and w % 64 == 0 for h, w in training)
