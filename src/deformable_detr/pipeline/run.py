"""`predict`: images of any type and size in, one `Detections` per image out (decode -> preprocess ->
forward -> postprocess), for any detector of the contract (`config`, `preprocess`, `categories`,
`image_features`, `detect`, `postprocess`); `model.predict` delegates here.

Batching without changing any image's result: the ResNet and the input projections' GroupNorm see
padding (zeros that become non-zero after the first layer, and GroupNorm statistics over the padded
map), so a padded batch would not give an image's results alone. Here only images of the same
resized size share a backbone pass (no padding at all); the per-level maps are then padded and
masked, and the transformer, whose outputs for an image do not depend on padding around it, runs on
the whole batch. Batched results equal one-by-one results up to float rounding (see the tests).

A model prepared by `deformable_detr.pipeline.compiled.compile_inference` carries a `compiled_inference`
runner; `model_outputs` then runs it (the same steps, compiled, with the levels padded to shape
buckets) instead of `forward_unpadded`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from deformable_detr.errors import ConfigError
from deformable_detr.pipeline.decode import ImageInput, to_rgb_image
from deformable_detr.pipeline.detections import Detections
from deformable_detr.pipeline.processor import Processor, check_threshold

DEFAULT_THRESHOLD = 0.5  # the one default score threshold of predict, explain and serve
DEFAULT_TOP_K = 100  # detections per image before the threshold: the reference PostProcess's 100


def _as_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


def check_top_k(top_k: int, source: str = "top_k") -> int:
    """`top_k` if it is an integer >= 1, else a one-line ConfigError."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"{source} must be an integer >= 1, got {top_k!r}")
    return top_k


def _per_image(value, count: int, check: Callable, name: str) -> list:
    """One checked value per image: `value` repeated, or a sequence of `count` values."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ConfigError(f"{name} has {len(value)} values for {count} images; give one value or one per image")
        return [check(v, name) for v in value]
    return [check(value, name)] * count


@torch.inference_mode()
def predict(
    model: nn.Module,
    images: ImageInput | Sequence[ImageInput],
    threshold: float | Sequence[float] = DEFAULT_THRESHOLD,
    batch_size: int = 8,
    amp: bool = False,
    top_k: int | Sequence[int] = DEFAULT_TOP_K,
) -> list[Detections]:
    """Detect objects in images of any size; see `DeformableDETR.predict`.

    Args:
        model: the detector; it runs on the device of its parameters, in eval mode (restored afterwards).
        images: one image or a list (see `deformable_detr.pipeline.decode.to_rgb_image` for the types).
        threshold: keep detections with score >= this, in [0, 1]; one value, or one per image.
        batch_size: images per forward pass (>= 1).
        amp: bfloat16 autocast on the model's device.
        top_k: at most this many detections per image, the best (taken before the threshold);
            one value, or one per image.

    Returns:
        one `Detections` per image, in input order.
    """
    inputs = _as_list(images)
    thresholds = _per_image(threshold, len(inputs), check_threshold, "threshold")
    top_ks = _per_image(top_k, len(inputs), check_top_k, "top_k")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    was_training = model.training
    model.eval()
    try:
        results = []
        for start in range(0, len(inputs), batch_size):
            batch = slice(start, start + batch_size)
            pictures = [to_rgb_image(image) for image in inputs[batch]]
            results.extend(_predict_batch(model, pictures, thresholds[batch], top_ks[batch], amp))
        return results
    finally:
        model.train(was_training)


def _predict_batch(
    model: nn.Module, pictures: list, thresholds: list[float], top_ks: list[int], amp: bool
) -> list[Detections]:
    """One forward pass over RGB PIL images: backbone per size group, transformer on the padded batch."""
    processor = Processor(model.preprocess)
    tensors = [processor.preprocess(picture) for picture in pictures]  # (3, h_i, w_i) each
    out = model_outputs(model, tensors, amp)
    results = []
    for index, picture in enumerate(pictures):
        # (width, height) in the file: a file with a side over 10k px was downscaled while decoding.
        width, height = picture.info.get("original_size", picture.size)
        one = {key: out[key][index : index + 1] for key in ("pred_logits", "pred_boxes")}
        sizes = torch.tensor([[height, width]], device=out["pred_boxes"].device)  # (1, 2) (h, w)
        (found,) = model.postprocess(one, sizes, score_threshold=thresholds[index], top_k=top_ks[index])
        results.append(Detections.from_postprocessed(found, (height, width), model.categories))
    return results


def model_outputs(model: nn.Module, tensors: list[torch.Tensor], amp: bool = False) -> dict:
    """What `predict` postprocesses: the model's outputs for preprocessed images of any sizes.

    Args:
        model: the detector, on its device, in the mode wanted; with a `compiled_inference` runner
            (see `deformable_detr.pipeline.compiled`) that runner computes the outputs.
        tensors: per image, (3, h_i, w_i) normalized pixels.
        amp: bfloat16 autocast on the model's device.

    Returns:
        dict with at least "pred_logits" (B, Lq, K) and "pred_boxes" (B, Lq, 4), images in the order given.
    """
    runner = getattr(model, "compiled_inference", None)
    if runner is not None:
        return runner(tensors, amp=amp)
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        return forward_unpadded(model, tensors)


def forward_unpadded(model: nn.Module, tensors: list[torch.Tensor]) -> dict:
    """The model's outputs for images of different sizes, each exactly as if it ran alone.

    Images of the same size share one backbone pass (no padding at all); the per-level maps are then
    padded and masked for the transformer, whose outputs for an image do not depend on that padding.

    Args:
        model: the detector (`image_features` and `detect`), on its device, in the mode wanted.
        tensors: per image, (3, h_i, w_i) normalized pixels (moved to the model's device here).

    Returns:
        the model's output dict for the batch, images in the order given.
    """
    sources, masks = pad_levels(level_maps(model, tensors))
    return model.detect(sources, masks)


def level_maps(
    model: nn.Module, tensors: list[torch.Tensor], image_features: Callable | None = None
) -> list[list[torch.Tensor]]:
    """Backbone and input projections, once per group of images of the same size (no padding at all).

    Args:
        model: the detector, on its device.
        tensors: per image, (3, h_i, w_i) normalized pixels (moved to the model's device here).
        image_features: what computes a group's maps, (G, 3, h, w) -> (sources, masks) as
            `model.image_features` (the default); e.g. a compiled copy of it.

    Returns:
        per image, per level, (C, H_l_i, W_l_i).
    """
    device = next(model.parameters()).device
    image_features = image_features or model.image_features
    groups: dict[tuple[int, int], list[int]] = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault(tuple(tensor.shape[-2:]), []).append(index)
    per_image: list[list[torch.Tensor]] = [[] for _ in tensors]  # per image, per level (C, H_l, W_l)
    for indices in groups.values():
        batch = torch.stack([tensors[i] for i in indices]).to(device)  # (G, 3, h, w), no padding
        sources, _ = image_features(batch)
        for row, index in enumerate(indices):
            per_image[index] = [source[row] for source in sources]
    return per_image


def pad_levels(
    per_image: list[list[torch.Tensor]], sizes: Sequence[tuple[int, int]] | None = None
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Stack per-image feature maps level by level, zero-padded bottom/right to the largest (or to `sizes`).

    Args:
        per_image: per image, per level, (C, H_l_i, W_l_i).
        sizes: per level, the (H_l, W_l) to pad to, at least the largest map's; None = the largest.

    Returns:
        sources: per level, (B, C, H_l, W_l) with H_l, W_l the maxima over images (or `sizes`);
        masks: per level, (B, H_l, W_l) bool, True = padding.
    """
    sources, masks = [], []
    for level in range(len(per_image[0])):
        maps = [levels[level] for levels in per_image]
        height = max(m.shape[-2] for m in maps)
        width = max(m.shape[-1] for m in maps)
        if sizes is not None:
            if sizes[level][0] < height or sizes[level][1] < width:
                raise ValueError(
                    f"pad_levels: level {level} has maps of up to {(height, width)}, larger than sizes[{level}] = "
                    f"{tuple(sizes[level])}; pass sizes at least as large as every map"
                )
            height, width = sizes[level]
        padded = maps[0].new_zeros((len(maps), maps[0].shape[0], height, width))  # (B, C, H_l, W_l)
        mask = torch.ones((len(maps), height, width), dtype=torch.bool, device=maps[0].device)  # (B, H_l, W_l)
        for index, level_map in enumerate(maps):
            padded[index, :, : level_map.shape[-2], : level_map.shape[-1]] = level_map
            mask[index, : level_map.shape[-2], : level_map.shape[-1]] = False
        sources.append(padded)
        masks.append(mask)
    return sources, masks
