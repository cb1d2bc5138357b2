"""Triton backend: fused forward and backward kernels of multi-scale deformable attention.

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

Launching. Block sizes come from `_block_sizes` (full tiles for big grids, smaller ones for small
grids such as the decoder's). The first launch of each specialization compiles the kernel apart from
launching it; if the installed Triton fails to compile it, that case warns once and runs `reference`
(forward) or its torch.func vjp (backward) from then on. `bench op-triton --compile-matrix` compiles
every case ahead of time, without a GPU.

Kernels run on CUDA tensors, or on CPU tensors when `TRITON_INTERPRET=1` was set before `triton`
was first imported (how the test suite runs them without a GPU).
"""

import functools
import warnings

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from deformable_detr.errors import ModelInputError

from . import reference

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
"""Dtypes of `value` (and of locations/weights) these kernels accept."""

# BLOCK_Q * BLOCK_D per program: 4 elements per thread at 4 warps. sm_90 builds of D = 32, L = P = 4
# (cuobjdump -res-usage) use ~50 registers forward and ~72 backward, no spills; a 2048-element
# tile needed ~180-220 (and spilled with the level/point loops unrolled). Chosen from register counts; GPU timings unmeasured.
_TILE_ELEMENTS = 512
_NUM_WARPS = 4
# Small problems get smaller tiles (down to one element per thread) until the grid has this many programs.
# Measured on an H200 (Triton 3.6, fp32, CUDA-graph replay so launch work is left out, 2026-12-04): the decoder
# (B * Lq = 300 rows x 8 heads, D = 32) at 16 rows per program (152 programs) took 0.024 / 0.047 ms fwd / fwd+bwd,
# at 8 rows (304 programs) 0.019 / 0.043, the reference implementation's CUDA op 0.017 / 0.049; 256 picks 8 rows
# there. The encoder (17821 rows x 8 heads) keeps 16 rows (0.104 / 0.507 ms; 8 rows was no faster).
# Tuning scripts monkeypatch these three.
_MIN_PROGRAMS = 256


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
def _forward_kernel(
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
def _backward_kernel(
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


def _kernels_interpreted() -> bool:
    """True when the kernels were decorated under TRITON_INTERPRET=1 (they then take CPU tensors)."""
    return isinstance(_forward_kernel, InterpretedFunction)


def _block_sizes(num_rows: int, num_heads: int, head_dim: int) -> tuple[int, int]:
    """(BLOCK_Q, BLOCK_D) for B * Lq = `num_rows` rows and M = `num_heads` heads: see `_block_sizes_for`."""
    return _block_sizes_for(num_rows, num_heads, head_dim, _TILE_ELEMENTS, _NUM_WARPS, _MIN_PROGRAMS)


@functools.lru_cache(maxsize=1024)
def _block_sizes_for(
    num_rows: int, num_heads: int, head_dim: int, tile_elements: int, num_warps: int, min_programs: int
) -> tuple[int, int]:
    """BLOCK_D = next_power_of_2(D); BLOCK_Q fills a tile of `tile_elements` (at most 128 rows), then halves,
    down to one element per thread, while the grid has fewer than `min_programs` programs."""
    block_d = triton.next_power_of_2(head_dim)
    largest = max(1, min(tile_elements // block_d, 128))
    smallest = min(largest, max(1, 32 * num_warps // block_d))
    block_q = largest
    while block_q > smallest and triton.cdiv(num_rows, block_q) * num_heads < min_programs:
        block_q //= 2
    return block_q, block_d


def _prepare(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Check device and dtypes; return contiguous inputs, level tensors as int64 on value's device."""
    if not value.is_cuda and not _kernels_interpreted():
        raise ModelInputError(
            f"triton backend: value is on {value.device} but the Triton kernels need CUDA tensors; "
            "move the inputs to a GPU or use backend='cpu'"
        )
    for name, tensor in (
        ("value", value),
        ("sampling_locations", sampling_locations),
        ("attention_weights", attention_weights),
    ):
        if tensor.dtype not in SUPPORTED_DTYPES:
            raise ModelInputError(
                f"triton backend: {name} has dtype {tensor.dtype}, expected one of {SUPPORTED_DTYPES}; "
                "cast it or use backend='reference'"
            )
    if sampling_locations.shape[3] != spatial_shapes.shape[0]:
        raise ModelInputError(
            f"triton backend: sampling_locations has {sampling_locations.shape[3]} levels but spatial_shapes "
            f"has {spatial_shapes.shape[0]}; they must agree"
        )
    device = value.device
    return (
        _contiguous(value),
        _contiguous(_as_int64_on(spatial_shapes, device)),
        _contiguous(_as_int64_on(level_start_index, device)),
        _contiguous(sampling_locations),
        _contiguous(attention_weights),
    )


def _contiguous(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.is_contiguous() else tensor.contiguous()


def _as_int64_on(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if tensor.dtype == torch.int64 and tensor.device == device:
        return tensor
    return tensor.to(device=device, dtype=torch.int64)


def _accumulator_dtype(value: torch.Tensor) -> tuple[torch.dtype, "tl.dtype"]:
    return (torch.float64, tl.float64) if value.dtype == torch.float64 else (torch.float32, tl.float32)


# ----------------------------------------------------------------------------------------------
# Launching: compile once per specialization, fall back to `reference` where the compiler fails

_compiled: dict[tuple, bool] = {}
"""Per specialization key (see `_launch`): whether the kernel compiled (False: that case runs `reference`)."""

_warned: set[str] = set()


def _constexprs(value: torch.Tensor, num_levels: int, num_points: int, block_q: int, block_d: int) -> dict:
    """The kernels' constexpr arguments (one cached dict per case: never mutate it)."""
    _, _, num_heads, head_dim = value.shape
    return _constexprs_for(num_heads, head_dim, num_levels, num_points, block_q, block_d, value.dtype == torch.float64)


@functools.lru_cache(maxsize=1024)
def _constexprs_for(
    num_heads: int, head_dim: int, num_levels: int, num_points: int, block_q: int, block_d: int, fp64: bool
) -> dict:
    return {
        "NUM_HEADS": num_heads, "HEAD_DIM": head_dim, "NUM_LEVELS": num_levels, "NUM_POINTS": num_points,
        "BLOCK_Q": block_q, "BLOCK_D": block_d, "ACC_DTYPE": tl.float64 if fp64 else tl.float32,
    }  # fmt: skip


def _forward_call(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, output, block_q, block_d
) -> tuple[tuple[int, int], tuple, dict]:
    """(grid, args, constexprs) of `_forward_kernel` for prepared inputs and the contiguous (B, Lq, M * D) output."""
    B, S, M, _ = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    args = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights, output, B * Lq, Lq, S)
    return (-(-B * Lq // block_q), M), args, _constexprs(value, L, P, block_q, block_d)


def _backward_call(
    grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
    grad_value, grad_sampling_locations, grad_attention_weights, block_q, block_d,
) -> tuple[tuple[int, int], tuple, dict]:  # fmt: skip
    """(grid, args, constexprs) of `_backward_kernel` for prepared inputs and the three gradient buffers."""
    B, S, M, _ = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    args = (
        grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
        grad_value, grad_sampling_locations, grad_attention_weights, B * Lq, Lq, S,
    )  # fmt: skip
    return (-(-B * Lq // block_q), M), args, _constexprs(value, L, P, block_q, block_d)


def _build(kernel, grid: tuple[int, int], args: tuple, constexprs: dict, num_warps: int):
    """Compile `kernel` for these arguments without launching it (Triton's `warmup`); the CompiledKernel.

    Compiles for the current device of Triton's active driver (the compile matrix installs one that only
    names a target) and specializes as a launch would: pointer dtypes and 16-byte alignment, constexprs.
    """
    return kernel.warmup(*args, grid=grid, num_warps=num_warps, **constexprs)


def _compile(kernel, grid: tuple[int, int], args: tuple, constexprs: dict) -> None:
    """`_build`, then load the binary onto the current GPU; raises what the compiler (or loader) raises.

    Under the interpreter there is nothing to compile.
    """
    if _kernels_interpreted():
        return
    compiled = _build(kernel, grid, args, constexprs, _NUM_WARPS)
    load = getattr(compiled, "_init_handles", None)  # loading can fail too (too much shared memory, registers)
    if load is not None:
        load()


def _compiles(kernel, grid: tuple[int, int], args: tuple, constexprs: dict, case: str) -> bool:
    """`_compile`, turning a failure into one warning per case and False."""
    try:
        _compile(kernel, grid, args, constexprs)
    except Exception as error:  # nothing but compiling runs in here, so any failure is the compiler's
        lines = str(error).strip().splitlines()
        message = (
            f"Triton {triton.__version__} failed to compile the {case} ({type(error).__name__}: "
            f"{lines[0] if lines else ''}); this case runs the reference backend instead (correct, slower). "
            "Please report it, or install the Triton your torch pins"
        )
        if message not in _warned:
            _warned.add(message)
            warnings.warn(message, RuntimeWarning, stacklevel=4)  # the caller of forward / backward
        return False
    return True


def _launch(kernel, direction: str, grid: tuple[int, int], args: tuple, constexprs: dict) -> bool:
    """Launch `kernel[grid](*args, **constexprs)` on the tensors' device; False (nothing launched) if it cannot compile.

    The first call of each specialization (device, dtype and 16-byte alignment of every pointer, constexprs,
    warps: what Triton compiles a kernel for; the kernels do not specialize on their int arguments) compiles
    it apart from the launch, so only a compiler failure, never a launch error, turns into the fallback.
    """
    device = args[0].device
    if device.type == "cuda" and device.index != torch.cuda.current_device():  # cheaper than always entering
        with torch.cuda.device(device):
            return _launch(kernel, direction, grid, args, constexprs)
    tensors = args[:-3]  # both kernels end with three ints: num_rows, num_queries, num_keys
    key = (direction, device, _NUM_WARPS, *constexprs.values(), *[(t.dtype, t.data_ptr() % 16 == 0) for t in tensors])
    ok = _compiled.get(key)
    if ok is None:
        value = args[1] if direction == "backward" else args[0]  # backward's first argument is grad_output
        case = (
            f"{direction} kernel for {value.dtype}, D={constexprs['HEAD_DIM']}, L={constexprs['NUM_LEVELS']}, "
            f"P={constexprs['NUM_POINTS']} (M={constexprs['NUM_HEADS']}, BLOCK_Q={constexprs['BLOCK_Q']}, "
            f"BLOCK_D={constexprs['BLOCK_D']}, {_NUM_WARPS} warps, {device})"
        )
        ok = _compiled[key] = _compiles(kernel, grid, args, constexprs, case)
    if ok:
        kernel[grid](*args, **constexprs, num_warps=_NUM_WARPS)
    return ok


def forward(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Bilinearly sample every level at `sampling_locations` and sum with `attention_weights`.

    Args:
        value: (B, S, M, D) CUDA tensor, a dtype in `SUPPORTED_DTYPES`; levels flattened one after another.
        spatial_shapes: (L, 2) integer, (H_l, W_l) per level; sum of H_l * W_l equals S.
        level_start_index: (L,) integer, where level l starts along S.
        sampling_locations: (B, Lq, M, L, P, 2) (x, y), 0..1 over each level's map; outside reads zeros.
        attention_weights: (B, Lq, M, L, P).

    Returns:
        (B, Lq, M * D), dtype of `value`; accumulated in fp32 (fp64 for fp64 value). Where the installed
        Triton cannot compile a case, `reference` computes it (one RuntimeWarning per case).
    """
    inputs = _prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    B, _, M, D = inputs[0].shape
    _, Lq, _, L, P, _ = inputs[3].shape
    if B * Lq * M * D == 0 or L * P == 0:
        return inputs[0].new_zeros((B, Lq, M * D))  # (B, Lq, M*D)
    # The kernel stores every (row < B * Lq, head, channel < D): no need to zero the output first.
    output = torch.empty((B, Lq, M * D), dtype=inputs[0].dtype, device=inputs[0].device)  # (B, Lq, M*D)
    call = _forward_call(*inputs, output, *_block_sizes(B * Lq, M, D))
    if not _launch(_forward_kernel, "forward", *call):
        return reference.forward(*inputs)
    return output


def backward(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of `forward` w.r.t. value, sampling_locations and attention_weights.

    Args:
        grad_output: (B, Lq, M * D), gradient of the loss w.r.t. `forward`'s output; any float dtype.
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights: as in `forward`.

    Returns:
        grad_value (B, S, M, D) in value's dtype (accumulated with fp32 atomics, fp64 for fp64 value),
        grad_sampling_locations (B, Lq, M, L, P, 2) in sampling_locations' dtype,
        grad_attention_weights (B, Lq, M, L, P) in attention_weights' dtype.
        Where the installed Triton cannot compile a case, `reference` differentiated by torch.func
        computes them (one RuntimeWarning per case).
    """
    inputs = _prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    value, _, _, sampling_locations, attention_weights = inputs
    B, S, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    grad_output = _contiguous(grad_output if grad_output.device == value.device else grad_output.to(value.device))
    grad_value = torch.zeros_like(value, dtype=_accumulator_dtype(value)[0])  # (B, S, M, D), the atomics add to it
    if B * Lq * M * D * L * P == 0:
        return grad_value.to(value.dtype), torch.zeros_like(sampling_locations), torch.zeros_like(attention_weights)
    # The kernel stores every (row < B * Lq, head, level, point) of these two: no need to zero them first.
    grad_sampling_locations = torch.empty_like(sampling_locations)  # (B, Lq, M, L, P, 2)
    grad_attention_weights = torch.empty_like(attention_weights)  # (B, Lq, M, L, P)
    call = _backward_call(
        grad_output, *inputs, grad_value, grad_sampling_locations, grad_attention_weights, *_block_sizes(B * Lq, M, D)
    )
    if not _launch(_backward_kernel, "backward", *call):
        _, vjp = torch.func.vjp(  # torch.func works below the autograd key, inside the custom op's backward too
            lambda v, loc, w: reference.forward(v, inputs[1], inputs[2], loc, w),
            value,
            sampling_locations,
            attention_weights,
        )
        return vjp(grad_output.to(value.dtype))
    return grad_value.to(value.dtype), grad_sampling_locations, grad_attention_weights
