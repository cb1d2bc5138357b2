"""Gather backend: bilinear sampling written as index arithmetic, one Gather and one MatMul.

The export path of the operator. Every level, point and corner is handled in one batch of tensor
ops whose shapes follow the inputs (no Python loop over levels, no `.tolist()` of the spatial
shapes), so a traced or exported graph keeps batch and image size dynamic. It maps onto standard
ONNX ops (Floor, Cast, Clip, Gather, MatMul, ...) and needs no `GridSample`, which some runtimes
(TensorRT among them) have compiled wrongly.

Semantics are exactly the reference's (`grid_sample(mode="bilinear", padding_mode="zeros",
align_corners=False)` at `2 * loc - 1`): a point at (x, y) in [0, 1] reads the four pixels around
(x * W_l - 0.5, y * H_l - 0.5) with bilinear weights; pixels outside the map read zero; a
non-finite location makes the output NaN.
"""

import torch


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
        level_start_index: (L,) int64, where level l starts along S.
        sampling_locations: (B, Lq, M, L, P, 2) (x, y), 0..1 over each level's padded map.
        attention_weights: (B, Lq, M, L, P).

    Returns:
        (B, Lq, M * D), dtype of `value`. Differentiable w.r.t. value, locations and weights.
    """
    B, S, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    out_dtype = value.dtype
    dtype = torch.promote_types(out_dtype, torch.float32)  # 16-bit inputs: float32 arithmetic, as the fused kernels
    value, sampling_locations, attention_weights = (
        value.to(dtype),
        sampling_locations.to(dtype),
        attention_weights.to(dtype),
    )
    heights = spatial_shapes[:, 0].view(1, 1, 1, L, 1, 1)  # (1, 1, 1, L, 1, 1) int64
    widths = spatial_shapes[:, 1].view(1, 1, 1, L, 1, 1)
    starts = level_start_index.view(1, 1, 1, L, 1, 1)

    # Continuous pixel coordinates: pixel j's centre is at (j + 0.5) / W_l.
    x = sampling_locations[..., 0:1] * widths.to(dtype) - 0.5  # (B, Lq, M, L, P, 1)
    y = sampling_locations[..., 1:2] * heights.to(dtype) - 0.5
    x_floor, y_floor = x.floor(), y.floor()
    x_frac, y_frac = x - x_floor, y - y_floor
    # The four corners, in the order (x0, y0), (x1, y0), (x0, y1), (x1, y1).
    offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=torch.int64, device=value.device)  # (4, 2)
    corner_x = x_floor.to(torch.int64) + offsets[:, 0]  # (B, Lq, M, L, P, 4); NaN/inf land anywhere,
    corner_y = y_floor.to(torch.int64) + offsets[:, 1]  # their weight below is NaN, as in grid_sample
    weight_x = torch.cat((1 - x_frac, x_frac, 1 - x_frac, x_frac), -1)  # (B, Lq, M, L, P, 4)
    weight_y = torch.cat((1 - y_frac, 1 - y_frac, y_frac, y_frac), -1)
    inside = (corner_x >= 0) & (corner_x < widths) & (corner_y >= 0) & (corner_y < heights)
    weights = weight_x * weight_y * attention_weights[..., None] * inside.to(dtype)  # (B, Lq, M, L, P, 4)

    # Row of each corner in value viewed as (B * M * S, D); outside corners read row 0 with weight 0.
    pixel = corner_y.clamp(min=0) * widths + corner_x.clamp(min=0)
    pixel = torch.where(inside, pixel + starts, torch.zeros_like(pixel))  # (B, Lq, M, L, P, 4)
    batch_head = torch.arange(B, device=value.device).view(B, 1, 1) * M + torch.arange(M, device=value.device).view(
        1, 1, M
    )  # (B, 1, M)
    rows = batch_head.view(B, 1, M, 1, 1, 1) * S + pixel  # (B, Lq, M, L, P, 4)
    rows = rows.permute(0, 2, 1, 3, 4, 5).reshape(-1)  # (B * M * Lq * L * P * 4,)
    table = value.permute(0, 2, 1, 3).reshape(B * M * S, D)  # (B*M*S, D)
    samples = table.index_select(0, rows).view(B * M * Lq, L * P * 4, D)  # (B*M*Lq, L*P*4, D)
    weights = weights.permute(0, 2, 1, 3, 4, 5).reshape(B * M * Lq, 1, L * P * 4)  # (B*M*Lq, 1, L*P*4)
    out = torch.bmm(weights, samples).view(B, M, Lq, D)  # (B, M, Lq, D)
    return out.permute(0, 2, 1, 3).reshape(B, Lq, M * D).to(out_dtype)  # (B, Lq, M*D)
