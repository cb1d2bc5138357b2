"""Triton backend vs the grid_sample reference (float64 oracle) and finite differences.

Without CUDA, tests/conftest.py sets TRITON_INTERPRET=1 before triton is imported, so the same
kernels run on CPU tensors (slowly: shapes here are tiny). With CUDA they are compiled and run on CUDA
tensors (`_on_device`), and the `gpu` tests add realistic shapes.
"""

import pytest
import torch

pytest.importorskip("triton")

from op_oracles import random_inputs as _inputs  # noqa: E402
from op_oracles import reference_with_grads as _reference_with_grads  # noqa: E402

from deformable_detr.ops import (  # noqa: E402
    reference,  # noqa: E402
    triton_kernels,
    triton_launch,
)
from deformable_detr.ops import triton as triton_backend  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # where the kernels run: compiled on CUDA, else interpreted


def _on_device(*tensors):
    """The tensors on DEVICE (the float64 oracle stays on the CPU)."""
    return tuple(t.to(DEVICE) for t in tensors)


def _triton_with_grads(grad_output, value, spatial_shapes, level_start_index, locations, weights):
    output = triton_backend.forward(value, spatial_shapes, level_start_index, locations, weights)
    grads = triton_backend.backward(grad_output, value, spatial_shapes, level_start_index, locations, weights)
    return (output, *grads)


def _assert_matches_reference(inputs, dtype, rtol, atol_scale, seed=1):
    """Cast inputs to `dtype`, run Triton, compare with the float64 reference of the *cast* inputs.

    Elementwise |actual - expected| <= atol_scale * max|expected| + rtol * |expected|: sums of
    fp32 terms lose ~eps relative to their largest term, not to the (possibly cancelled) result.
    """
    value, spatial_shapes, level_start_index, locations, weights = (
        t.to(device=DEVICE, dtype=dtype) if t.is_floating_point() else t.to(DEVICE) for t in inputs
    )
    B, _, M, D = value.shape
    Lq = locations.shape[1]
    generator = torch.Generator().manual_seed(seed)
    grad_output = torch.randn(B, Lq, M * D, generator=generator, dtype=torch.float64)
    grad_output = grad_output.to(device=value.device, dtype=dtype)
    args = (grad_output, value, spatial_shapes, level_start_index, locations, weights)
    actual = _triton_with_grads(*args)
    expected = _reference_with_grads(*(a.cpu() for a in args))
    names = ("output", "grad_value", "grad_sampling_locations", "grad_attention_weights")
    dtypes = (value.dtype, value.dtype, locations.dtype, weights.dtype)
    for name, got, want, want_dtype in zip(names, actual, expected, dtypes):
        assert got.dtype == want_dtype, name
        assert got.shape == want.shape, name
        atol = atol_scale * max(want.abs().max().item(), 1.0) if want.numel() else 0.0
        torch.testing.assert_close(
            got.cpu().double(), want, rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}"
        )


# (B, Lq, M, D, level shapes, P); odd, non-square and 1x1 levels, D not a power of two.
SHAPES = [
    (1, 1, 1, 4, [[1, 1]], 1),
    (2, 13, 2, 8, [[5, 7], [1, 1], [3, 2]], 2),
    (2, 20, 3, 24, [[5, 7]], 1),
    (1, 9, 1, 1, [[2, 3], [7, 5], [1, 4]], 2),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float64_matches_reference(shape):
    # Same math in float64 on both sides: only summation order differs (~1e-16 relative).
    _assert_matches_reference(_inputs(*shape), torch.float64, rtol=1e-10, atol_scale=1e-12)


@pytest.mark.parametrize("shape", SHAPES[1:3], ids=str)
def test_float32_matches_float64_reference(shape):
    # fp32 eps is 1.2e-7; each output / gradient entry sums at most 4 corners x L x P (<= 24) or
    # D (<= 24) fp32 terms, and grad_value's atomics add in arbitrary order, so errors stay below
    # ~24 eps (3e-6) of the largest term: rtol 1e-5 and atol 1e-5 x max|expected|.
    _assert_matches_reference(_inputs(*shape), torch.float32, rtol=1e-5, atol_scale=1e-5)


@pytest.mark.parametrize(
    "dtype, rtol",
    [
        # Inputs are rounded to the dtype before the float64 oracle sees them; what remains is fp32
        # accumulation plus one rounding of each result: 2^-11 for fp16, 2^-8 for bf16 on a GPU.
        # The interpreter truncates fp32 -> bf16 (a GPU rounds to nearest), so allow 2^-7 there.
        (torch.float16, 1e-3),
        (torch.bfloat16, 1e-2),
    ],
    ids=str,
)
def test_half_precision_matches_float64_reference(dtype, rtol):
    _assert_matches_reference(_inputs(*SHAPES[1]), dtype, rtol=rtol, atol_scale=1e-4)


def test_locations_on_borders_pixel_centres_and_far_outside():
    # Dyadic level sizes make every location below exact in binary, so the pixel coordinate
    # x = loc * W - 0.5 hits integers (pixel centres, where the bilinear gradient is one-sided)
    # exactly in both implementations.
    shapes = [[4, 8], [2, 2], [1, 1]]
    value, spatial_shapes, level_start_index, _, _ = _inputs(2, 12, 2, 8, shapes, 2)
    special = torch.tensor(
        [0.0, 1.0, 0.5, 1 / 16, 3 / 16, 15 / 16, 1 / 8, 7 / 8, 1 / 4, -1 / 16, 17 / 16, -0.5, 1.5, -3.0, 5.0, 1e6],
        dtype=torch.float64,
    )
    generator = torch.Generator().manual_seed(3)
    locations = special[torch.randint(len(special), (2, 12, 2, 3, 2, 2), generator=generator)]
    weights = torch.rand(2, 12, 2, 3, 2, generator=generator, dtype=torch.float64)
    _assert_matches_reference(
        (value, spatial_shapes, level_start_index, locations, weights), torch.float64, rtol=1e-10, atol_scale=1e-12
    )


def test_pixel_centres_of_odd_levels_forward():
    # Non-dyadic centres (i + 0.5) / W round differently in the two formulas, so only the
    # (continuous) output is compared here, not the one-sided gradients.
    shapes = [[5, 7], [3, 1]]
    value, spatial_shapes, level_start_index, _, weights = _inputs(1, 10, 2, 8, shapes, 2)
    generator = torch.Generator().manual_seed(4)
    sizes = spatial_shapes.flip(1).double()  # (L, 2) as (W_l, H_l)
    pixel = torch.rand(1, 10, 2, 2, 2, 2, generator=generator, dtype=torch.float64) * sizes[:, None, :]
    locations = (pixel.floor() + 0.5) / sizes[:, None, :]  # (B, Lq, M, L, P, 2) at pixel centres
    actual = triton_backend.forward(*_on_device(value, spatial_shapes, level_start_index, locations, weights))
    expected = reference.forward(value, spatial_shapes, level_start_index, locations, weights)
    torch.testing.assert_close(actual.cpu(), expected, rtol=1e-10, atol=1e-12)


def test_rows_split_across_programs(monkeypatch):
    # A 32-element tile gives BLOCK_Q = 4 at D = 8: the second block straddles the batch boundary
    # (Lq = 7) and the last one is half masked.
    monkeypatch.setattr(triton_launch, "TILE_ELEMENTS", 32)
    assert triton_launch.block_sizes(14, 2, 8) == (4, 8)
    _assert_matches_reference(_inputs(2, 7, 2, 6, [[3, 5], [2, 2]], 2), torch.float64, rtol=1e-10, atol_scale=1e-12)


class _TritonFunction(torch.autograd.Function):
    """Wires forward/backward together so gradcheck can compare them with finite differences."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, locations, weights):
        ctx.save_for_backward(value, spatial_shapes, level_start_index, locations, weights)
        return triton_backend.forward(value, spatial_shapes, level_start_index, locations, weights)

    @staticmethod
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, locations, weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = triton_backend.backward(
            grad_output, value, spatial_shapes, level_start_index, locations, weights
        )
        return grad_value, None, None, grad_locations, grad_weights


def test_gradcheck_float64():
    # Finite differences: an oracle independent of grid_sample. Random locations stay off the
    # pixel-centre kinks (probability 0), where the derivative is one-sided. Tiny, as each
    # input element costs two interpreted kernel launches.
    value, spatial_shapes, level_start_index, locations, weights = _on_device(*_inputs(1, 2, 1, 1, [[2, 3], [1, 2]], 1))
    leaves = [t.requires_grad_() for t in (value, locations, weights)]
    assert torch.autograd.gradcheck(
        lambda v, loc, w: _TritonFunction.apply(v, spatial_shapes, level_start_index, loc, w),
        leaves,
        eps=1e-6,
        atol=1e-6,
        rtol=1e-5,  # central differences of a piecewise-bilinear map in float64 are ~1e-10 accurate
    )


def test_zero_queries_give_empty_output_and_zero_value_grad():
    value, spatial_shapes, level_start_index, locations, weights = _on_device(*_inputs(2, 0, 2, 8, [[3, 5]], 2))
    output = triton_backend.forward(value, spatial_shapes, level_start_index, locations, weights)
    assert output.shape == (2, 0, 16)
    grad_value, grad_locations, grad_weights = triton_backend.backward(
        torch.zeros_like(output), value, spatial_shapes, level_start_index, locations, weights
    )
    assert torch.equal(grad_value, torch.zeros_like(value))
    assert grad_locations.shape == locations.shape and grad_weights.shape == weights.shape


def test_non_contiguous_inputs():
    value, spatial_shapes, level_start_index, locations, weights = _inputs(2, 5, 2, 4, [[3, 5], [1, 1]], 2)
    value_t = value.transpose(0, 1).contiguous().transpose(0, 1)  # same values, strided
    locations_t = locations.permute(5, 0, 1, 2, 3, 4).contiguous().permute(1, 2, 3, 4, 5, 0)
    weights_t = weights.transpose(1, 2).contiguous().transpose(1, 2)
    assert not (value_t.is_contiguous() or locations_t.is_contiguous() or weights_t.is_contiguous())
    value_t, spatial_shapes_d, level_start_index_d, locations_t, weights_t = (  # .to keeps the strides
        t.to(DEVICE) for t in (value_t, spatial_shapes, level_start_index, locations_t, weights_t)
    )
    assert not (value_t.is_contiguous() or locations_t.is_contiguous() or weights_t.is_contiguous())
    actual = triton_backend.forward(value_t, spatial_shapes_d, level_start_index_d, locations_t, weights_t)
    expected = reference.forward(value, spatial_shapes, level_start_index, locations, weights)
    torch.testing.assert_close(actual.cpu(), expected, rtol=1e-10, atol=1e-12)


def test_cpu_tensor_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(triton_kernels, "kernels_interpreted", lambda: False)
    inputs = _inputs(1, 2, 1, 4, [[2, 2]], 1)
    with pytest.raises(ValueError, match="need CUDA tensors.*backend='cpu'"):
        triton_backend.forward(*inputs)


def test_unsupported_dtype_is_a_clear_error():
    value, spatial_shapes, level_start_index, locations, weights = _on_device(*_inputs(1, 2, 1, 4, [[2, 2]], 1))
    with pytest.raises(ValueError, match="value has dtype torch.int32"):
        triton_backend.forward(value.int(), spatial_shapes, level_start_index, locations, weights)


# Compiling for a GPU (sm_80 / sm_90) without one: tests/bench/test_triton_matrix.py.


def _on_kernel_device(inputs):
    """The inputs on CUDA where the kernels are compiled (a GPU machine), else as they are (the interpreter)."""
    return inputs if triton_kernels.kernels_interpreted() else tuple(t.cuda() for t in inputs)


def test_kernels_write_every_element_of_uninitialised_outputs(monkeypatch):
    # forward's output and backward's location/weight gradients come from torch.empty: fill them with NaN
    # so that any element a kernel skipped would show. Rows past B * Lq = 14 and channels past D = 6 are
    # masked in the last program (BLOCK_Q 4 at a 32-element tile, BLOCK_D 8).
    def nan_filled(factory):
        return lambda *args, **kwargs: factory(*args, **kwargs).fill_(float("nan"))

    monkeypatch.setattr(triton_launch, "TILE_ELEMENTS", 32)
    monkeypatch.setattr(torch, "empty", nan_filled(torch.empty))
    monkeypatch.setattr(torch, "empty_like", nan_filled(torch.empty_like))
    assert torch.empty(2).isnan().all()
    inputs = _on_kernel_device(_inputs(2, 7, 2, 6, [[3, 5], [2, 2]], 2))
    _assert_matches_reference(inputs, torch.float64, rtol=1e-10, atol_scale=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "dtype, rtol, atol_scale",
    # fp32: a grad_value entry here gathers up to hundreds of atomic adds in arbitrary order, so
    # atol is 1e-4 x max|expected| rather than the interpreter tests' 1e-5.
    [
        (torch.float32, 1e-5, 1e-4),
        (torch.bfloat16, 1e-2, 1e-3),
        (torch.float16, 1e-3, 1e-4),
        (torch.float64, 1e-10, 1e-12),
    ],
    ids=str,
)
def test_cuda_matches_reference(dtype, rtol, atol_scale):
    # Compiled kernels on a real GPU, a decoder-like shape with D = 32 and an odd level.
    inputs = _inputs(2, 300, 8, 32, [[25, 34], [13, 17], [7, 9], [1, 1]], 4, low=-0.1, high=1.1)
    cuda_inputs = tuple(t.cuda() for t in inputs)
    _assert_matches_reference(cuda_inputs, dtype, rtol=rtol, atol_scale=atol_scale)


CUDA_TOLERANCES = {  # (rtol, atol_scale), as in test_cuda_matches_reference
    torch.float32: (1e-5, 1e-4),
    torch.bfloat16: (1e-2, 1e-3),
    torch.float16: (1e-3, 1e-4),
    torch.float64: (1e-10, 1e-12),
}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "dtype, head_dim",
    # Head dims the configs produce (d_model / heads: tiny 16, demo 16, paper 32, 64 for 256 / 4) and the
    # cases Triton 3.6/3.7 failed to compile (forward D = 8, 16 in fp32/bf16/fp16, fp64 D = 24, 32).
    [
        (torch.float32, 8),
        (torch.float32, 16),
        (torch.float32, 64),
        (torch.bfloat16, 16),
        (torch.float16, 8),
        (torch.float16, 64),
        (torch.float64, 16),
        (torch.float64, 24),
        (torch.float64, 32),
    ],
    ids=str,
)
def test_cuda_head_dims_match_reference(dtype, head_dim):
    inputs = _inputs(2, 40, 4, head_dim, [[13, 17], [7, 9], [1, 1]], 4, low=-0.1, high=1.1)
    rtol, atol_scale = CUDA_TOLERANCES[dtype]
    _assert_matches_reference(tuple(t.cuda() for t in inputs), dtype, rtol=rtol, atol_scale=atol_scale)
