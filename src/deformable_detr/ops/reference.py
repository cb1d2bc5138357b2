"""Reference backend: multi-scale deformable attention with `F.grid_sample`.

The formulation of the paper's public `ms_deform_attn_core_pytorch`; the oracle for every other
backend. Works on any device and dtype that `grid_sample` supports, differentiable by autograd.
"""

import torch
import torch.nn.functional as F


def forward(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Bilinearly sample every level at `sampling_locations` and sum with `attention_weights`.

    Args:
        value: (B, S, M, D) projected features of all levels, flattened level by level.
        spatial_shapes: (L, 2) int64, (H_l, W_l) per level.
        level_start_index: (L,) int64, where level l starts along S (unused: derived from shapes).
        sampling_locations: (B, Lq, M, L, P, 2) (x, y), 0..1 over each level's padded map.
        attention_weights: (B, Lq, M, L, P).

    Returns:
        (B, Lq, M * D), dtype of `value`.
    """
    B, S, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    shapes = spatial_shapes.tolist()  # [[H_l, W_l], ...]
    level_values = value.split([h * w for h, w in shapes], dim=1)  # L x (B, H_l*W_l, M, D)
    grids = 2 * sampling_locations - 1  # grid_sample wants [-1, 1]
    samples = []
    for level, (h, w) in enumerate(shapes):
        level_value = level_values[level].flatten(2).transpose(1, 2).reshape(B * M, D, h, w)  # (B*M, D, H_l, W_l)
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (B*M, Lq, P, 2)
        samples.append(
            F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # (B*M, D, Lq, P)
    weights = attention_weights.transpose(1, 2).reshape(B * M, 1, Lq, L * P)  # (B*M, 1, Lq, L*P)
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1)  # (B*M, D, Lq)
    return out.view(B, M * D, Lq).transpose(1, 2).contiguous()  # (B, Lq, M*D)
