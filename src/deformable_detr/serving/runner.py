"""The model side of the server: load a checkpoint, detect objects in a batch of images, explain one image.

Every method of `ModelRunner` runs on the server's one model thread (see `batching.py`), never on the
event loop, and never on two threads at once.

    runner = load_runner(ServeConfig(checkpoint="run/best.pth"))   # or ModelRunner(model)
    per_image = runner.detect([pil_a, pil_b])      # all top-100 detections of each image, best first
    explained = runner.explain(pil_a, top=5, threshold=0.3)
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from PIL import Image

from deformable_detr.models.preprocess import preprocess_image
from deformable_detr.serving.config import ServeConfig

TOP_K = 100  # detections kept per image before any threshold, as the reference PostProcess


def _arguments(attention, args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
    """The reference points and spatial shapes of a `MultiScaleDeformableAttention` call, however passed."""
    bound = inspect.signature(attention.forward).bind(*args, **kwargs).arguments
    return {"reference_points": bound["reference_points"], "spatial_shapes": bound["spatial_shapes"]}


def _as_dicts(detections) -> list[dict]:
    """A `Detections` as JSON-ready dicts, best first."""
    return [{"box": box, "score": score, "label": label, "category_id": category_id, "category": name}
            for box, score, label, category_id, name in zip(detections.boxes.tolist(), detections.scores.tolist(),
                                                            detections.labels.tolist(), detections.category_ids,
                                                            detections.names)]


def _describe_variant(config) -> str:
    levels = "single-scale" if config.num_feature_levels == 1 else f"multi-scale ({config.num_feature_levels} levels)"
    parts = [f"{config.backbone}", levels + (" DC5" if config.dilation else "")]
    if config.with_box_refine:
        parts.append("iterative box refinement")
    if config.two_stage:
        parts.append("two-stage")
    return ", ".join(parts)


class ModelRunner:
    """A detector in eval mode, with the preprocessing and categories it carries.

    Args:
        model: a `DeformableDETR` in eval mode (`model.preprocess`, `model.categories` set), on its device.
        amp: run the forward under bfloat16 autocast.
    """

    def __init__(self, model, amp: bool = False):
        self.model = model
        self.amp = amp

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def info(self) -> dict[str, Any]:
        """What GET /v1/model reports: variant, architecture, categories, preprocessing, device, source."""
        config = self.model.config
        source = getattr(self.model, "checkpoint_info", None)
        return {
            "variant": _describe_variant(config),
            "config": config.to_dict(),
            "num_classes": config.num_classes,
            "categories": self.model.categories,
            "preprocess": self.model.preprocess.to_dict(),
            "device": str(self.device),
            "amp": self.amp,
            "attention_backend": self.model.attention_backend,
            "source": {"format": source.format, "description": source.description} if source else None,
        }

    def detect(self, images: list[Image.Image]) -> list[list[dict]]:
        """Detect objects in each image, all in one `model.predict` call (equal to one image at a time up
        to float rounding: see `DeformableDETR.predict`).

        Args:
            images: RGB PIL images of any sizes.

        Returns:
            per image, its top-100 detections, best first: {"box": [x0, y0, x1, y1] in the original
            image's pixels, "score" in (0, 1), "label" 0..K-1, "category_id", "category"}.
        """
        found = self.model.predict(images, threshold=0.0, batch_size=max(1, len(images)), amp=self.amp)
        return [_as_dicts(detections) for detections in found]

    def explain(self, image: Image.Image, top: int, threshold: float) -> dict[str, Any]:
        """Where the last decoder layer looked for each of the `top` best detections scoring >= threshold.

        Returns:
            {"width", "height", "levels": [{"level": l, "height": H_l, "width": W_l}, ...],
             "detections": [detection (as `detect`) + "query": index, "reference_point": [x, y] pixels,
             "sampling": [{"level": l, "points": [[x, y], ...] pixels, "weights": [...],
             "heads": [...]}, ...]]}; M * P points per level, the weights of one detection summing to M
             (each head's attention sums to 1 over its L * P points).
        """
        captured: dict[str, torch.Tensor] = {}
        attention = self.model.transformer.decoder.layers[-1].cross_attn
        hooks = [
            attention.register_forward_pre_hook(
                lambda module, args, kwargs: captured.update(_arguments(module, args, kwargs)), with_kwargs=True),
            attention.sampling_offsets.register_forward_hook(
                lambda module, args, output: captured.update(offsets=output)),
            attention.attention_weights.register_forward_hook(
                lambda module, args, output: captured.update(weights=output)),
        ]
        try:
            inputs = preprocess_image(image, self.model.preprocess)[None].to(self.device)  # (1, 3, h, w)
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)
            with torch.inference_mode(), autocast:
                out = self.model(inputs)
        finally:
            for hook in hooks:
                hook.remove()
        locations, weights = self._sampling(attention, captured)  # (Lq, M, L, P, 2), (Lq, M, L, P)
        logits = out["pred_logits"][0]
        found = self.model.postprocess(out, torch.tensor([[image.height, image.width]], device=logits.device))[0]
        detections = [{"box": box, "score": score, "label": label, "category_id": self.model.categories[label]["id"],
                       "category": self.model.categories[label]["name"]}
                      for box, score, label in zip(found["boxes"].float().tolist(), found["scores"].float().tolist(),
                                                   found["labels"].tolist())]
        probabilities = logits.float().sigmoid().flatten()  # (Lq * K,), ranked as postprocess ranks them
        ranked = probabilities.topk(min(TOP_K, probabilities.numel())).indices.tolist()
        scale = torch.tensor([image.width, image.height], dtype=torch.float32)
        reference = captured["reference_points"][0, :, 0, :2].float().cpu() * scale  # (Lq, 2) pixels, level 0
        explained = []
        for detection, flat_index in zip(detections[:top], ranked):
            if detection["score"] < threshold:
                break
            query = flat_index // logits.shape[-1]
            sampling = []
            for level in range(locations.shape[2]):
                points = (locations[query, :, level] * scale).reshape(-1, 2)  # (M * P, 2) pixels
                heads = torch.arange(locations.shape[1])[:, None].expand(-1, locations.shape[3]).reshape(-1)
                sampling.append({"level": level, "points": points.tolist(),
                                 "weights": weights[query, :, level].reshape(-1).tolist(), "heads": heads.tolist()})
            explained.append({**detection, "query": query, "reference_point": reference[query].tolist(),
                              "sampling": sampling})
        shapes = captured["spatial_shapes"].tolist()
        return {"width": image.width, "height": image.height,
                "levels": [{"level": level, "height": h, "width": w} for level, (h, w) in enumerate(shapes)],
                "detections": explained}

    @staticmethod
    def _sampling(attention, captured: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampling locations (Lq, M, L, P, 2) in [0, 1] and softmaxed weights (Lq, M, L, P) of image 0,
        recomputed from the captured projections exactly as `MultiScaleDeformableAttention.forward`."""
        M, L, P = attention.n_heads, attention.n_levels, attention.n_points
        offsets = captured["offsets"][0].float().view(-1, M, L, P, 2)  # (Lq, M, L, P, 2)
        weights = captured["weights"][0].float().view(-1, M, L * P).softmax(-1).view(-1, M, L, P)
        reference = captured["reference_points"][0].float()  # (Lq, L, 2 or 4)
        if reference.shape[-1] == 2:
            normalizer = captured["spatial_shapes"].flip(-1).float()  # (L, 2) as (W_l, H_l)
            locations = reference[:, None, :, None, :] + offsets / normalizer[None, None, :, None, :]
        else:
            locations = reference[:, None, :, None, :2] + offsets / P * reference[:, None, :, None, 2:] * 0.5
        return locations.cpu(), weights.cpu()


def load_runner(config: ServeConfig) -> ModelRunner:
    """Load `config.checkpoint` (any format `deformable_detr.load` reads) onto `config.device`."""
    from deformable_detr.inference.loader import load

    return ModelRunner(load(config.checkpoint, device=config.device, attention_backend=config.attention_backend),
                       amp=config.amp)
