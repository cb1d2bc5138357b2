"""DETR (Carion et al., ECCV 2020): the baseline Deformable DETR is measured against, in the same framework.

ResNet C5 (optionally DC5) -> 1x1 projection -> post-norm transformer encoder/decoder with global
multi-head attention (sine positions added to queries and keys at every layer) -> learned object
queries -> softmax classifier over K classes + "no object" and a 3-layer box MLP, per decoder layer.

    config = DetrConfig.preset("detr-r50")
    model = DETR(config)
    out = model(images, padding_mask)                 # see `DETR.forward`
    detections = model.postprocess(out, target_sizes)

Its loss is `training.detr_criterion.DetrCriterion` (softmax cross-entropy with no-object weight 0.1).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deformable_detr.checkpoint.format import CheckpointInfo
from deformable_detr.checkpoint.state_dict import load_state_dict_strict
from deformable_detr.errors import ConfigError
from deformable_detr.models.backbone import RESNETS, Backbone
from deformable_detr.models.config import config_from_dict, config_to_dict
from deformable_detr.models.input_checks import check_model_input
from deformable_detr.models.mlp import MLP
from deformable_detr.models.position_encoding import sine_position_encoding
from deformable_detr.models.pretrained import from_pretrained, save_pretrained
from deformable_detr.ops import BACKENDS
from deformable_detr.pipeline.categories import check_categories, default_categories
from deformable_detr.pipeline.detections import Detections
from deformable_detr.pipeline.processor import PreprocessConfig, check_target_sizes, detections_in_pixels
from deformable_detr.pipeline.run import DEFAULT_THRESHOLD, DEFAULT_TOP_K, predict
from deformable_detr.util.config_fields import check_fields

ARCHITECTURE = "detr"


@dataclass(frozen=True)
class DetrConfig:
    """Architecture of a DETR detector. Defaults are DETR R50 (COCO: 42.0 AP after 500 epochs, 41M params).

    architecture: always "detr"; saved with the config so a checkpoint says which model class to build
        (a `ModelConfig` has no such field and means Deformable DETR).
    Backbone (as `ModelConfig`): backbone, backbone_depths, backbone_base_width, backbone_frozen_bn,
        train_backbone, freeze_stem_and_layer1, dilation (DC5: C5 at stride 16).
    Transformer: d_model, n_heads, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout
        (DETR: 256, 8, 6, 6, 2048, 0.1), post-norm layers with global attention.
    Detection: num_queries learned queries (DETR: 100); num_classes K object classes (the classifier
        has K + 1 outputs, the last is "no object").
    """

    architecture: str = ARCHITECTURE
    backbone: str = "resnet50"
    backbone_depths: tuple[int, int, int, int] | None = None
    backbone_base_width: int = 64
    backbone_frozen_bn: bool = True
    train_backbone: bool = True
    freeze_stem_and_layer1: bool = True
    dilation: bool = False
    d_model: int = 256
    n_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    num_queries: int = 100
    num_classes: int = 91

    def __post_init__(self) -> None:
        check_fields(self)
        if self.architecture != ARCHITECTURE:
            raise ConfigError(f"DetrConfig.architecture={self.architecture!r} must be {ARCHITECTURE!r}")
        if self.backbone not in RESNETS:
            raise ConfigError(f"backbone={self.backbone!r} is unknown; choose one of {', '.join(RESNETS)}")
        if self.backbone_depths is not None:
            depths = tuple(self.backbone_depths)
            if len(depths) != 4 or any(not isinstance(d, int) or d < 1 for d in depths):
                raise ConfigError(
                    f"backbone_depths={self.backbone_depths!r} must be 4 positive ints (blocks of layer1..layer4)"
                )
            object.__setattr__(self, "backbone_depths", depths)
        for name in (
            "backbone_base_width",
            "d_model",
            "n_heads",
            "num_encoder_layers",
            "num_decoder_layers",
            "dim_feedforward",
            "num_queries",
            "num_classes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.d_model % 2 or self.d_model % self.n_heads:
            raise ConfigError(f"d_model={self.d_model} must be even and divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout} must be in [0, 1)")

    @property
    def resnet_depths(self) -> tuple[int, int, int, int]:
        """Blocks per stage actually built: `backbone_depths`, or the named ResNet's."""
        return self.backbone_depths or RESNETS[self.backbone][1]

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DetrConfig:
        """The named preset (see `DETR_PRESETS`), with any fields replaced by `overrides`."""
        if name not in DETR_PRESETS:
            raise ConfigError(f"unknown DETR preset {name!r}; choose one of {', '.join(DETR_PRESETS)}")
        return dataclasses.replace(DETR_PRESETS[name](), **overrides)

    def describe(self) -> str:
        """The variant in words, e.g. "DETR, resnet50 DC5, single-scale global attention"."""
        return f"DETR, {self.backbone}{' DC5' if self.dilation else ''}, single-scale global attention"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field (with `"architecture": "detr"`)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DetrConfig:
        """Inverse of `to_dict`; missing fields take their defaults, unknown ones raise ConfigError."""
        return config_from_dict(cls, values)


def detr_r50() -> DetrConfig:
    """DETR R50: 42.0 AP on COCO val2017 (500 epochs), 41M params."""
    return DetrConfig()


def detr_r50_dc5() -> DetrConfig:
    """DETR-DC5 R50 (C5 at stride 16): 43.3 AP on COCO val2017 (500 epochs), 35.3 AP after 50 epochs; 41M params."""
    return DetrConfig(dilation=True)


def detr_r101() -> DetrConfig:
    """DETR R101: 43.5 AP on COCO val2017 (500 epochs), 60M params."""
    return DetrConfig(backbone="resnet101")


def detr_tiny() -> DetrConfig:
    """The width, depth and backbone of Deformable DETR's `tiny` preset: 1-block ResNet-18 of widths 32-256
    (trainable BatchNorm), d_model 64, 4 heads, 2+2 layers, 50 queries. The FFN is twice as wide (512), as
    DETR's 2048 is twice Deformable DETR's 1024; the parameter count is then within 10 % of `tiny`'s."""
    return DetrConfig(
        backbone="resnet18",
        backbone_depths=(1, 1, 1, 1),
        backbone_base_width=32,
        backbone_frozen_bn=False,
        freeze_stem_and_layer1=False,
        d_model=64,
        n_heads=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=512,
        num_queries=50,
    )


def detr_demo() -> DetrConfig:
    """`detr-tiny` sized like Deformable DETR's `demo` preset: 30 queries, no dropout, 6 classes (synthetic shapes)."""
    return dataclasses.replace(detr_tiny(), num_queries=30, dropout=0.0, num_classes=6)


DETR_PRESETS: dict[str, Callable[[], DetrConfig]] = {
    "detr-r50": detr_r50,
    "detr-r50-dc5": detr_r50_dc5,
    "detr-r101": detr_r101,
    "detr-tiny": detr_tiny,
    "detr-demo": detr_demo,
}


class EncoderLayer(nn.Module):
    """Post-norm: x = norm1(x + attn(x + pos, x + pos, x)); x = norm2(x + ffn(x))."""

    def __init__(self, d_model: int, n_heads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """src, pos (B, S, C); padding_mask (B, S) bool True = padding -> (B, S, C)."""
        query = src + pos
        attended = self.self_attn(query, query, src, key_padding_mask=padding_mask, need_weights=False)[0]
        src = self.norm1(src + self.dropout(attended))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class DecoderLayer(nn.Module):
    """Post-norm: self-attention among queries, cross-attention to the encoder memory, FFN."""

    def __init__(self, d_model: int, n_heads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm_self_attn, self.norm_cross_attn, self.norm_ffn = (nn.LayerNorm(d_model) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        target: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        padding_mask: torch.Tensor,
    ) -> torch.Tensor:
        """target, query_pos (B, Lq, C); memory, pos (B, S, C); padding_mask (B, S) -> (B, Lq, C)."""
        query = target + query_pos
        attended = self.self_attn(query, query, target, need_weights=False)[0]
        target = self.norm_self_attn(target + self.dropout(attended))
        attended = self.cross_attn(
            target + query_pos, memory + pos, memory, key_padding_mask=padding_mask, need_weights=False
        )[0]
        target = self.norm_cross_attn(target + self.dropout(attended))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(target))))
        return self.norm_ffn(target + self.dropout(ffn))


class Encoder(nn.Module):
    """A stack of post-norm encoder layers (no final norm, as DETR)."""

    def __init__(self, num_layers: int, layer: EncoderLayer):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, src: torch.Tensor, pos: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """src, pos (B, S, C); padding_mask (B, S) -> memory (B, S, C)."""
        for layer in self.layers:
            src = layer(src, pos, padding_mask)
        return src


class Decoder(nn.Module):
    """A stack of post-norm decoder layers; the shared final LayerNorm is applied to every layer's output."""

    def __init__(self, num_layers: int, layer: DecoderLayer, d_model: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self, query_pos: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, padding_mask: torch.Tensor
    ) -> torch.Tensor:
        """query_pos (B, Lq, C); memory, pos (B, S, C) -> (num_layers, B, Lq, C) normalized hidden states."""
        target = torch.zeros_like(query_pos)  # DETR starts the content from zeros
        hidden_states = []
        for layer in self.layers:
            target = layer(target, query_pos, memory, pos, padding_mask)
            hidden_states.append(self.norm(target))
        return torch.stack(hidden_states)


class DetrTransformer(nn.Module):
    """DETR's encoder-decoder; parameters with more than one dimension are xavier-uniform (as DETR)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        num_encoder_layers: int,
        num_decoder_layers: int,
        dim_feedforward: int,
        dropout: float,
    ):
        super().__init__()
        self.encoder = Encoder(num_encoder_layers, EncoderLayer(d_model, n_heads, dim_feedforward, dropout))
        self.decoder = Decoder(num_decoder_layers, DecoderLayer(d_model, n_heads, dim_feedforward, dropout), d_model)
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)

    def forward(
        self, source: torch.Tensor, padding_mask: torch.Tensor, pos: torch.Tensor, query_embed: torch.Tensor
    ) -> torch.Tensor:
        """Encode the feature map, decode the queries.

        Args:
            source: (B, C, H_5, W_5) projected C5 map. padding_mask: (B, H_5, W_5) bool, True = padding.
            pos: (B, C, H_5, W_5) sine positions. query_embed: (Lq, C) learned query positions.

        Returns:
            (num_decoder_layers, B, Lq, C) hidden states of every decoder layer.
        """
        src = source.flatten(2).transpose(1, 2)  # (B, S, C)
        pos = pos.flatten(2).transpose(1, 2)  # (B, S, C)
        mask = padding_mask.flatten(1)  # (B, S)
        memory = self.encoder(src, pos, mask)
        query_pos = query_embed[None].expand(src.shape[0], -1, -1)  # (B, Lq, C)
        return self.decoder(query_pos, memory, pos, mask)


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
