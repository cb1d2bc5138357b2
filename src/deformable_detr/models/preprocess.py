"""What a model expects of its input images, and its categories: both travel with the weights.

`PreprocessConfig` holds the normalisation and resizing the model was trained with (the paper's:
ImageNet mean/std, shorter side 800, longer side at most 1333). `categories` is the list of
`{"id": int, "name": str}` in label order: label k of the model is `categories[k]`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from deformable_detr.data.images import load_rgb_image, to_rgb
from deformable_detr.errors import ConfigError, ModelInputError
from deformable_detr.util.config_fields import check_fields

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessConfig:
    """How to turn an RGB image into the model's input.

    mean, std: per-channel, on pixel values scaled to [0, 1].
    min_size: the shorter side is resized to this many pixels ...
    max_size: ... unless the longer side would exceed this; then the longer side is this.
    size_divisibility: pad each batch's H and W up to a multiple of this (0 = no rounding).
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    min_size: int = 800
    max_size: int = 1333
    size_divisibility: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError(f"PreprocessConfig: mean and std need 3 values each, got {self.mean}, {self.std}")
        if any(v <= 0 for v in self.std):
            raise ConfigError(f"PreprocessConfig: std must be > 0, got {self.std}")
        if self.min_size < 1 or self.max_size < self.min_size:
            raise ConfigError(f"PreprocessConfig: need 1 <= min_size <= max_size, got {self.min_size}, {self.max_size}")
        if self.size_divisibility < 0:
            raise ConfigError(f"PreprocessConfig: size_divisibility must be >= 0, got {self.size_divisibility}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"PreprocessConfig: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


# COCO 2017 detection categories (ids 1..90 with gaps), in id order: label k of a 91-class
# official/HF model is COCO id k (labels without a COCO category are named "N/A").
COCO_CATEGORY_NAMES = {
    1: "person",
    2: "bicycle",
    3: "car",
    4: "motorcycle",
    5: "airplane",
    6: "bus",
    7: "train",
    8: "truck",
    9: "boat",
    10: "traffic light",
    11: "fire hydrant",
    13: "stop sign",
    14: "parking meter",
    15: "bench",
    16: "bird",
    17: "cat",
    18: "dog",
    19: "horse",
    20: "sheep",
    21: "cow",
    22: "elephant",
    23: "bear",
    24: "zebra",
    25: "giraffe",
    27: "backpack",
    28: "umbrella",
    31: "handbag",
    32: "tie",
    33: "suitcase",
    34: "frisbee",
    35: "skis",
    36: "snowboard",
    37: "sports ball",
    38: "kite",
    39: "baseball bat",
    40: "baseball glove",
    41: "skateboard",
    42: "surfboard",
    43: "tennis racket",
    44: "bottle",
    46: "wine glass",
    47: "cup",
    48: "fork",
    49: "knife",
    50: "spoon",
    51: "bowl",
    52: "banana",
    53: "apple",
    54: "sandwich",
    55: "orange",
    56: "broccoli",
    57: "carrot",
    58: "hot dog",
    59: "pizza",
    60: "donut",
    61: "cake",
    62: "chair",
    63: "couch",
    64: "potted plant",
    65: "bed",
    67: "dining table",
    70: "toilet",
    72: "tv",
    73: "laptop",
    74: "mouse",
    75: "remote",
    76: "keyboard",
    77: "cell phone",
    78: "microwave",
    79: "oven",
    80: "toaster",
    81: "sink",
    82: "refrigerator",
    84: "book",
    85: "clock",
    86: "vase",
    87: "scissors",
    88: "teddy bear",
    89: "hair drier",
    90: "toothbrush",
}


def default_categories(num_classes: int) -> list[dict[str, Any]]:
    """Categories for a model whose files carry none: COCO's for 91 classes (label k = COCO id k,
    "N/A" for ids COCO does not use), otherwise ids 1..K named "class_1".."class_K"."""
    if num_classes == 91:
        return [{"id": k, "name": COCO_CATEGORY_NAMES.get(k, "N/A")} for k in range(91)]
    return [{"id": k + 1, "name": f"class_{k + 1}"} for k in range(num_classes)]


def check_categories(
    categories: list[dict[str, Any]], num_classes: int, source: str = "categories"
) -> list[dict[str, Any]]:
    """Validate a category list ({"id": int, "name": str} per label) against the model's class count."""
    if not isinstance(categories, list) or len(categories) != num_classes:
        count = len(categories) if isinstance(categories, list) else type(categories).__name__
        raise ConfigError(f"{source}: expected a list of {num_classes} categories (one per class), got {count}")
    checked = []
    for index, category in enumerate(categories):
        if (
            not isinstance(category, dict)
            or not isinstance(category.get("id"), int)
            or not isinstance(category.get("name"), str)
        ):
            raise ConfigError(f"{source}: entry {index} must be {{'id': int, 'name': str}}, got {category!r}")
        checked.append({"id": category["id"], "name": category["name"]})
    return checked


ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


def to_rgb_image(image: ImageInput) -> Image.Image:
    """Any supported image input as an RGB PIL image (8 bits per channel).

    Args:
        image: a file path (decoded by `load_rgb_image`: EXIF orientation applied, any mode -> RGB,
            sides over 10k px downscaled with `info["original_size"]` kept); a PIL image (used as it
            is, no EXIF rotation, converted to RGB like a file); a numpy (H, W, 3) or (H, W) uint8 array;
            a torch (3, H, W) or (1, H, W) tensor, uint8 in 0..255 or floating point in [0, 1]
            (rounded to 8 bits, so it gives the same result as the uint8 image it came from).

    Raises:
        DatasetError: a file that is missing or cannot be decoded.
        ModelInputError: an array or tensor of the wrong shape, dtype or range, or an empty image.
    """
    if isinstance(image, (str, os.PathLike)):
        return load_rgb_image(Path(image))
    if isinstance(image, Image.Image):
        if image.width < 1 or image.height < 1:
            raise ModelInputError(f"PIL image of size {image.size} is empty; give an image of at least 1x1 pixels")
        return to_rgb(image)  # the same mode policy as files (alpha over white, 16-bit scaled, ...)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ModelInputError(
                f"numpy image has shape {image.shape} and dtype {image.dtype}; expected (H, W, 3) "
                "or (H, W) uint8 (convert with (array * 255).round().astype(np.uint8))"
            )
        if image.size == 0:
            raise ModelInputError(f"numpy image of shape {image.shape} is empty; give at least 1x1 pixels")
        return Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    if isinstance(image, torch.Tensor):
        return _tensor_to_image(image)
    raise ModelInputError(
        f"cannot use a {type(image).__name__} as an image; give a path, a PIL image, a numpy "
        "(H, W, 3) uint8 array or a (3, H, W) tensor"
    )


def _tensor_to_image(image: torch.Tensor) -> Image.Image:
    """(3 | 1, H, W) uint8 or float in [0, 1] -> RGB PIL image."""
    if image.dim() != 3 or image.shape[0] not in (1, 3) or image.shape[1] < 1 or image.shape[2] < 1:
        raise ModelInputError(
            f"image tensor has shape {tuple(image.shape)}; expected (3, H, W) or (1, H, W) "
            "with H, W >= 1 (a batch of images goes in as a list)"
        )
    image = image.detach().cpu()
    if image.is_floating_point():
        if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ModelInputError(
                f"float image tensor has values in [{image.min().item()}, {image.max().item()}]"
                " or non-finite ones; expected pixel values in [0, 1] (or a uint8 tensor)"
            )
        image = (image.float() * 255).round().to(torch.uint8)
    elif image.dtype != torch.uint8:
        raise ModelInputError(f"image tensor has dtype {image.dtype}; expected uint8 (0..255) or float (0..1)")
    pixels = image.expand(3, -1, -1).permute(1, 2, 0).contiguous().numpy()  # (H, W, 3)
    return Image.fromarray(pixels, "RGB")


def resized_size(height: int, width: int, config: PreprocessConfig) -> tuple[int, int]:
    """(h, w) with the shorter side `min_size` and the longer side at most `max_size` (DETR's rule,
    the same as training's validation resize)."""
    short, long = min(height, width), max(height, width)
    size = config.min_size
    if long / short * size > config.max_size:
        size = int(round(config.max_size * short / long))
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def preprocess_image(image: Image.Image, config: PreprocessConfig) -> torch.Tensor:
    """Resize (bilinear, as training's validation transform) and normalise one RGB image.

    Args:
        image: RGB PIL image of any size (see `to_rgb_image`).
        config: the model's `PreprocessConfig`.

    Returns:
        (3, h, w) float32, (pixel / 255 - mean) / std, with (h, w) = `resized_size(H, W, config)`.
    """
    height, width = resized_size(image.height, image.width, config)
    resized = image.resize((width, height), Image.BILINEAR)
    pixels = torch.frombuffer(bytearray(resized.tobytes()), dtype=torch.uint8).view(height, width, 3)
    pixels = pixels.permute(2, 0, 1).float() / 255.0  # (3, h, w)
    mean = torch.tensor(config.mean).view(3, 1, 1)
    std = torch.tensor(config.std).view(3, 1, 1)
    return (pixels - mean) / std
