"""Input builders shared by the operator tests (as fixtures: test directories are not packages)."""

import pytest
import torch


def levels(shapes: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(spatial_shapes (L, 2) int64, level_start_index (L,) int64, S) for a list of (H_l, W_l)."""
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return spatial_shapes, level_start_index, int(sizes.sum())


def random_inputs(B, Lq, M, D, shapes, P, *, seed=0, low=-0.2, high=1.2, dtype=torch.float64):
    """Random (value (B,S,M,D), spatial_shapes, level_start_index, locations (B,Lq,M,L,P,2),
    weights (B,Lq,M,L,P)); locations uniform in [low, high], so some fall outside the map."""
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes, level_start_index, S = levels(shapes)
    L = len(shapes)
    value = torch.randn(B, S, M, D, generator=generator, dtype=torch.float64)
    locations = low + (high - low) * torch.rand(B, Lq, M, L, P, 2, generator=generator, dtype=torch.float64)
    weights = torch.rand(B, Lq, M, L, P, generator=generator, dtype=torch.float64)
    return value.to(dtype), spatial_shapes, level_start_index, locations.to(dtype), weights.to(dtype)


@pytest.fixture
def make_inputs():
    """`random_inputs` as a fixture."""
    return random_inputs


@pytest.fixture
def make_levels():
    """`levels` as a fixture."""
    return levels
