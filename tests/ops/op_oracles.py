"""Input builders and the float64 autograd oracle shared by the operator tests.

A plain module (imported by name: pytest puts each test directory on sys.path), so test helpers
and fixtures in `conftest.py` share one definition.
"""

import torch

from deformable_detr.ops import reference


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


def reference_with_grads(grad_output, value, spatial_shapes, level_start_index, locations, weights):
    """Float64 reference output and (grad_value, grad_locations, grad_weights) by autograd."""
    leaves = [t.detach().double().requires_grad_() for t in (value, locations, weights)]
    output = reference.forward(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])
    output.backward(grad_output.double())
    return (output.detach(), *(leaf.grad for leaf in leaves))
