"""The ONE place that turns images into model inputs and model outputs into thresholded detections.

Preprocess: `PreprocessConfig` holds the normalisation and resizing a model was trained with (the paper's:
ImageNet mean/std, shorter side 800, longer side at most 1333; it travels with the weights).
`resized_size` is the one resize rule (DETR's `get_size_with_aspect_ratio`) and `resize_image` /
`normalize` the one implementation: inference (`Processor.preprocess`) and the training transforms
(`deformable_detr.data.transforms`) both call them, so a model sees at inference what it saw in validation.

Postprocess: `postprocess` is Deformable DETR's scoring (sigmoid, top-k over queries x classes; DETR's
softmax scoring is `models.detr.detr_postprocess`); both end in `detections_in_pixels`, which holds the one
score comparison, `score >= threshold` (a detection scoring exactly the threshold is kept). Nothing
thresholds again after it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from deformable_detr.errors import ConfigError, ModelInputError
from deformable_detr.util.box_ops import box_cxcywh_to_xyxy
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


def resized_size(height: int, width: int, min_size: int, max_size: int | None = None) -> tuple[int, int]:
    """(h, w) with the shorter side `min_size` and the longer side at most `max_size` (None = no cap).

    DETR's `get_size_with_aspect_ratio`: when the cap binds, the shorter side becomes
    round(max_size * short / long); the longer side is then truncated, int(size * long / short).
    """
    short, long = min(height, width), max(height, width)
    size = min_size
    if max_size is not None and long / short * size > max_size:
        size = int(round(max_size * short / long))
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` resized to `size` = (h, w), bilinear (PIL's, as DETR's training transforms)."""
    height, width = size
    return image.resize((width, height), Image.BILINEAR)


def normalize(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """An RGB PIL image as (3, H, W) float32 (pixel / 255 - mean) / std, per channel."""
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(image.height, image.width, 3)
    pixels = pixels.permute(2, 0, 1).float() / 255.0  # (3, H, W)
    return (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


@dataclass(frozen=True)
class Processor:
    """A model's preprocessing: RGB image of any size -> the (3, h, w) tensor the model reads.

    config: the model's `PreprocessConfig` (`model.preprocess`).
    """

    config: PreprocessConfig

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) an image of `height` x `width` is resized to (see `resized_size`)."""
        return resized_size(height, width, self.config.min_size, self.config.max_size)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Resize (bilinear, as training's validation transform) and normalise one RGB image.

        Args:
            image: RGB PIL image of any size (see `deformable_detr.pipeline.decode.to_rgb_image`).

        Returns:
            (3, h, w) float32, (pixel / 255 - mean) / std, with (h, w) = `self.resized_size(H, W)`.
        """
        resized = resize_image(image, self.resized_size(image.height, image.width))
        return normalize(resized, self.config.mean, self.config.std)


def check_threshold(threshold: float, source: str = "threshold") -> float:
    """`threshold` as a float in [0, 1]; NaN, infinities and anything outside are refused."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ConfigError(f"{source} must be a number in [0, 1], got {threshold!r}") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{source} must be a score in [0, 1], got {threshold!r}; e.g. 0.5")
    return value


@torch.no_grad()
def postprocess(
    out: dict[str, Any], target_sizes: torch.Tensor, score_threshold: float = 0.0, top_k: int = 100
) -> list[dict[str, torch.Tensor]]:
    """The `top_k` highest-scoring (query, class) pairs of each image scoring >= `score_threshold`.

    Deformable DETR's scoring, as the reference PostProcess: sigmoid per class, top-k over queries x classes.
    A query may appear several times with different classes; there is no NMS.

    Args:
        out: model output with "pred_logits" (B, Lq, K) and "pred_boxes" (B, Lq, 4) (cx, cy, w, h) in [0, 1].
        target_sizes: (B, 2) (height, width) in pixels that the normalized boxes are scaled to.
        score_threshold: keep only detections with score >= this (after the top-k).
        top_k: detections per image before thresholding (at most Lq * K).

    Returns:
        per image, {"scores": (N,) float in (0, 1), descending; "labels": (N,) int64 in 0..K-1;
        "boxes": (N, 4) float (x0, y0, x1, y1) in pixels; "queries": (N,) int64 in 0..Lq-1}.
    """
    logits, boxes_cxcywh = out["pred_logits"], out["pred_boxes"]
    check_target_sizes(target_sizes, logits.shape[0])
    num_classes = logits.shape[-1]
    probabilities = logits.float().sigmoid().flatten(1)  # (B, Lq*K)
    scores, indices = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)  # (B, k)
    labels = indices % num_classes
    queries = indices // num_classes
    return detections_in_pixels(scores, labels, boxes_cxcywh, queries, target_sizes, score_threshold)


def check_target_sizes(target_sizes: torch.Tensor, batch: int) -> None:
    """Raise a ModelInputError unless `target_sizes` is (batch, 2)."""
    if target_sizes.shape != (batch, 2):
        raise ModelInputError(
            f"target_sizes has shape {tuple(target_sizes.shape)}, expected ({batch}, 2) (height, width) per image"
        )


def detections_in_pixels(
    scores: torch.Tensor,
    labels: torch.Tensor,
    boxes_cxcywh: torch.Tensor,
    queries: torch.Tensor,
    target_sizes: torch.Tensor,
    score_threshold: float,
) -> list[dict[str, torch.Tensor]]:
    """The selected detections of each image as xyxy pixel boxes, those scoring >= `score_threshold`.

    This is the one score comparison of the package (every postprocess, hence `predict`, `serve`,
    `explain` and export, ends here).

    Args:
        scores, labels: (B, k) of the selected detections, best first.
        boxes_cxcywh: (B, Lq, 4) every query's box, (cx, cy, w, h) in [0, 1].
        queries: (B, k) int64, the query of each selected detection.
        target_sizes: (B, 2) (height, width) in pixels.
        score_threshold: keep detections with score >= this.

    Returns:
        per image {"scores": (N,), "labels": (N,), "boxes": (N, 4) (x0, y0, x1, y1) in pixels,
        "queries": (N,) int64 the query each came from}.
    """
    boxes_xyxy = box_cxcywh_to_xyxy(torch.gather(boxes_cxcywh.float(), 1, queries[..., None].expand(-1, -1, 4)))
    height, width = target_sizes.float().unbind(1)
    boxes_xyxy = boxes_xyxy * torch.stack((width, height, width, height), 1)[:, None]  # (B, k, 4)
    detections = []
    for image_scores, image_labels, image_boxes, image_queries in zip(scores, labels, boxes_xyxy, queries):
        keep = image_scores >= score_threshold  # the one score comparison (see the module docstring)
        detections.append(
            {
                "scores": image_scores[keep],
                "labels": image_labels[keep],
                "boxes": image_boxes[keep],
                "queries": image_queries[keep],
            }
        )
    return detections
