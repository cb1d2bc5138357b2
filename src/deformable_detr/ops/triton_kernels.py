"""Triton kernels of multi-scale deformable attention: fused forward and backward.

Same semantics as `reference` (per level `F.grid_sample(bilinear, zeros, align_corners=False)` at
grid `2 * loc - 1`): a location (x, y) in [0, 1] of level l reads pixel coordinate
`x * W_l - 0.5, y * H_l - 0.5` (the official CUDA kernel's formula); of its 4 neighbours, those
outside the map contribute 0.

Kernel layout. One program per (block of BLOCK_Q rows of B * Lq, head m); it holds a
(BLOCK_Q, BLOCK_D) tile, BLOCK_D = next_power_of_2(D) with the tail masked, so any D works.
It loops over levels and points (compile-time bounds, but not unrolled: unrolling all L * P * 4
gathers made the compiler hoist them and spill registers) and unrolls the 4 bilinear corners;
each level's (H_l, W_l) and start are loaded from the `spatial_shapes` and `level_start_index`
tensors. Accumulation is fp32 (fp64 for fp64 inputs).

- forward: for each (l, p), gather the 4 neighbours' (BLOCK_Q, BLOCK_D) rows of `value` and add
  them with weight `attention_weight * bilinear_weight`; store (B, Lq, M * D) in `value`'s dtype.
- backward: recomputes the same gathers; grad_attention_weights and grad_sampling_locations
  are per (b, q, m, l, p) sums over D inside the program (no atomics, no (.., D) intermediates);
  grad_value is scattered with `tl.atomic_add` into an fp32 (fp64) buffer of value's shape,
  cast to `value`'s dtype at the end.

A neighbour outside the map (or a row past B * Lq) gets an offset that may point outside `value`;
every load and atomic through it is masked, so it is never dereferenced. (Clamping it to 0 with
`tl.where` made Triton 3.6 and 3.7 fail to compile D = 8/16 and fp64 D = 24/32.)

The kernels run on CUDA tensors, or on CPU tensors when `TRITON_INTERPRET=1` was set before `triton`
was first imported (`kernels_interpreted`). `triton_launch` compiles and launches them; `triton` is
the backend's entry point.
"""

import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction


@triton.jit
def _bilinear_corners(sampling_locations_ptr, point, row_mask, height, width, ACC_DTYPE: tl.constexpr):
    """Pixel corner (x0, y0) and fractions (fx, fy) of one point per row; all (BLOCK_Q,)."""
    loc_x = tl.load(sampling_locations_ptr + 2 * point, mask=row_mask, other=0.0).to(ACC_DTYPE)
    loc_y = tl.load(sampling_locations_ptr + 2 * point + 1, mask=row_mask, other=0.0).to(ACC_DTYPE)
    x = loc_x * width.to(ACC_DTYPE) - 0.5  # align_corners=False: pixel i's centre (i + 0.5) / W_l maps to x = i
    y = loc_y * height.to(ACC_DTYPE) - 0.5
    x_floor = tl.floor(x)
    y_floor = tl.floor(y)
    fx = x - x_floor
    fy = y - y_floor
    # Clamp before the int cast so far-away points cannot overflow; clamped ones read nothing.
    x0 = tl.minimum(tl.maximum(x_floor, -2.0), width.to(ACC_DTYPE) + 1.0).to(tl.int64)
    y0 = tl.minimum(tl.maximum(y_floor, -2.0), height.to(ACC_DTYPE) + 1.0).to(tl.int64)
    return x0, y0, fx, fy


@triton.jit
def _corner_offsets(level_base, x, y, height, width, row_mask, m, NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Element offset of value[b, start_l + y * W_l + x, m, 0] and whether (x, y) is inside; (BLOCK_Q,).

    Outside (or past the last row) the offset points anywhere, even before `value`: every load and atomic
    through it is masked with `inside`, so it is never dereferenced. (Zeroing it with `tl.where(inside, ...)`
    broke Triton 3.6/3.7's layout pass: "'arith.select' op expected condition type to have the same shape".)
    """
    inside = row_mask & (x >= 0) & (x < width) & (y >= 0) & (y < height)
    key = level_base + y * width + x  # index along B * S; int64, and x, y are clamped, so no overflow
    return (key * NUM_HEADS + m) * HEAD_DIM, inside


@triton.jit(do_not_specialize=["num_rows", "num_queries", "num_keys"])
def forward_kernel(
    value_ptr,  # (B, S, M, D)
    spatial_shapes_ptr,  # (L, 2) int64
    level_start_index_ptr,  # (L,) int64
    sampling_locations_ptr,  # (B, Lq, M, L, P, 2)
    attention_weights_ptr,  # (B, Lq, M, L, P)
    output_ptr,  # (B, Lq, M * D)
    num_rows,  # B * Lq
    num_queries,  # Lq
    num_keys,  # S
    NUM_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    NUM_LEVELS: tl.constexpr,
    NUM_POINTS: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    m = tl.program_id(1)
    rows = (tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)).to(tl.int64)  # b * Lq + q
    row_mask = rows < num_rows
    batch = rows // num_queries
    channels = tl.arange(0, BLOCK_D)
    channel_mask = channels < HEAD_DIM
    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=ACC_DTYPE)
    for level in range(NUM_LEVELS):
        height = tl.load(spatial_shapes_ptr + 2 * level)
        width = tl.load(spatial_shapes_ptr + 2 * level + 1)
        level_base = batch * num_keys + tl.load(level_start_index_ptr + level)  # (BLOCK_Q,)
        for p in range(NUM_POINTS):
            point = ((rows * NUM_HEADS + m) * NUM_LEVELS + level) * NUM_POINTS + p  # (BLOCK_Q,)
            weight = tl.load(attention_weights_ptr + point, mask=row_mask, other=0.0).to(ACC_DTYPE)
            x0, y0, fx, fy = _bilinear_corners(sampling_locations_ptr, point, row_mask, height, width, ACC_DTYPE)
            for corner in tl.static_range(4):
                dx = corner % 2
                dy = corner // 2
                offset, inside = _corner_offsets(
                    level_base, x0 + dx, y0 + dy, height, width, row_mask, m, NUM_HEADS, HEAD_DIM
                )
                corner_weight = (fx if dx == 1 else 1.0 - fx) * (fy if dy == 1 else 1.0 - fy)
                corner_value = tl.load(
                    value_ptr + offset[:, None] + channels[None, :],
                    mask=inside[:, None] & channel_mask[None, :],
                    other=0.0,
                ).to(ACC_DTYPE)  # (BLOCK_Q, BLOCK_D)
                acc += (weight * corner_weight)[:, None] * corner_value
    out_offsets = (rows * NUM_HEADS + m) * HEAD_DIM
    tl.store(
        output_ptr + out_offsets[:, None] + channels[None, :],
        acc.to(output_ptr.dtype.element_ty),
        mask=row_mask[:, None] & channel_mask[None, :],
    )


@triton.jit(do_not_specialize=["num_rows", "num_queries", "num_keys"])
def backward_kernel(
    grad_output_ptr,  # (B, Lq, M, D)
    value_ptr,  # (B, S, M, D)
    spatial_shapes_ptr,  # (L, 2) int64
    level_start_index_ptr,  # (L,) int64
    sampling_locations_ptr,  # (B, Lq, M, L, P, 2)
    attention_weights_ptr,  # (B, Lq, M, L, P)
    grad_value_ptr,  # (B, S, M, D) in ACC_DTYPE, zero-initialised, atomically accumulated
    grad_sampling_locations_ptr,  # (B, Lq, M, L, P, 2)
    grad_attention_weights_ptr,  # (B, Lq, M, L, P)
    num_rows,  # B * Lq
    num_queries,  # Lq
    num_keys,  # S
    NUM_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    NUM_LEVELS: tl.constexpr,
    NUM_POINTS: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    m = tl.program_id(1)
    rows = (tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)).to(tl.int64)  # b * Lq + q
    row_mask = rows < num_rows
    batch = rows // num_queries
    channels = tl.arange(0, BLOCK_D)
    channel_mask = channels < HEAD_DIM
    out_offsets = (rows * NUM_HEADS + m) * HEAD_DIM
    grad_output = tl.load(
        grad_output_ptr + out_offsets[:, None] + channels[None, :],
        mask=row_mask[:, None] & channel_mask[None, :],
        other=0.0,
    ).to(ACC_DTYPE)  # (BLOCK_Q, BLOCK_D)
    for level in range(NUM_LEVELS):
        height = tl.load(spatial_shapes_ptr + 2 * level)
        width = tl.load(spatial_shapes_ptr + 2 * level + 1)
        level_base = batch * num_keys + tl.load(level_start_index_ptr + level)  # (BLOCK_Q,)
        for p in range(NUM_POINTS):
            point = ((rows * NUM_HEADS + m) * NUM_LEVELS + level) * NUM_POINTS + p  # (BLOCK_Q,)
            weight = tl.load(attention_weights_ptr + point, mask=row_mask, other=0.0).to(ACC_DTYPE)
            x0, y0, fx, fy = _bilinear_corners(sampling_locations_ptr, point, row_mask, height, width, ACC_DTYPE)
            weighted_grad = weight[:, None] * grad_output  # (BLOCK_Q, BLOCK_D)
            sample = tl.zeros((BLOCK_Q, BLOCK_D), dtype=ACC_DTYPE)
            grad_fx = tl.zeros((BLOCK_Q, BLOCK_D), dtype=ACC_DTYPE)  # d sample / d fx
            grad_fy = tl.zeros((BLOCK_Q, BLOCK_D), dtype=ACC_DTYPE)  # d sample / d fy
            for corner in tl.static_range(4):
                dx = corner % 2
                dy = corner // 2
                offset, inside = _corner_offsets(
                    level_base, x0 + dx, y0 + dy, height, width, row_mask, m, NUM_HEADS, HEAD_DIM
                )
                corner_mask = inside[:, None] & channel_mask[None, :]
                corner_value = tl.load(value_ptr + offset[:, None] + channels[None, :], mask=corner_mask, other=0.0).to(
                    ACC_DTYPE
                )  # (BLOCK_Q, BLOCK_D)
                weight_x = fx if dx == 1 else 1.0 - fx
                weight_y = fy if dy == 1 else 1.0 - fy
                sign_x = 1.0 if dx == 1 else -1.0
                sign_y = 1.0 if dy == 1 else -1.0
                sample += (weight_x * weight_y)[:, None] * corner_value
                grad_fx += (sign_x * weight_y)[:, None] * corner_value
                grad_fy += (sign_y * weight_x)[:, None] * corner_value
                tl.atomic_add(
                    grad_value_ptr + offset[:, None] + channels[None, :],
                    (weight_x * weight_y)[:, None] * weighted_grad,
                    mask=corner_mask,
                    sem="relaxed",
                )
            tl.store(
                grad_attention_weights_ptr + point,
                tl.sum(grad_output * sample, axis=1).to(grad_attention_weights_ptr.dtype.element_ty),
                mask=row_mask,
            )
            # d x / d loc_x = W_l, d y / d loc_y = H_l
            grad_x = tl.sum(weighted_grad * grad_fx, axis=1) * width.to(ACC_DTYPE)
            grad_y = tl.sum(weighted_grad * grad_fy, axis=1) * height.to(ACC_DTYPE)
            tl.store(
                grad_sampling_locations_ptr + 2 * point,
                grad_x.to(grad_sampling_locations_ptr.dtype.element_ty),
                mask=row_mask,
            )
            tl.store(
                grad_sampling_locations_ptr + 2 * point + 1,
                grad_y.to(grad_sampling_locations_ptr.dtype.element_ty),
                mask=row_mask,
            )


def kernels_interpreted() -> bool:
    """True when the kernels were decorated under TRITON_INTERPRET=1 (they then take CPU tensors)."""
    return isinstance(forward_kernel, InterpretedFunction)
