"""Fixtures of the model tests: CPU-sized configs of every variant."""

import pytest

from deformable_detr.models.config import ModelConfig

# One-block ResNet-18 of width 16..128, d_model 32: every variant builds and runs in well under a second.
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


@pytest.fixture(params=sorted(VARIANTS))
def variant_config(request) -> ModelConfig:
    """A tiny config of each variant in `VARIANTS`."""
    return tiny_config(**VARIANTS[request.param])


@pytest.fixture
def make_config():
    """Factory of tiny configs: make_config(**overrides) -> ModelConfig."""
    return tiny_config
