"""`Detector`: what the pipeline needs of a model, and all it uses. `DeformableDETR` and `DETR` implement it.

    isinstance(model, Detector)      # True for both (a runtime check of the members' presence only)

The pipeline (`run.py`, `compiled.py`) and the commands built on it (`predict`, `eval --checkpoint`, `serve`,
`export`) read a detector through these members alone; `deformable_detr.registry` picks the class. Shape
letters as `deformable_detr.ops`: B batch, H x W padded image, H_l x W_l level l, C = d_model, Lq queries,
K classes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch

from deformable_detr.checkpoint.format import CheckpointInfo
from deformable_detr.pipeline.detections import Detections
from deformable_detr.pipeline.processor import PreprocessConfig


@runtime_checkable
class Detector(Protocol):
    """An object detector (an `nn.Module`) as the pipeline sees it.

    Attributes:
        config: its frozen architecture config (`ModelConfig` or `DetrConfig`); `config.to_dict()` is JSON,
            `config.num_classes` is K.
        preprocess: the `PreprocessConfig` its inputs need (resize, normalise, pad).
        categories: [{"id": int, "name": str}] in label order, K entries (label k -> categories[k]).
        checkpoint_info: where the weights came from (`CheckpointInfo`), None for weights built in memory.
        backbone: its image backbone; `backbone.strides` (one stride per returned level) sizes the compiled
            path's shape buckets.
        attention_backend: the deformable-attention operator backend ("auto", ...); None where the model has no
            deformable attention (DETR).
        training: nn.Module's train/eval flag.
    """

    config: Any
    preprocess: PreprocessConfig
    categories: list[dict[str, Any]]
    checkpoint_info: CheckpointInfo | None
    backbone: torch.nn.Module
    attention_backend: str | None
    training: bool

    def forward(self, images: torch.Tensor, padding_mask: torch.Tensor | None = None) -> dict[str, Any]:
        """images (B, 3, H, W) normalized and padded; padding_mask (B, H, W) bool, True = padding ->
        {"pred_logits": (B, Lq, K) or (B, Lq, K + 1) (DETR: last = no object), "pred_boxes": (B, Lq, 4)
        (cx, cy, w, h) in [0, 1] of each image's valid size, "aux_outputs": per earlier decoder layer}."""
        ...

    def image_features(
        self, images: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The part of `forward` that sees pixels: per level, sources (B, C, H_l, W_l) and masks (B, H_l, W_l)
        bool, True = padding. The pipeline runs it per image size, unpadded."""
        ...

    def detect(self, sources: list[torch.Tensor], masks: list[torch.Tensor]) -> dict[str, Any]:
        """The rest of `forward` on (possibly padded) per-level maps of `image_features`; returns as `forward`."""
        ...

    def postprocess(
        self, out: dict[str, Any], target_sizes: torch.Tensor, score_threshold: float = 0.0, top_k: int = 100
    ) -> list[dict[str, torch.Tensor]]:
        """`forward`'s output -> per image {"scores" (N,) descending, "labels" (N,) int64 in 0..K-1, "boxes" (N, 4)
        xyxy in pixels of target_sizes (B, 2) (height, width), "queries" (N,)}, scores >= score_threshold, N <= top_k."""
        ...

    def predict(
        self, images: Any, threshold: float = 0.5, batch_size: int = 8, amp: bool = False, top_k: int = 100
    ) -> list[Detections]:
        """Images of any type and size -> one `Detections` per image (`deformable_detr.pipeline.run.predict`)."""
        ...

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json, model.safetensors, preprocess.json and categories.json into `directory`."""
        ...

    def set_attention_backend(self, name: str) -> Any:
        """Pick the attention operator backend ("auto", "reference", "cpu", "triton"); a no-op where the model
        has no deformable attention (DETR)."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        """nn.Module's: the device the model runs on is its parameters'."""
        ...

    def eval(self) -> Any:
        """nn.Module's: inference mode (dropout off)."""
        ...

    def train(self, mode: bool = True) -> Any:
        """nn.Module's: restores the mode the pipeline found."""
        ...


# Members the pipeline reads that are its own, not the detector's: set by `compiled.compile_inference`.
PIPELINE_ATTRIBUTES = frozenset({"compiled_inference"})
