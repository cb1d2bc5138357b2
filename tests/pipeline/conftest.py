"""Fixtures of the pipeline tests: CPU-sized model configs of every variant."""

import pytest

from deformable_detr.models.config import ModelConfig
from tiny_models import VARIANTS, tiny_config


@pytest.fixture(params=sorted(VARIANTS))
def variant_config(request) -> ModelConfig:
    """A tiny config of each variant in `VARIANTS`."""
    return tiny_config(**VARIANTS[request.param])


@pytest.fixture
def make_config():
    """Factory of tiny configs: make_config(**overrides) -> ModelConfig."""
    return tiny_config
