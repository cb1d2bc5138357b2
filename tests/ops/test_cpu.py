"""Fused CPU kernel vs the grid_sample reference: forward and all three gradients.

The kernel is compiled on first use (~30-60 s once per machine, then cached on disk).
"""

import itertools

import pytest
import torch
from op_oracles import reference_with_grads

from deformable_detr.ops import cpu, multi_scale_deformable_attention, reference

pytestmark = pytest.mark.skipif(not cpu.is_available(), reason="the fused CPU kernel cannot be built here")


def cpu_with_grads(grad_output, value, spatial_shapes, level_start_index, locations, weights):
    output = cpu.forward(value, spatial_shapes, level_start_index, locations, weights)
    grads = cpu.backward(grad_output, value, spatial_shapes, level_start_index, locations, weights)
    return (output, *grads)


def assert_matches_reference(inputs, dtype, rtol, seed=1):
    """Cast inputs to `dtype`; compare the kernel with the float64 reference of the *cast* inputs.

    Elementwise |actual - expected| <= rtol * (max|expected| + |expected|): a sum of terms rounded
    to `dtype` is off by ~eps relative to its largest term, not to the (possibly cancelled) result.
    """
    value, spatial_shapes, level_start_index, locations, weights = (
        t.to(dtype) if t.is_floating_point() else t for t in inputs
    )
    B, _, M, D = value.shape
    generator = torch.Generator().manual_seed(seed)
    grad_output = torch.randn(B, locations.shape[1], M * D, generator=generator, dtype=torch.float64).to(dtype)
    expected = reference_with_grads(grad_output, value, spatial_shapes, level_start_index, locations, weights)
    actual = cpu_with_grads(grad_output, value, spatial_shapes, level_start_index, locations, weights)
    for name, got, want in zip(("output", "grad_value", "grad_locations", "grad_weights"), actual, expected):
        assert got.dtype == dtype and got.shape == want.shape, name
        scale = want.abs().max().item() if want.numel() else 0.0
        torch.testing.assert_close(
            got.double(), want, rtol=rtol, atol=rtol * scale + 1e-30, msg=lambda m, name=name: f"{name}: {m}"
        )


SHAPE_GRID = list(itertools.product((1, 4), (1, 4), (1, 8), (8, 32, 24), (1, 3)))  # L, P, M, D, B
LEVELS = [[13, 17], [1, 1], [6, 5], [3, 9]]


@pytest.mark.parametrize("L, P, M, D, B", SHAPE_GRID)
def test_cpu_matches_reference_float64(make_inputs, L, P, M, D, B):
    inputs = make_inputs(B, 5, M, D, LEVELS[:L], P, seed=L * 1000 + P * 100 + M * 10 + D + B)
    assert_matches_reference(inputs, torch.float64, rtol=1e-10)


@pytest.mark.parametrize("L, P, M, D, B", [(4, 4, 8, 32, 3), (1, 1, 1, 24, 1), (4, 1, 8, 8, 1)])
def test_cpu_matches_reference_float32(make_inputs, L, P, M, D, B):
    assert_matches_reference(make_inputs(B, 9, M, D, LEVELS[:L], P), torch.float32, rtol=1e-5)


@pytest.mark.parametrize("dtype, rtol", [(torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
def test_cpu_matches_reference_low_precision(make_inputs, dtype, rtol):
    """Inputs rounded to dtype, float32 arithmetic inside: only the final rounding (eps 2^-8, 2^-11) is lost."""
    assert_matches_reference(make_inputs(2, 7, 8, 32, LEVELS, 4), dtype, rtol=rtol)


def test_cpu_on_borders_pixel_centres_and_outside(make_levels):
    """Locations exactly on pixel centres (integer pixel coordinates), map borders 0 and 1, the
    last non-zero positions (pixel coordinate -1 and W) and beyond; power-of-two sizes keep every
    coordinate exact in both implementations, so even the kinks agree."""
    spatial_shapes, level_start_index, S = make_levels([[4, 8], [1, 1], [2, 2]])
    coords = torch.tensor(
        [-0.5, -0.25, -0.125, 0.0, 0.0625, 0.125, 0.5, 0.9375, 1.0, 1.0625, 1.125, 1.5], dtype=torch.float64
    )
    xy = torch.cartesian_prod(coords, coords)  # (144, 2)
    Lq, M, L, P = xy.shape[0], 2, 3, 1
    locations = xy.view(1, Lq, 1, 1, 1, 2).expand(1, Lq, M, L, P, 2).contiguous()
    generator = torch.Generator().manual_seed(3)
    value = torch.randn(1, S, M, 8, generator=generator, dtype=torch.float64)
    weights = torch.rand(1, Lq, M, L, P, generator=generator, dtype=torch.float64)
    assert_matches_reference((value, spatial_shapes, level_start_index, locations, weights), torch.float64, rtol=1e-10)


@pytest.mark.parametrize("B, M", [(2, 2), (1, 1)])  # (1, 1): fewer (batch, head) pairs than threads
def test_cpu_many_queries_parallel_path(make_inputs, B, M):
    inputs = make_inputs(B, 1200, M, 8, [[13, 17], [7, 9]], 2, low=0.0, high=1.0)
    assert_matches_reference(inputs, torch.float32, rtol=1e-5)


def test_cpu_backward_with_more_threads_than_pairs(make_inputs):
    """Query chunks with private grad_value buffers (used when threads > B * M) sum to the same result."""
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        assert_matches_reference(make_inputs(1, 300, 1, 8, [[5, 7]], 2), torch.float64, rtol=1e-10)
    finally:
        torch.set_num_threads(threads)


def test_cpu_gradcheck_through_custom_op(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(1, 3, 2, 4, [[3, 4], [2, 1]], 2)
    torch.autograd.gradcheck(
        lambda v, loc, w: multi_scale_deformable_attention(v, spatial_shapes, level_start_index, loc, w, backend="cpu"),
        (value.requires_grad_(), locations.requires_grad_(), weights.requires_grad_()),
    )


def test_cpu_non_contiguous_inputs(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(2, 6, 4, 8, [[5, 3], [2, 2]], 2)
    value_nc = value.transpose(2, 3).contiguous().transpose(2, 3)  # (B, S, M, D) with swapped strides
    locations_nc = locations.transpose(1, 2).contiguous().transpose(1, 2)
    weights_nc = weights.transpose(0, 1).contiguous().transpose(0, 1)
    assert not any(t.is_contiguous() for t in (value_nc, locations_nc, weights_nc))
    out = multi_scale_deformable_attention(
        value_nc, spatial_shapes, level_start_index, locations_nc, weights_nc, backend="cpu"
    )
    expected = reference.forward(value, spatial_shapes, level_start_index, locations, weights)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["cpu", "reference", "auto"])
def test_zero_queries_return_empty_output(make_inputs, backend):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(2, 0, 4, 8, [[5, 3]], 2)
    value.requires_grad_()
    out = multi_scale_deformable_attention(
        value, spatial_shapes, level_start_index, locations, weights, backend=backend
    )
    assert out.shape == (2, 0, 32)
    out.sum().backward()
    assert torch.equal(value.grad, torch.zeros_like(value))


def test_non_finite_inputs_surface_as_nan_like_reference(make_inputs):
    """grid_sample turns a NaN/inf location, or a non-finite weight on a point outside the map, into NaN
    for that head; the kernel does the same instead of silently reading zeros."""
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        1, 4, 2, 8, [[5, 3]], 2, dtype=torch.float32
    )
    locations[0, 0, 0, 0, 0, 0] = float("nan")
    locations[0, 1, 1, 0, 1, 1] = float("inf")
    locations[0, 2, 0, 0, 0] = 5.0  # outside ...
    weights[0, 2, 0, 0, 0] = float("inf")  # ... with an infinite weight
    expected = reference.forward(value, spatial_shapes, level_start_index, locations, weights)
    actual = cpu.forward(value, spatial_shapes, level_start_index, locations, weights)
    assert expected.isnan().any()
    torch.testing.assert_close(actual, expected, equal_nan=True)


def test_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path, monkeypatch):
    import os
    import time

    from deformable_detr.ops import cpu

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    name = "deformable_detr_lock_test"
    build_dir = tmp_path / name
    build_dir.mkdir()
    lock = build_dir / "lock"
    lock.touch()
    cpu._remove_stale_lock(name)
    assert lock.exists()  # a build may be running right now
    old = time.time() - cpu.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    cpu._remove_stale_lock(name)
    assert not lock.exists()
