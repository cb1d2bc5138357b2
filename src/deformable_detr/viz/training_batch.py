"""`OUT/train_batch0.png`: the first training batch as the model receives it (after the augmentation),
de-normalised, with its ground-truth boxes and class names: the check that catches boxes in the
wrong format, labels off by one and swapped class names before any compute is spent."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from ..pipeline.processor import IMAGENET_MEAN, IMAGENET_STD
from ..util.box_ops import box_cxcywh_to_xyxy
from .detections import draw_detections, save_grid


def draw_training_batch(
    images: torch.Tensor,
    padding_mask: torch.Tensor,
    targets: list[dict],
    class_names: Sequence[str],
    path: str | Path,
    max_images: int = 8,
) -> Path:
    """Save a grid of the batch's images with their target boxes (coloured by class, named).

    Args:
        images: (B, 3, H, W) normalised with ImageNet mean/std, zero-padded.
        padding_mask: (B, H, W) bool, True = padding (cropped away before drawing).
        targets: B dicts with `boxes` (T, 4) cxcywh normalised to the unpadded image and `labels` (T,).
        class_names: label -> name.
        path: where the PNG goes.
    """
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    tiles = []
    for image, mask, target in list(zip(images, padding_mask, targets))[:max_images]:
        height = int((~mask).any(dim=1).sum())  # rows holding any real pixel
        width = int((~mask).any(dim=0).sum())
        pixels = ((image[:, :height, :width].float().cpu() * std + mean).clamp(0, 1) * 255).round().byte()  # (3, h, w)
        picture = Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        boxes_xyxy = box_cxcywh_to_xyxy(target["boxes"].float().cpu()) * scale  # (T, 4) pixels
        tiles.append(
            draw_detections(
                picture, boxes_xyxy.tolist(), target["labels"].tolist(), class_names=class_names, min_side=256
            )
        )
    return save_grid(tiles, path, columns=min(4, len(tiles)))
