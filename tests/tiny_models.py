"""The tiny model every test builds: a one-block ResNet-18 of width 16..128 and a d_model 32 transformer, so
every variant builds and runs in well under a second. Imported by test modules as `from tiny_models import ...`
(pytest puts tests/ on sys.path for tests/conftest.py)."""

from __future__ import annotations

from deformable_detr.models.config import ModelConfig

TINY = dict(
    backbone="resnet18",
    backbone_depths=(1, 1, 1, 1),
    backbone_base_width=16,
    d_model=32,
    n_heads=2,
    enc_n_points=2,
    dec_n_points=2,
    num_encoder_layers=1,
    num_decoder_layers=2,
    dim_feedforward=64,
    num_queries=8,
    num_classes=5,
    dropout=0.0,
)

VARIANTS = {
    "single-scale": dict(num_feature_levels=1),
    "single-scale-dc5": dict(num_feature_levels=1, dilation=True),
    "multi-scale": dict(),
    "multi-scale-dc5": dict(dilation=True),
    "refine": dict(with_box_refine=True),
    "two-stage": dict(two_stage=True),
    "two-stage-refine": dict(with_box_refine=True, two_stage=True),
}


def tiny_config(**overrides) -> ModelConfig:
    """A tiny `ModelConfig`; `overrides` replace any field."""
    return ModelConfig(**{**TINY, **overrides})


TINY_DETR = dict(
    backbone="resnet18",
    backbone_depths=(1, 1, 1, 1),
    backbone_base_width=16,
    backbone_frozen_bn=False,
    freeze_stem_and_layer1=False,
    d_model=32,
    n_heads=2,
    num_encoder_layers=1,
    num_decoder_layers=2,
    dim_feedforward=64,
    num_queries=10,
    dropout=0.0,
)


def tiny_detr_config(**overrides):
    """A tiny trainable `DetrConfig` (BatchNorm trained, nothing frozen); `overrides` replace any field."""
    from deformable_detr.models.detr import DetrConfig

    return DetrConfig(**{**TINY_DETR, **overrides})
