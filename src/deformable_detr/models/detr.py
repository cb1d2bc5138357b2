"""DETR (Carion et al., ECCV 2020): the baseline Deformable DETR is measured against, in the same framework.

ResNet C5 (optionally DC5) -> 1x1 projection -> post-norm transformer encoder/decoder with global
multi-head attention (sine positions added to queries and keys at every layer) -> learned object
queries -> softmax classifier over K classes + "no object" and a 3-layer box MLP, per decoder layer.

    config = DetrConfig.preset("detr-r50")
    model = DETR(config)
    out = model(images, padding_mask)                 # see `DETR.forward`
    detections = model.postprocess(out, target_sizes)

Its config and presets are in `detr_config.py`, its encoder/decoder in `detr_transformer.py`; its loss is
`training.detr_criterion.DetrCriterion` (softmax cross-entropy with no-object weight 0.1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from deformable_detr.checkpoint.format import CheckpointInfo
from deformable_detr.checkpoint.state_dict import load_state_dict_strict
from deformable_detr.errors import ConfigError
from deformable_detr.models.backbone import Backbone
from deformable_detr.models.detr_config import DetrConfig
from deformable_detr.models.detr_transformer import DetrTransformer
from deformable_detr.models.input_checks import check_model_input
from deformable_detr.models.mlp import MLP
from deformable_detr.models.position_encoding import sine_position_encoding
from deformable_detr.models.pretrained import from_pretrained, save_pretrained
from deformable_detr.ops import BACKENDS
from deformable_detr.pipeline.categories import check_categories, default_categories
from deformable_detr.pipeline.detections import Detections
from deformable_detr.pipeline.processor import PreprocessConfig, check_target_sizes, detections_in_pixels
from deformable_detr.pipeline.run import DEFAULT_THRESHOLD, DEFAULT_TOP_K, predict


class DETR(nn.Module):
    """The DETR detector, from one `DetrConfig`.

    Args:
        config: the architecture.
        backbone: a module with DETR's backbone contract (`forward(images, padding_mask)` -> [(C5 map, mask)]
            and `num_channels`); None builds the config's ResNet.
        preprocess: the input preprocessing the model expects (default: ImageNet mean/std, 800/1333).
        categories: [{"id", "name"}] in label order (default: COCO names for 91 classes, else "class_1", ...).

    `checkpoint_info` says where the weights came from (a `CheckpointInfo` set by `deformable_detr.load`; None
    for weights built here or loaded with `from_state_dict`).
    """

    config_class = DetrConfig  # what its config.json holds (`from_pretrained` reads it with this class)

    def __init__(
        self,
        config: DetrConfig,
        backbone: nn.Module | None = None,
        preprocess: PreprocessConfig | None = None,
        categories: list[dict] | None = None,
    ):
        super().__init__()
        self.config = config
        self.preprocess = preprocess or PreprocessConfig()
        categories = default_categories(config.num_classes) if categories is None else categories
        self.categories = check_categories(categories, config.num_classes)
        self.checkpoint_info: CheckpointInfo | None = None  # set by the loaders
        self.backbone = backbone or Backbone(
            config.backbone,
            config.resnet_depths,
            config.backbone_base_width,
            return_interm_layers=False,
            dilation=config.dilation,
            frozen_bn=config.backbone_frozen_bn,
            train_backbone=config.train_backbone,
            freeze_stem_and_layer1=config.freeze_stem_and_layer1,
        )
        self.input_proj = nn.Conv2d(self.backbone.num_channels[-1], config.d_model, 1)
        self.transformer = DetrTransformer(
            config.d_model,
            config.n_heads,
            config.num_encoder_layers,
            config.num_decoder_layers,
            config.dim_feedforward,
            config.dropout,
        )
        self.query_embed = nn.Embedding(config.num_queries, config.d_model)
        self.class_head = nn.Linear(config.d_model, config.num_classes + 1)  # last logit = no object
        self.box_head = MLP(config.d_model, config.d_model, 4, 3)

    @property
    def attention_backend(self) -> None:
        """None: DETR has no deformable attention (its attention is `nn.MultiheadAttention`)."""
        return None

    def set_attention_backend(self, name: str) -> DETR:
        """Accepted for interface parity with `DeformableDETR`; DETR has no deformable attention, so no effect."""
        if name not in BACKENDS:
            raise ConfigError(f"attention backend {name!r} is unknown; choose one of {', '.join(BACKENDS)}")
        return self

    def forward(
        self, images: torch.Tensor, padding_mask: torch.Tensor | None = None, denoising: Any = None
    ) -> dict[str, Any]:
        """Detect objects.

        Args:
            images: (B, 3, H, W) normalized, padded to a common size.
            padding_mask: (B, H, W) bool, True = padding; None = every pixel valid.
            denoising: must be None (accepted for the training loop's common call; DETR has no denoising queries).

        Returns:
            dict with
            "pred_logits": (B, Lq, K + 1) raw logits of a softmax over K classes and "no object" (last);
            "pred_boxes": (B, Lq, 4) (cx, cy, w, h) in [0, 1], normalized by each image's valid size;
            "aux_outputs": list over decoder layers 0..n-2 of {"pred_logits", "pred_boxes"}.
        """
        if denoising is not None:
            raise ValueError("DETR has no denoising queries; train it with denoising off")
        return self.detect(*self.image_features(images, padding_mask))

    def image_features(
        self, images: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Backbone and input projection: ([source (B, C, H_5, W_5)], [mask (B, H_5, W_5) bool, True = padding])."""
        check_model_input(images, padding_mask)
        if padding_mask is None:
            padding_mask = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool, device=images.device)
        feature, mask = self.backbone(images, padding_mask)[-1]  # (B, C5, H_5, W_5), (B, H_5, W_5)
        return [self.input_proj(feature)], [mask]

    def detect(self, sources: list[torch.Tensor], masks: list[torch.Tensor]) -> dict[str, Any]:
        """Transformer and heads on the one-level output of `image_features` (which may be padded); returns as `forward`."""
        (source,), (mask,) = sources, masks
        # DETR's positions have no half-pixel offset (Deformable DETR's do)
        pos = sine_position_encoding(mask, self.config.d_model // 2, offset=0.0).to(source.dtype)  # (B, C, H_5, W_5)
        hidden = self.transformer(source, mask, pos, self.query_embed.weight)  # (n_dec, B, Lq, C)
        logits = self.class_head(hidden)  # (n_dec, B, Lq, K + 1)
        boxes = self.box_head(hidden).sigmoid()  # (n_dec, B, Lq, 4)
        return {
            "pred_logits": logits[-1],
            "pred_boxes": boxes[-1],
            "aux_outputs": [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])],
        }

    def postprocess(
        self, out: dict[str, Any], target_sizes: torch.Tensor, score_threshold: float = 0.0, top_k: int = 100
    ) -> list[dict[str, torch.Tensor]]:
        """Detections in pixels; see `detr_postprocess`."""
        return detr_postprocess(out, target_sizes, score_threshold=score_threshold, top_k=top_k)

    def predict(
        self,
        images: Any,
        threshold: float = DEFAULT_THRESHOLD,
        batch_size: int = 8,
        amp: bool = False,
        top_k: int = DEFAULT_TOP_K,
    ) -> list[Detections]:
        """Detect objects in images of any type and size with the model's preprocessing; as `DeformableDETR.predict`."""
        return predict(self, images, threshold=threshold, top_k=top_k, batch_size=batch_size, amp=amp)

    @classmethod
    def from_state_dict(
        cls,
        config: DetrConfig,
        state_dict: Mapping[str, torch.Tensor],
        source: str = "state dict",
        preprocess: PreprocessConfig | None = None,
        categories: list[dict[str, Any]] | None = None,
        attention_backend: str | None = None,
        backbone: nn.Module | None = None,
    ) -> DETR:
        """Build for `config`, load `state_dict` strictly (one error listing every bad key), eval mode, on the CPU."""
        model = cls(config, backbone=backbone, preprocess=preprocess, categories=categories)
        load_state_dict_strict(model, state_dict, source)
        if attention_backend is not None:
            model.set_attention_backend(attention_backend)
        return model.eval()

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, attention_backend: str | None = None) -> DETR:
        """Load a directory written by `save_pretrained`; other formats load with `deformable_detr.load`."""
        return from_pretrained(directory, cls, attention_backend=attention_backend)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json (with "architecture": "detr"), model.safetensors, preprocess.json and categories.json."""
        save_pretrained(self, directory)


@torch.no_grad()
def detr_postprocess(
    out: dict[str, Any], target_sizes: torch.Tensor, score_threshold: float = 0.0, top_k: int = 100
) -> list[dict[str, torch.Tensor]]:
    """One detection per query, as DETR's PostProcess: the best object class of the softmax (no-object excluded).

    Args:
        out: "pred_logits" (B, Lq, K + 1) with no-object last; "pred_boxes" (B, Lq, 4) (cx, cy, w, h) in [0, 1].
        target_sizes: (B, 2) (height, width) in pixels that the normalized boxes are scaled to.
        score_threshold: keep only detections with score >= this.
        top_k: at most this many detections per image, the highest-scoring.

    Returns:
        per image, {"scores": (N,) float in (0, 1), descending; "labels": (N,) int64 in 0..K-1;
        "boxes": (N, 4) float (x0, y0, x1, y1) in pixels; "queries": (N,) int64 in 0..Lq-1}.
    """
    logits, boxes_cxcywh = out["pred_logits"], out["pred_boxes"]
    check_target_sizes(target_sizes, logits.shape[0])
    probabilities = logits.float().softmax(-1)[..., :-1]  # (B, Lq, K): no-object dropped after the softmax
    scores, labels = probabilities.max(-1)  # (B, Lq)
    scores, order = scores.sort(dim=1, descending=True)
    order = order[:, :top_k]
    scores, labels = scores[:, :top_k], torch.gather(labels, 1, order)  # (B, k)
    return detections_in_pixels(scores, labels, boxes_cxcywh, order, target_sizes, score_threshold)
