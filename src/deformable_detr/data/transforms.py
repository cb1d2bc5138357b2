"""DETR data augmentation on (PIL image, target) pairs.

Every transform takes and returns `(image, target)`: `image` a PIL RGB image, `target` a dict with
`boxes` (T, 4) float32 xyxy in pixels of the current image, `labels` (T,) int64, `size` (2,) int64
(h, w) of the current image, plus untouched keys (`image_id`, `orig_size`). The last transform,
`ToTensorNormalize`, returns a (3, H, W) float tensor normalized with ImageNet statistics and boxes
as normalized (cx, cy, w, h) — the format the model and the criterion use.

Recipe (Carion et al. 2020, kept by Deformable DETR): random horizontal flip, then either a
multi-scale resize of the short side (max long side) or a random resize + random-size crop followed
by the same multi-scale resize. Sizes are arguments so small presets can train at small resolutions.

The resize rule, the resize itself and the normalisation are `deformable_detr.pipeline.processor`'s, the
ones inference uses, so a model sees at inference exactly what validation showed it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from PIL import Image

from ..pipeline.processor import IMAGENET_MEAN, IMAGENET_STD, normalize, resize_image, resized_size
from ..util.box_ops import box_xyxy_to_cxcywh

Target = dict


def _keep_boxes(target: Target, keep: torch.Tensor) -> Target:
    """Drop the targets where `keep` (T,) bool is False."""
    target = dict(target)
    target["boxes"] = target["boxes"][keep]
    target["labels"] = target["labels"][keep]
    return target


def hflip(image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
    """Mirror the image left-right; x0' = w - x1, x1' = w - x0."""
    width = image.width
    target = dict(target)
    boxes_xyxy = target["boxes"]
    target["boxes"] = torch.stack(
        (width - boxes_xyxy[:, 2], boxes_xyxy[:, 1], width - boxes_xyxy[:, 0], boxes_xyxy[:, 3]), dim=-1
    )  # (T, 4)
    return image.transpose(Image.FLIP_LEFT_RIGHT), target


def crop(image: Image.Image, target: Target, region: tuple[int, int, int, int]) -> tuple[Image.Image, Target]:
    """Crop to `region` = (top, left, height, width); boxes are clipped, empty ones dropped."""
    top, left, height, width = region
    image = image.crop((left, top, left + width, top + height))
    target = dict(target)
    boxes_xyxy = target["boxes"] - torch.tensor([left, top, left, top], dtype=torch.float32)  # (T, 4)
    boxes_xyxy[:, 0::2] = boxes_xyxy[:, 0::2].clamp(0, width)
    boxes_xyxy[:, 1::2] = boxes_xyxy[:, 1::2].clamp(0, height)
    target["boxes"] = boxes_xyxy
    target["size"] = torch.tensor([height, width], dtype=torch.int64)
    keep = (boxes_xyxy[:, 2] > boxes_xyxy[:, 0]) & (boxes_xyxy[:, 3] > boxes_xyxy[:, 1])  # (T,)
    return image, _keep_boxes(target, keep)


def resize(image: Image.Image, target: Target, size: int, max_size: int | None = None):
    """Resize so the short side is `size` pixels (long side at most `max_size`); boxes scale along."""
    new_h, new_w = resized_size(image.height, image.width, size, max_size)
    scale = torch.tensor([new_w / image.width, new_h / image.height] * 2, dtype=torch.float32)
    image = resize_image(image, (new_h, new_w))
    target = dict(target)
    target["boxes"] = target["boxes"] * scale  # (T, 4)
    target["size"] = torch.tensor([new_h, new_w], dtype=torch.int64)
    return image, target


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image, target):
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target


class RandomHorizontalFlip:
    """Flip with probability `p`."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, target):
        return hflip(image, target) if random.random() < self.p else (image, target)


class RandomResize:
    """Resize the short side to one of `sizes`, chosen uniformly, capping the long side at `max_size`."""

    def __init__(self, sizes: Sequence[int], max_size: int | None = None):
        self.sizes = list(sizes)
        self.max_size = max_size

    def __call__(self, image, target):
        return resize(image, target, random.choice(self.sizes), self.max_size)


class RandomSizeCrop:
    """Crop a random region with sides in [min_size, max_size] (clipped to the image)."""

    def __init__(self, min_size: int, max_size: int):
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, image, target):
        width = random.randint(min(image.width, self.min_size), min(image.width, self.max_size))
        height = random.randint(min(image.height, self.min_size), min(image.height, self.max_size))
        top = random.randint(0, image.height - height)
        left = random.randint(0, image.width - width)
        return crop(image, target, (top, left, height, width))


class RandomSelect:
    """Apply `first` with probability `p`, else `second`."""

    def __init__(self, first: Callable, second: Callable, p: float = 0.5):
        self.first, self.second, self.p = first, second, p

    def __call__(self, image, target):
        return self.first(image, target) if random.random() < self.p else self.second(image, target)


class ToTensorNormalize:
    """PIL RGB -> (3, H, W) float32 normalized by ImageNet mean/std; boxes -> normalized cxcywh."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image, target):
        tensor = normalize(image, self.mean, self.std)  # (3, H, W)
        target = dict(target)
        scale = torch.tensor([image.width, image.height] * 2, dtype=torch.float32)
        target["boxes"] = box_xyxy_to_cxcywh(target["boxes"] / scale)  # (T, 4) in [0, 1]
        return tensor, target


def make_transforms(
    train: bool,
    scales: Sequence[int] = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800),
    max_size: int = 1333,
    crop_resize: Sequence[int] = (400, 500, 600),
    crop_size: tuple[int, int] = (384, 600),
    val_size: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Compose:
    """The DETR train or validation pipeline; defaults are the paper's COCO sizes.

    Args:
        train: augment (flip, multi-scale resize, random crop) when True; resize only when False.
        scales: candidate short sides for training.
        max_size: cap on the long side, pixels.
        crop_resize: short sides tried before the random crop.
        crop_size: (min, max) side of the random crop, pixels.
        val_size: validation short side; defaults to max(scales).
        mean, std: per-channel normalisation of pixels in [0, 1] (ImageNet's by default).
    """
    normalize = ToTensorNormalize(mean, std)
    if not train:
        return Compose([RandomResize([val_size or max(scales)], max_size=max_size), normalize])
    return Compose(
        [
            RandomHorizontalFlip(),
            RandomSelect(
                RandomResize(scales, max_size=max_size),
                Compose(
                    [
                        RandomResize(crop_resize),
                        RandomSizeCrop(*crop_size),
                        RandomResize(scales, max_size=max_size),
                    ]
                ),
            ),
            normalize,
        ]
    )
