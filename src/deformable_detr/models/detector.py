"""Deformable DETR: backbone -> input projections -> deformable transformer -> class and box heads.

model = DeformableDETR(ModelConfig.preset("deformable-detr"))
out = model(images, padding_mask)          # see `DeformableDETR.forward`
detections = model.postprocess(out, target_sizes)
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from deformable_detr.checkpoint.format import CheckpointInfo
from deformable_detr.checkpoint.state_dict import load_state_dict_strict
from deformable_detr.errors import ConfigError
from deformable_detr.models.backbone import Backbone, check_backbone, downsample_mask
from deformable_detr.models.config import ModelConfig
from deformable_detr.models.decoder import inverse_sigmoid
from deformable_detr.models.deformable_attention import MultiScaleDeformableAttention
from deformable_detr.models.input_checks import check_model_input
from deformable_detr.models.input_projection import input_projections
from deformable_detr.models.mlp import MLP
from deformable_detr.models.position_encoding import sine_position_encoding
from deformable_detr.models.query_selection import self_attention_mask
from deformable_detr.models.transformer import DeformableTransformer
from deformable_detr.ops import BACKENDS
from deformable_detr.pipeline.categories import check_categories, default_categories
from deformable_detr.pipeline.detections import Detections
from deformable_detr.pipeline.processor import PreprocessConfig, postprocess
from deformable_detr.pipeline.run import DEFAULT_THRESHOLD, DEFAULT_TOP_K, predict


def _resnet_backbone(config: ModelConfig) -> Backbone:
    """The ResNet of `config`: C3-C5 for multi-scale models, C5 alone for single-scale ones."""
    return Backbone(
        config.backbone,
        config.resnet_depths,
        config.backbone_base_width,
        return_interm_layers=config.num_feature_levels > 1,
        dilation=config.dilation,
        frozen_bn=config.backbone_frozen_bn,
        train_backbone=config.train_backbone,
        freeze_stem_and_layer1=config.freeze_stem_and_layer1,
    )


def _layer_outputs(
    all_logits: list[torch.Tensor], all_boxes: list[torch.Tensor], start: int, count: int
) -> dict[str, Any]:
    """{"pred_logits", "pred_boxes", "aux_outputs"} of queries start..start+count-1, from per-layer outputs."""
    logits = [layer_logits[:, start : start + count] for layer_logits in all_logits]  # (B, count, K) each
    boxes = [layer_boxes[:, start : start + count] for layer_boxes in all_boxes]  # (B, count, 4) each
    return {
        "pred_logits": logits[-1],
        "pred_boxes": boxes[-1],
        "aux_outputs": [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])],
    }


class DeformableDETR(nn.Module):
    """The Deformable DETR detector (Zhu et al., ICLR 2021), every variant from one `ModelConfig`.

    Heads: `class_heads` (Linear C -> K) and `box_heads` (MLP C -> C -> C -> 4). One shared pair, used by
    every decoder layer (and in two-stage by the encoder proposals), or with box refinement one pair
    per decoder layer plus, in two-stage, a last pair for the encoder proposals.

    Attributes besides the modules: `config`, `preprocess`, `categories`, and `checkpoint_info`: where the
    weights came from (a `CheckpointInfo` set by `deformable_detr.load` and `from_pretrained`; None for weights
    built here or loaded with `from_state_dict`).
    """

    config_class = ModelConfig  # what its config.json holds (`from_pretrained` reads it with this class)

    def __init__(
        self,
        config: ModelConfig,
        backbone: nn.Module | None = None,
        preprocess: PreprocessConfig | None = None,
        categories: list[dict[str, Any]] | None = None,
    ):
        """Build the model with fresh weights.

        Args:
            config: the architecture.
            backbone: a module with `num_channels` (list of C_l), `strides` and `forward(images, padding_mask)`
                -> [(feature (B, C_l, H_l, W_l), mask (B, H_l, W_l))]; None = the ResNet the config names.
            preprocess: how input images are normalised and resized; None = the paper's (`PreprocessConfig()`).
            categories: [{"id": int, "name": str}] in label order, one per class; None =
                `default_categories(config.num_classes)` (COCO's names for 91 classes).
        """
        super().__init__()
        self.config = config
        self.preprocess = preprocess if preprocess is not None else PreprocessConfig()
        self.categories = (
            check_categories(categories, config.num_classes)
            if categories is not None
            else default_categories(config.num_classes)
        )
        self.checkpoint_info: CheckpointInfo | None = None  # set by the loaders
        d_model = config.d_model
        self.backbone = (
            _resnet_backbone(config) if backbone is None else check_backbone(backbone, config.num_feature_levels)
        )
        self.input_proj = input_projections(list(self.backbone.num_channels), config.num_feature_levels, d_model)
        self.transformer = DeformableTransformer(
            d_model,
            n_heads=config.n_heads,
            num_encoder_layers=config.num_encoder_layers,
            num_decoder_layers=config.num_decoder_layers,
            dim_feedforward=config.dim_feedforward,
            dropout=config.dropout,
            num_feature_levels=config.num_feature_levels,
            enc_n_points=config.enc_n_points,
            dec_n_points=config.dec_n_points,
            two_stage=config.two_stage,
            num_queries=config.num_queries,
            box_embedding=config.denoising and not config.two_stage,
        )
        if not config.two_stage:
            self.query_embed = nn.Embedding(config.num_queries, 2 * d_model)  # [position | content], N(0, 1)
        self.class_heads, self.box_heads = self._build_heads(config)
        # Training add-ons, built after everything else so the base weights do not depend on them.
        selection, extra = config.query_selection_mode, config.num_queries_one2many
        if selection == "mixed":
            self.content_embed = nn.Embedding(config.num_queries, d_model)  # learned content, N(0, 1)
        if extra and selection == "static":
            self.query_embed_one2many = nn.Embedding(extra, 2 * d_model)
        if extra and selection == "mixed":
            self.content_embed_one2many = nn.Embedding(extra, d_model)
        if config.denoising:
            self.label_embed = nn.Embedding(config.num_classes + 1, d_model)  # row K: padding slots

    @staticmethod
    def _build_heads(config: ModelConfig) -> tuple[nn.ModuleList, nn.ModuleList]:
        """Heads initialised as the reference code: copies of one initialised pair."""
        class_head = nn.Linear(config.d_model, config.num_classes)
        nn.init.constant_(class_head.bias, -math.log((1 - 0.01) / 0.01))  # focal-loss prior 0.01, as RetinaNet
        box_head = MLP(config.d_model, config.d_model, 4, 3)
        nn.init.constant_(box_head.layers[-1].weight, 0)
        nn.init.constant_(box_head.layers[-1].bias, 0)
        count = config.num_prediction_heads
        class_heads = nn.ModuleList(copy.deepcopy(class_head) for _ in range(count))
        box_heads = nn.ModuleList(copy.deepcopy(box_head) for _ in range(count))
        # First box head starts at w = h = sigmoid(-2); two-stage boxes start from the proposals' sizes.
        box_bias = 0.0 if config.two_stage else -2.0
        nn.init.constant_(box_heads[0].layers[-1].bias[2:], box_bias)
        return class_heads, box_heads

    def forward(
        self, images: torch.Tensor, padding_mask: torch.Tensor | None = None, *, denoising: Any = None
    ) -> dict[str, Any]:
        """Detect objects.

        Args:
            images: (B, 3, H, W) floating point, normalized, padded to a common size, finite.
            padding_mask: (B, H, W) bool, True = padding; None = every pixel valid.
            denoising: training only, a model with `config.denoising`: extra queries with `labels` (B, Ld)
                int64 in [0, K] (K = padding slot), `boxes_cxcywh` (B, Ld, 4) and `attention_mask` (Ld, Ld)
                bool True = blocked (built by `deformable_detr.training.denoising.make_denoising_queries`).

        Returns:
            dict with
            "pred_logits": (B, Lq, K) raw class logits (sigmoid, no background class);
            "pred_boxes": (B, Lq, 4) (cx, cy, w, h) in [0, 1], normalized by each image's valid size;
            "aux_outputs": list over decoder layers 0..n-2 of {"pred_logits", "pred_boxes"};
            "enc_outputs" (two-stage only): {"pred_logits" (B, S, K), "pred_boxes" (B, S, 4)} of every
            encoder proposal (boxes of invalid proposals are 1);
            "dn_outputs" (with `denoising`): the same three keys for the Ld denoising queries, plus "queries"
            (the `denoising` argument, for the loss);
            "one2many_outputs" (training a model with `num_queries_one2many` > 0): the same three keys for
            the hybrid-matching queries. The main keys always cover only the `num_queries` matching queries.

        Raises:
            ModelInputError: wrong rank, channel count or dtype, NaN/Inf pixels, an empty batch, or a
                padding_mask of the wrong shape or dtype.
        """
        sources, masks = self.image_features(images, padding_mask)
        return self.detect(sources, masks, denoising=denoising)

    def image_features(
        self, images: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Backbone and input projections: the per-level maps the transformer reads.

        Args:
            images, padding_mask: as `forward`.

        Returns:
            sources: per level, (B, C, H_l, W_l) projected features;
            masks: per level, (B, H_l, W_l) bool, True = padding.
        """
        check_model_input(images, padding_mask)
        if padding_mask is None:
            padding_mask = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool, device=images.device)
        features = self.backbone(images, padding_mask)  # [(B, C_l, H_l, W_l), (B, H_l, W_l)]
        sources = [projection(feature) for projection, (feature, _) in zip(self.input_proj, features)]
        masks = [mask for _, mask in features]
        for level in range(len(features), self.config.num_feature_levels):
            source = self.input_proj[level](features[-1][0] if level == len(features) else sources[-1])
            sources.append(source)
            masks.append(downsample_mask(padding_mask, source.shape[-2:]))
        return sources, masks

    def detect(self, sources: list[torch.Tensor], masks: list[torch.Tensor], denoising: Any = None) -> dict[str, Any]:
        """Transformer and heads on the maps of `image_features` (which may be padded per level).

        Args:
            sources: per level, (B, C, H_l, W_l); masks: per level, (B, H_l, W_l) bool, True = padding.
            denoising: as `forward`.

        Returns:
            as `forward`.
        """
        config = self.config
        positions = [
            sine_position_encoding(mask, config.d_model // 2).to(source.dtype) for source, mask in zip(sources, masks)
        ]  # (B, C, H_l, W_l) each

        refine = config.with_box_refine
        two_stage = config.two_stage
        num_one2many = config.num_queries_one2many if self.training else 0
        query_embed = content_embed = extra_queries = denoising_mask = None
        if not two_stage:
            query_embed = self.query_embed.weight  # (Lq, 2C)
            if num_one2many:
                query_embed = torch.cat((query_embed, self.query_embed_one2many.weight))  # (Lq + Lo, 2C)
        elif config.query_selection_mode == "mixed":
            content_embed = self.content_embed.weight  # (Lq, C)
            if num_one2many:
                content_embed = torch.cat((content_embed, self.content_embed_one2many.weight))  # (Lq + Lo, C)
        if denoising is not None:
            if not config.denoising:
                raise ConfigError(
                    "denoising queries given to a model built with denoising=False; build it with "
                    "ModelConfig(denoising=True)"
                )
            extra_queries = (self.label_embed(denoising.labels), denoising.boxes_cxcywh)  # (B, Ld, C), (B, Ld, 4)
            denoising_mask = denoising.attention_mask
        output = self.transformer(
            sources,
            masks,
            positions,
            query_embed=query_embed,
            box_heads=self.box_heads if refine else None,
            proposal_heads=(self.class_heads[-1], self.box_heads[-1]) if two_stage else None,
            content_embed=content_embed,
            num_queries=config.num_queries + num_one2many,
            extra_queries=extra_queries,
            self_attn_mask=self_attention_mask(
                config.num_queries, num_one2many, denoising_mask, device=sources[0].device
            ),
            look_forward_twice=config.look_forward_twice,
        )

        all_logits, all_boxes = [], []
        for layer, (hidden, reference) in enumerate(zip(output.hidden_states, output.reference_points)):
            head = layer if refine else 0
            box_logits = self.box_heads[head](hidden)  # (B, Lq, 4)
            if reference.shape[-1] == 4:
                box_logits = box_logits + inverse_sigmoid(reference)
            else:
                box_logits = torch.cat((box_logits[..., :2] + inverse_sigmoid(reference), box_logits[..., 2:]), -1)
            all_logits.append(self.class_heads[head](hidden))
            all_boxes.append(box_logits.sigmoid())
        num_denoising = 0 if denoising is None else denoising.labels.shape[1]
        sizes = (num_denoising, config.num_queries, num_one2many)  # queries are [denoising | one-to-one | one-to-many]
        out = _layer_outputs(all_logits, all_boxes, num_denoising, config.num_queries)
        if num_denoising:
            out["dn_outputs"] = {**_layer_outputs(all_logits, all_boxes, 0, num_denoising), "queries": denoising}
        if num_one2many:
            out["one2many_outputs"] = _layer_outputs(all_logits, all_boxes, sum(sizes[:2]), num_one2many)
        if two_stage:
            out["enc_outputs"] = {"pred_logits": output.enc_logits, "pred_boxes": output.enc_box_logits.sigmoid()}
        return out

    def postprocess(
        self, out: dict[str, Any], target_sizes: torch.Tensor, score_threshold: float = 0.0, top_k: int = 100
    ) -> list[dict[str, torch.Tensor]]:
        """Top-k detections per image in pixels; see `deformable_detr.pipeline.processor.postprocess`."""
        return postprocess(out, target_sizes, score_threshold=score_threshold, top_k=top_k)

    def predict(
        self,
        images: Any,
        threshold: float = DEFAULT_THRESHOLD,
        batch_size: int = 8,
        amp: bool = False,
        top_k: int = DEFAULT_TOP_K,
    ) -> list[Detections]:
        """Detect objects in images of any type and size, with the model's own preprocessing and categories.

        The steps are `deformable_detr.pipeline` (decode -> preprocess -> forward -> postprocess); this delegates
        to `deformable_detr.pipeline.run.predict`.

        Args:
            images: one image or a list mixing: file paths, PIL images, numpy (H, W, 3) uint8 arrays,
                (3, H, W) tensors (uint8, or float in [0, 1]); any sizes.
            threshold: keep detections scoring >= this, in [0, 1].
            batch_size: images per forward pass; results do not depend on it (up to float rounding).
            amp: bfloat16 autocast (CPU or CUDA).
            top_k: at most this many detections per image, the best (taken before the threshold).

        Returns:
            one `Detections` per image, in input order (boxes xyxy in the original image's pixels).

        After `deformable_detr.compile_inference(model)` (or `load(..., compile=True)`) it runs compiled, with
        CUDA graphs on a GPU (`deformable_detr.pipeline.compiled`).
        """
        return predict(self, images, threshold=threshold, top_k=top_k, batch_size=batch_size, amp=amp)

    @property
    def attention_backend(self) -> str:
        """The operator backend every deformable-attention layer uses (see `set_attention_backend`)."""
        return next(m.backend for m in self.modules() if isinstance(m, MultiScaleDeformableAttention))

    def set_attention_backend(self, name: str) -> DeformableDETR:
        """Run every deformable-attention layer with operator backend `name`; a runtime choice, never saved.

        Args:
            name: "auto" (the fastest correct one for each call's device and dtype), "reference", "cpu" or "triton".

        Returns:
            self.
        """
        if name not in BACKENDS:
            raise ConfigError(f"attention backend {name!r} is unknown; choose one of {', '.join(BACKENDS)}")
        for module in self.modules():
            if isinstance(module, MultiScaleDeformableAttention):
                module.backend = name
        return self

    @classmethod
    def from_state_dict(
        cls,
        config: ModelConfig,
        state_dict: Mapping[str, torch.Tensor],
        source: str = "state dict",
        preprocess: PreprocessConfig | None = None,
        categories: list[dict[str, Any]] | None = None,
        attention_backend: str | None = None,
        backbone: nn.Module | None = None,
    ) -> DeformableDETR:
        """Build a model for `config`, load `state_dict` strictly and switch to eval mode: every loader's last step.

        Args:
            config: the architecture the tensors belong to.
            state_dict: our key layout (the converters in `deformable_detr.interop` produce it from other layouts).
            source: what the tensors came from (a path), named in errors.
            preprocess, categories, backbone: as `__init__`.
            attention_backend: as `set_attention_backend`; None = "auto".

        Returns:
            DeformableDETR in eval mode, on the CPU (move it with `.to(device)`).

        Raises:
            CheckpointMismatchError: missing, unexpected or mis-shaped keys, all listed at once.
        """
        model = cls(config, backbone=backbone, preprocess=preprocess, categories=categories)
        load_state_dict_strict(model, state_dict, source)
        if attention_backend is not None:
            model.set_attention_backend(attention_backend)
        return model.eval()

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, attention_backend: str | None = None) -> DeformableDETR:
        """Load a directory written by `save_pretrained`; other formats load with `deformable_detr.load`."""
        from deformable_detr.models.pretrained import from_pretrained

        return from_pretrained(directory, cls, attention_backend=attention_backend)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json, model.safetensors, preprocess.json and categories.json into `directory`."""
        from deformable_detr.models.pretrained import save_pretrained

        save_pretrained(self, directory)
