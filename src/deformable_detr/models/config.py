"""Architecture configuration of Deformable DETR: one frozen dataclass and named presets.

Every variant of the paper comes from one `ModelConfig`: single-scale (`num_feature_levels=1`),
single-scale DC5 (`+ dilation=True`), multi-scale (the default), iterative box refinement
(`with_box_refine=True`) and two-stage (`two_stage=True`). Only `DeformableDETR(config)` reads it;
training settings (losses, optimizer, schedule) live in `training/`.

    config = ModelConfig.preset("deformable-detr-refine", num_classes=20)
    config = ModelConfig.from_dict(json.load(f))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deformable_detr.errors import ConfigError
from deformable_detr.models.backbone import RESNETS, check_resnet_fields
from deformable_detr.util.config_fields import check_fields

_RUNTIME_FIELDS = ("attention_backend",)  # saved by older versions; now chosen at load time


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a Deformable DETR detector. Defaults are the paper's multi-scale R50 model.

    Backbone:
        backbone: "resnet18" | "resnet34" (basic blocks) | "resnet50" | "resnet101" (bottlenecks).
        backbone_depths: blocks per stage (layer1..layer4); None = the named ResNet's, e.g. (3, 4, 6, 3).
        backbone_base_width: stem channels and layer1 block width; stage s has width base * 2**(s-1)
            (times 4 at the output of bottleneck stages). 64 in every torchvision ResNet.
        backbone_frozen_bn: FrozenBatchNorm2d (pretrained backbones, as the paper) instead of a
            trainable BatchNorm2d (needed to train a backbone from scratch).
        train_backbone: False freezes every backbone parameter.
        freeze_stem_and_layer1: freeze conv1/bn1 and layer1, as the paper does with ImageNet weights.
        dilation: DC5: layer4 keeps stride 16 and dilates its 3x3 convs by 2.
    Transformer:
        num_feature_levels: 1 (C5 only) or >= 3 (C3-C5, plus 3x3 stride-2 convs for the rest).
        d_model, n_heads, enc_n_points, dec_n_points, num_encoder_layers, num_decoder_layers,
        dim_feedforward, dropout: sizes of the deformable encoder/decoder.
    Detection:
        num_queries: object queries (two-stage: proposals kept from the encoder).
        num_classes: K sigmoid logits per query (no background class).
        with_box_refine: every decoder layer refines the previous layer's boxes, own heads per layer.
        two_stage: encoder proposals, ranked by a class head, initialise the decoder queries.
    Faster-converging training (DINO, H-DETR; each off by default, inference unchanged):
        query_selection: "static" (learned queries; needs two_stage=False), "pure" (two-stage: the top
            proposals give boxes, positions and content) or "mixed" (DINO: the top proposals give boxes and
            positions, the content queries stay learned; needs two_stage=True); None = "pure" with
            two_stage, else "static".
        denoising: contrastive denoising queries in training (adds a label embedding; a one-stage model
            also gets the box embedding `pos_trans`). Noise and group sizes are in LossConfig.
        look_forward_twice: with box refinement, layer i+1's box loss also trains layer i's box head.
        num_queries_one2many: hybrid matching: extra queries, trained one-to-many against the ground truth
            repeated LossConfig.hybrid_k times; used in training only (0 = off).
    """

    backbone: str = "resnet50"
    backbone_depths: tuple[int, int, int, int] | None = None
    backbone_base_width: int = 64
    backbone_frozen_bn: bool = True
    train_backbone: bool = True
    freeze_stem_and_layer1: bool = True
    dilation: bool = False
    num_feature_levels: int = 4
    d_model: int = 256
    n_heads: int = 8
    enc_n_points: int = 4
    dec_n_points: int = 4
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 1024
    dropout: float = 0.1
    num_queries: int = 300
    num_classes: int = 91
    with_box_refine: bool = False
    two_stage: bool = False
    query_selection: str | None = None
    denoising: bool = False
    look_forward_twice: bool = False
    num_queries_one2many: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        selection = self.query_selection
        if selection not in (None, "static", "pure", "mixed"):
            raise ConfigError(f"query_selection={selection!r} is unknown; choose one of static, pure, mixed")
        if selection in ("pure", "mixed") and not self.two_stage:
            raise ConfigError(
                f"query_selection={selection!r} selects encoder proposals; set two_stage=True "
                "(or query_selection='static')"
            )
        if selection == "static" and self.two_stage:
            raise ConfigError(
                "query_selection='static' uses learned queries; set two_stage=False "
                "(or query_selection='pure' / 'mixed')"
            )
        if self.num_queries_one2many < 0:
            raise ConfigError(f"num_queries_one2many={self.num_queries_one2many} must be >= 0 (0 = no hybrid matching)")
        check_resnet_fields(self)
        if self.num_feature_levels < 1 or self.num_feature_levels == 2:
            raise ConfigError(
                f"num_feature_levels={self.num_feature_levels} must be 1 (C5 only) or >= 3 (C3-C5 plus extra levels)"
            )
        for name in (
            "d_model",
            "n_heads",
            "enc_n_points",
            "dec_n_points",
            "num_encoder_layers",
            "num_decoder_layers",
            "dim_feedforward",
            "num_queries",
            "num_classes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.d_model % 32:
            raise ConfigError(
                f"d_model={self.d_model} must be a multiple of 32 (the input projections use GroupNorm(32))"
            )
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout} must be in [0, 1)")

    @property
    def resnet_depths(self) -> tuple[int, int, int, int]:
        """Blocks per stage actually built: `backbone_depths`, or the named ResNet's."""
        return self.backbone_depths or RESNETS[self.backbone][1]

    @property
    def query_selection_mode(self) -> str:
        """ "static", "pure" or "mixed": `query_selection`, or what `two_stage` implies when it is None."""
        return self.query_selection or ("pure" if self.two_stage else "static")

    @property
    def num_prediction_heads(self) -> int:
        """Class/box head pairs: 1 shared, or one per decoder layer (+1 for encoder proposals) with box refine."""
        if not self.with_box_refine:
            return 1
        return self.num_decoder_layers + int(self.two_stage)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """The named preset (see `PRESETS`), with any fields replaced by `overrides`."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name](), **overrides)

    def describe(self) -> str:
        """The variant in words, e.g. "resnet50, multi-scale (4 levels), iterative box refinement, two-stage"."""
        levels = "single-scale" if self.num_feature_levels == 1 else f"multi-scale ({self.num_feature_levels} levels)"
        parts = [self.backbone, levels + (" DC5" if self.dilation else "")]
        if self.with_box_refine:
            parts.append("iterative box refinement")
        if self.two_stage:
            parts.append("two-stage")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; missing fields take their defaults, unknown ones raise.

        `attention_backend`, written by older versions, is accepted and ignored: the backend is a runtime
        choice (`DeformableDETR.set_attention_backend`), not part of the architecture.
        """
        return config_from_dict(cls, {key: value for key, value in values.items() if key not in _RUNTIME_FIELDS})


def deformable_detr() -> ModelConfig:
    """Deformable DETR, R50, multi-scale (4 levels), 300 queries: 44.5 AP on COCO val2017 (50 epochs), 40M params."""
    return ModelConfig()


def deformable_detr_refine() -> ModelConfig:
    """+ iterative bounding box refinement: 46.2 AP on COCO val2017 (50 epochs), 41M params."""
    return ModelConfig(with_box_refine=True)


def deformable_detr_two_stage() -> ModelConfig:
    """++ two-stage (with box refinement): 46.9 AP on COCO val2017 (50 epochs), 41M params."""
    return ModelConfig(with_box_refine=True, two_stage=True)


def deformable_detr_single_scale() -> ModelConfig:
    """Single-scale (C5 only): 39.4 AP on COCO val2017 (50 epochs), 34M params."""
    return ModelConfig(num_feature_levels=1)


def deformable_detr_single_scale_dc5() -> ModelConfig:
    """Single-scale DC5 (C5 at stride 16): 41.5 AP on COCO val2017 (50 epochs), 34M params."""
    return ModelConfig(num_feature_levels=1, dilation=True)


def tiny() -> ModelConfig:
    """CPU-sized model with box refinement: 1-block ResNet-18 of widths 32-64-128-256, d_model 64, 2+2 layers.

    Trainable BatchNorm and nothing frozen, so it can learn from scratch. About 1.7M parameters.
    Vary any field with `ModelConfig.preset("tiny", num_queries=100, ...)`.
    """
    return ModelConfig(
        backbone="resnet18",
        backbone_depths=(1, 1, 1, 1),
        backbone_base_width=32,
        backbone_frozen_bn=False,
        freeze_stem_and_layer1=False,
        d_model=64,
        n_heads=4,
        enc_n_points=4,
        dec_n_points=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=256,
        num_queries=50,
        with_box_refine=True,
    )


def tiny_two_stage() -> ModelConfig:
    """`tiny` with two-stage proposals (and box refinement)."""
    return dataclasses.replace(tiny(), two_stage=True)


def demo() -> ModelConfig:
    """The `make demo` model: `tiny` two-stage with box refinement, 30 queries, no dropout, 6 classes (synthetic shapes),
    trained with DINO's contrastive denoising and mixed query selection.

    Trained from scratch on 2 CPU cores in a fixed number of steps (under 10 minutes) by `deformable-detr demo`; what
    it reaches is in the README's Demo section. Two-stage proposals learned boxes about 2x faster than single-stage in
    from-scratch runs; denoising and mixed query selection each added AP at equal steps, for their cost per step see
    docs/results/faster-training/report.md. Inference is that of the two-stage model without them.
    """
    return dataclasses.replace(
        tiny(),
        two_stage=True,
        num_queries=30,
        dropout=0.0,
        num_classes=6,
        denoising=True,
        query_selection="mixed",
    )


def deformable_detr_dino_style() -> ModelConfig:
    """Two-stage with box refinement, trained with DINO's contrastive denoising, mixed query selection and
    look-forward-twice and H-DETR's hybrid matching (1500 one-to-many queries, as H-DETR with 300).

    Same inference architecture and cost as `deformable-detr-two-stage` (plus a learned content embedding).
    For reference, on COCO val2017 with R50 and 12 epochs: DINO-4scale 49.0 AP, H-Deformable-DETR two-stage
    refine 48.7 AP, vs 46.9 for `deformable-detr-two-stage` after 50 epochs (the papers' numbers).
    """
    return dataclasses.replace(
        deformable_detr_two_stage(),
        query_selection="mixed",
        denoising=True,
        look_forward_twice=True,
        num_queries_one2many=1500,
    )


def demo_dino_style() -> ModelConfig:
    """`demo` with the training options of `deformable-detr-dino-style` (90 one-to-many queries, 3x `num_queries`)."""
    return dataclasses.replace(
        demo(), query_selection="mixed", denoising=True, look_forward_twice=True, num_queries_one2many=90
    )


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "deformable-detr": deformable_detr,
    "deformable-detr-refine": deformable_detr_refine,
    "deformable-detr-two-stage": deformable_detr_two_stage,
    "deformable-detr-single-scale": deformable_detr_single_scale,
    "deformable-detr-single-scale-dc5": deformable_detr_single_scale_dc5,
    "tiny": tiny,
    "tiny-two-stage": tiny_two_stage,
    "demo": demo,
    "deformable-detr-dino-style": deformable_detr_dino_style,
    "demo-dino-style": demo_dino_style,
}


def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen architecture config (ModelConfig, DetrConfig) as a JSON-serialisable dict of every field."""
    out = dataclasses.asdict(config)
    if out.get("backbone_depths") is not None:
        out["backbone_depths"] = list(out["backbone_depths"])
    return out


def config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Inverse of `config_to_dict`: missing fields take their defaults; unknown ones raise ConfigError by name."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{cls.__name__}: got {values!r} ({type(values).__name__}); takes an object of its fields")
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}"
        )
    return cls(**values)
