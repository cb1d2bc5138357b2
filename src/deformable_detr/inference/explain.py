"""Where the model looked: sampling points and attention weights behind detections (paper Fig. 6).

`explain(model, image)` runs one image (alone, unpadded) while the deformable attention modules record
their sampling, and returns plain data (lists and numbers, JSON-ready) that `deformable-detr explain`
draws and the web service sends to the page:

    {"image_size": [H, W],
     "levels": [{"level": l, "size": [H_l, W_l]}],
     "detections": [{"box_xyxy", "label", "name", "score",   (`Detections.to_dict`'s items, plus:)
                     "query", "reference_point": [x, y],
                     "sampling": [{"level": l, "points": [[x, y], ...], "weights": [...], "heads": [...]}]}],
     "pixel": None | {"pixel": [x, y], "level": 0, "query": q, "reference_point": [x, y], "sampling": [...]}}

Everything is in pixels of the original image. A detection's points are the last decoder layer's
cross-attention samples of its query (M heads x P points per level, weights summing to 1 over all
levels); the pixel's are the last encoder layer's self-attention samples of the finest-level feature
pixel under it. Points may fall outside the image (the operator reads zeros there).
"""

from __future__ import annotations

from typing import Any

import torch

from deformable_detr.errors import ConfigError
from deformable_detr.models.deformable_attention import MultiScaleDeformableAttention, recording_sampling
from deformable_detr.pipeline.contract import Detector
from deformable_detr.pipeline.decode import ImageInput, to_rgb_image
from deformable_detr.pipeline.detections import Detections
from deformable_detr.pipeline.processor import Processor, check_threshold
from deformable_detr.pipeline.run import DEFAULT_THRESHOLD, check_top_k


def _sampling(record: dict[str, torch.Tensor], query: int, width: int, height: int) -> tuple[list[float], list[dict]]:
    """(reference point, per-level sampling) of one query in pixels, from a `last_sampling` record."""
    scale = torch.tensor([width, height], dtype=torch.float32)
    reference = record["reference_points"][0, query, 0, :2].float() * scale  # level 0 (x, y) / box centre
    locations = record["sampling_locations"][0, query].float()  # (M, L, P, 2)
    weights = record["attention_weights"][0, query].float()  # (M, L, P)
    heads, levels, points = weights.shape
    head_index = torch.arange(heads).repeat_interleave(points).tolist()
    sampling = []
    for level in range(levels):
        sampling.append(
            {
                "level": level,
                "points": (locations[:, level].reshape(-1, 2) * scale).tolist(),  # (M * P, 2)
                "weights": weights[:, level].reshape(-1).tolist(),
                "heads": head_index,
            }
        )
    return reference.tolist(), sampling


def _parse_pixel(pixel: tuple[float, float] | None, width: int, height: int) -> tuple[float, float] | None:
    if pixel is None:
        return None
    try:
        x, y = (float(v) for v in pixel)
    except (TypeError, ValueError):
        raise ConfigError(f"pixel must be (x, y), got {pixel!r}") from None
    if not (0 <= x < width and 0 <= y < height):
        raise ConfigError(
            f"pixel ({x:g}, {y:g}) is outside the {width}x{height} image; give 0 <= x < {width}, 0 <= y < {height}"
        )
    return x, y


@torch.inference_mode()
def explain(
    model: Detector,
    image: ImageInput,
    top_k: int = 5,
    threshold: float = DEFAULT_THRESHOLD,
    pixel: tuple[float, float] | None = None,
    amp: bool = False,
) -> dict[str, Any]:
    """Sampling points and attention weights of the top detections (and optionally of one pixel).

    Args:
        model: a Deformable DETR (runs on its parameters' device, in eval mode; the mode is restored).
        image: a path, PIL image, numpy (H, W, 3) uint8 array or (3, H, W) tensor (see `to_rgb_image`).
        top_k: explain at most this many detections, best first (one per query: a query's best class).
        threshold: only detections scoring >= this (the model's `postprocess` applies it).
        pixel: (x, y) in pixels of the original image: also explain the encoder at this pixel.
        amp: bfloat16 autocast for the forward pass on the model's device (points and weights come back float32).

    Returns:
        plain data, see the module docstring.

    Raises:
        ConfigError: a model without deformable attention (DETR: it has no sampling points to show).
    """
    if not any(isinstance(module, MultiScaleDeformableAttention) for module in model.modules()):
        raise ConfigError(
            f"explain: {type(model).__name__} has no sampling points (no deformable attention: "
            f"{model.config.describe()}); explain needs a Deformable DETR model"
        )
    top_k, threshold = check_top_k(top_k), check_threshold(threshold)
    picture = to_rgb_image(image)
    width, height = picture.info.get("original_size", picture.size)
    pixel = _parse_pixel(pixel, width, height)
    device = next(model.parameters()).device
    batch = Processor(model.preprocess).preprocess(picture)[None].to(device)  # (1, 3, h, w), no padding
    was_training = model.training
    model.eval()
    try:
        transformer = model.transformer
        with (
            recording_sampling([transformer.encoder]) as encoder_attentions,
            recording_sampling([transformer.decoder]) as decoder_attentions,
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp),
        ):
            out = model(batch)
    finally:
        model.train(was_training)
    encoder_record, decoder_record = encoder_attentions[-1].last_sampling, decoder_attentions[-1].last_sampling

    logits = out["pred_logits"]  # (1, Lq, K)
    every_pair = logits.shape[1] * logits.shape[2]  # every (query, class): a query's best class comes first
    (found,) = model.postprocess(out, torch.tensor([[height, width]]), score_threshold=threshold, top_k=every_pair)
    seen: set[int] = set()
    first = [i for i, query in enumerate(found["queries"].tolist()) if not (query in seen or seen.add(query))]
    best = {key: value[first[:top_k]] for key, value in found.items()}  # one detection per query, its best class
    items = Detections.from_postprocessed(best, (height, width), model.categories).to_dict()["detections"]
    detections = []
    for item, query in zip(items, best["queries"].tolist()):
        reference, sampling = _sampling(decoder_record, query, width, height)
        detections.append({**item, "query": query, "reference_point": reference, "sampling": sampling})
    shapes = encoder_record["spatial_shapes"].tolist()
    result = {
        "image_size": [height, width],
        "levels": [{"level": level, "size": size} for level, size in enumerate(shapes)],
        "detections": detections,
        "pixel": None,
    }
    if pixel is not None:
        level_height, level_width = shapes[0]
        row = min(int(pixel[1] / height * level_height), level_height - 1)
        column = min(int(pixel[0] / width * level_width), level_width - 1)
        query = row * level_width + column  # level 0 starts the flattened sequence
        reference, sampling = _sampling(encoder_record, query, width, height)
        result["pixel"] = {
            "pixel": list(pixel),
            "level": 0,
            "query": query,
            "reference_point": reference,
            "sampling": sampling,
        }
    return result
