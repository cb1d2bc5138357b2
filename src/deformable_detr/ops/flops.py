"""FLOP formulas of multi-scale deformable attention, for `torch.utils.flop_counter.FlopCounterMode`.

`FlopCounterMode` counts matrix products and convolutions (2 FLOPs per multiply-add) and nothing for
an op it has no formula for, so the fused op would count as 0. `register_flop_formulas()` adds:

- `deformable_detr::ms_deform_attn` (the fused `cpu`/`triton` backends): per output channel of each
  sampling point, a bilinear interpolation (4 multiply-adds) and the attention weighting (1):
  `10 * B * Lq * M * L * P * D` (`ms_deform_attn_flops`). Its backward counts twice that, the
  convention of `FlopCounterMode` for products (one pass for the input gradients, one for the rest).
- `aten.grid_sampler_2d` (the `reference` backend): 4 multiply-adds per output element, `8 * N * C *
  H_out * W_out`. The reference path then weights and sums the samples with elementwise ops, which
  `FlopCounterMode` does not count, so it totals 8/10 of the fused op's count.
- `aten._scaled_dot_product_flash_attention_for_cpu` (PyTorch's CPU attention kernel, used by
  `nn.MultiheadAttention`): the same count as PyTorch's other fused attention kernels.
"""

from __future__ import annotations

import torch
from torch.utils import flop_counter

_CORNER_MULTIPLY_ADDS = 4  # bilinear interpolation reads 4 corners
_WEIGHT_MULTIPLY_ADDS = 1  # times the attention weight, summed over levels and points


def ms_deform_attn_flops(
    batch: int, num_queries: int, num_heads: int, num_levels: int, num_points: int, head_dim: int
) -> int:
    """FLOPs of one forward of the operator: 2 * (4 + 1) multiply-adds per (query, head, level, point, channel)."""
    return (
        2
        * (_CORNER_MULTIPLY_ADDS + _WEIGHT_MULTIPLY_ADDS)
        * batch
        * num_queries
        * num_heads
        * num_levels
        * num_points
        * head_dim
    )


def _ms_deform_attn_formula(
    value_shape,
    spatial_shapes_shape,
    level_start_index_shape,
    sampling_locations_shape,
    attention_weights_shape,
    *args,
    out_shape=None,
    **kwargs,
) -> int:
    B, Lq, M, L, P, _ = sampling_locations_shape
    return ms_deform_attn_flops(B, Lq, M, L, P, value_shape[-1])


def _ms_deform_attn_backward_formula(
    grad_output_shape,
    value_shape,
    spatial_shapes_shape,
    level_start_index_shape,
    sampling_locations_shape,
    *args,
    out_shape=None,
    **kwargs,
) -> int:
    B, Lq, M, L, P, _ = sampling_locations_shape
    return 2 * ms_deform_attn_flops(B, Lq, M, L, P, value_shape[-1])


def _grid_sampler_formula(input_shape, grid_shape, *args, out_shape=None, **kwargs) -> int:
    N, C = input_shape[:2]
    return 2 * _CORNER_MULTIPLY_ADDS * N * C * grid_shape[1] * grid_shape[2]


def _sdpa_cpu_formula(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def register_flop_formulas() -> None:
    """Register the formulas above with `FlopCounterMode` (idempotent; a formula PyTorch already has is kept)."""
    import deformable_detr.ops  # noqa: F401  (defines torch.ops.deformable_detr.*)

    formulas = {
        torch.ops.deformable_detr.ms_deform_attn: _ms_deform_attn_formula,
        torch.ops.deformable_detr.ms_deform_attn_backward: _ms_deform_attn_backward_formula,
        torch.ops.aten.grid_sampler_2d: _grid_sampler_formula,
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_formula,
    }
    for target, formula in formulas.items():
        if target not in flop_counter.flop_registry:
            flop_counter.register_flop_formula(target)(formula)
