"""The model side of the server: load a checkpoint, detect objects in a batch of images, explain one image.

Every method of `ModelRunner` runs on the server's one model thread (see `batching.py`), never on the
event loop, and never on two threads at once.

    runner = load_runner(ServeConfig(checkpoint="run/best.pth"))
    per_image = runner.detect([pil_a, pil_b])      # all top-100 detections of each image, best first
    explained = runner.explain(pil_a, top=5, threshold=0.3)
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from deformable_detr.data.transforms import ToTensorNormalize, resize
from deformable_detr.models.preprocess import PreprocessConfig, default_categories
from deformable_detr.serving.config import ServeConfig

TOP_K = 100  # detections kept per image before any threshold, as the reference PostProcess


def _arguments(attention, args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
    """The reference points and spatial shapes of a `MultiScaleDeformableAttention` call, however passed."""
    bound = inspect.signature(attention.forward).bind(*args, **kwargs).arguments
    return {"reference_points": bound["reference_points"], "spatial_shapes": bound["spatial_shapes"]}


def _describe_variant(config) -> str:
    levels = "single-scale" if config.num_feature_levels == 1 else f"multi-scale ({config.num_feature_levels} levels)"
    parts = [f"{config.backbone}", levels + (" DC5" if config.dilation else "")]
    if config.with_box_refine:
        parts.append("iterative box refinement")
    if config.two_stage:
        parts.append("two-stage")
    return ", ".join(parts)


class ModelRunner:
    """A detector in eval mode with its preprocessing and category names.

    Args:
        model: a `DeformableDETR` in eval mode, on `device`.
        preprocess: resizing and normalisation of its input.
        categories: label-ordered [{"id": int, "name": str}].
        device: where the model lives. amp: run the forward under bfloat16 autocast.
        source: what was loaded (shown by GET /v1/model).
    """

    def __init__(self, model, preprocess: PreprocessConfig, categories: list[dict], device: str = "cpu",
                 amp: bool = False, source: str = ""):
        self.model = model
        self.preprocess = preprocess
        self.categories = categories
        self.device = torch.device(device)
        self.amp = amp
        self.source = source
        self._normalize = ToTensorNormalize(preprocess.mean, preprocess.std)

    def info(self) -> dict[str, Any]:
        """What GET /v1/model reports: variant, architecture, categories, preprocessing, device."""
        config = self.model.config
        return {
            "variant": _describe_variant(config),
            "config": config.to_dict(),
            "num_classes": config.num_classes,
            "categories": self.categories,
            "preprocess": self.preprocess.to_dict(),
            "device": str(self.device),
            "amp": self.amp,
            "source": self.source,
        }

    def _input(self, image: Image.Image) -> torch.Tensor:
        """RGB image -> (3, h, w) float32 normalized, the shorter side resized as `preprocess` says."""
        empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
        resized, _ = resize(image, empty, self.preprocess.min_size, self.preprocess.max_size)
        tensor, _ = self._normalize(resized, empty)
        return tensor

    def _forward(self, inputs: torch.Tensor) -> dict[str, Any]:
        """(B, 3, h, w) images of one size -> model outputs; pads to `size_divisibility` and masks it."""
        batch, _, height, width = inputs.shape
        divisor = self.preprocess.size_divisibility
        padded_h = -(-height // divisor) * divisor if divisor else height
        padded_w = -(-width // divisor) * divisor if divisor else width
        images = inputs.new_zeros(batch, 3, padded_h, padded_w)  # (B, 3, H, W)
        images[:, :, :height, :width] = inputs
        padding_mask = torch.ones(batch, padded_h, padded_w, dtype=torch.bool)  # (B, H, W)
        padding_mask[:, :height, :width] = False
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)
        with torch.inference_mode(), autocast:
            return self.model(images.to(self.device), padding_mask.to(self.device))

    def _detections(self, logits: torch.Tensor, boxes_cxcywh: torch.Tensor, width: int, height: int) -> list[dict]:
        """One image's top-100 (query, class) pairs as JSON-ready dicts, best first.

        logits (Lq, K); boxes_cxcywh (Lq, 4) in [0, 1]; width, height of the original image in pixels.
        """
        detections = self.model.postprocess({"pred_logits": logits[None], "pred_boxes": boxes_cxcywh[None]},
                                            torch.tensor([[height, width]], device=logits.device), top_k=TOP_K)[0]
        return [{"box": box, "score": score, "label": label, "category_id": self.categories[label]["id"],
                 "category": self.categories[label]["name"]}
                for box, score, label in zip(detections["boxes"].tolist(), detections["scores"].tolist(),
                                             detections["labels"].tolist())]

    def detect(self, images: list[Image.Image]) -> list[list[dict]]:
        """Detect objects in each image; the result of an image does not depend on the others.

        Images whose resized sizes are equal run as one batch; different sizes run as separate
        batches, so no image is ever padded by its neighbours (padding would change the ResNet's
        and GroupNorm's output near the border).

        Args:
            images: RGB PIL images of any sizes.

        Returns:
            per image, its top-100 detections, best first: {"box": [x0, y0, x1, y1] in the original
            image's pixels, "score" in (0, 1), "label" 0..K-1, "category_id", "category"}.
        """
        inputs = [self._input(image) for image in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for index, tensor in enumerate(inputs):
            groups.setdefault(tuple(tensor.shape[-2:]), []).append(index)
        results: list[list[dict]] = [[] for _ in images]
        for indices in groups.values():
            out = self._forward(torch.stack([inputs[i] for i in indices]))
            for row, index in enumerate(indices):
                results[index] = self._detections(out["pred_logits"][row], out["pred_boxes"][row],
                                                  images[index].width, images[index].height)
        return results

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
            out = self._forward(self._input(image)[None])
        finally:
            for hook in hooks:
                hook.remove()
        locations, weights = self._sampling(attention, captured)  # (Lq, M, L, P, 2), (Lq, M, L, P)
        logits = out["pred_logits"][0]
        detections = self._detections(logits, out["pred_boxes"][0], image.width, image.height)
        probabilities = logits.float().sigmoid().flatten()  # (Lq * K,), the order postprocess ranks
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
    """Load `config.checkpoint` onto `config.device` as a `ModelRunner`.

    Reads a training checkpoint (checkpoint.pth / best.pth, or its run folder) or a `save_pretrained`
    directory; the preprocessing and categories come from the file where it has them.
    """
    from deformable_detr.models.detector import DeformableDETR
    from deformable_detr.training.checkpoint import load_trained_model

    path = Path(config.checkpoint)
    if path.is_dir() and (path / "config.json").is_file():
        model = DeformableDETR.from_pretrained(path).to(config.device)
        preprocess = getattr(model, "preprocess", None) or PreprocessConfig()
        categories = getattr(model, "categories", None) or default_categories(model.config.num_classes)
    else:
        if path.is_dir():
            path = next((path / name for name in ("best.pth", "checkpoint.pth") if (path / name).is_file()), path)
        model, train_config, categories = load_trained_model(path, config.device)
        preprocess = getattr(model, "preprocess", None) or PreprocessConfig(
            min_size=train_config.val_size or max(train_config.train_scales), max_size=train_config.max_size)
    if config.attention_backend is not None:
        for module in model.modules():
            if hasattr(module, "backend"):
                module.backend = config.attention_backend
    return ModelRunner(model.eval(), preprocess, categories, config.device, config.amp, source=str(path))
