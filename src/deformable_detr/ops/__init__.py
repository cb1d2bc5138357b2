"""Multi-scale deformable attention (Zhu et al., 2021), one function with several backends.

Shape letters used across the package: B batch, H x W image, H_l x W_l level l, C = d_model,
M heads, D = C / M, L levels, P points, S = sum_l H_l * W_l, Lq queries, K classes,
T targets in one image.

(Stub written by the foundation; the operator issue replaces it with the full dispatcher.)
"""

import torch

from . import reference

BACKENDS = ("auto", "reference", "cpu", "triton")


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """See `reference.forward`; (B, S, M, D) ... -> (B, Lq, M * D)."""
    return reference.forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
