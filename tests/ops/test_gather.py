"""The gather backend (the ONNX export path) against the grid_sample reference, in float64."""

import pytest
import torch
from op_oracles import random_inputs

from deformable_detr.ops import gather, multi_scale_deformable_attention, reference


@pytest.mark.parametrize("shapes", [[[5, 3]], [[5, 3], [2, 2]], [[7, 9], [4, 5], [2, 3], [1, 1]]])
@pytest.mark.parametrize("B, Lq, M, D, P", [(1, 1, 1, 1, 1), (2, 7, 3, 4, 2), (3, 5, 2, 8, 4)])
def test_equals_reference_with_points_outside(shapes, B, Lq, M, D, P):
    inputs = random_inputs(B, Lq, M, D, shapes, P, low=-0.5, high=1.5)  # a third of the points partly/fully outside
    torch.testing.assert_close(gather.forward(*inputs), reference.forward(*inputs), rtol=1e-12, atol=1e-12)


def test_equals_reference_on_borders_centres_and_far_outside():
    """Points exactly on pixel centres, on the map's edges (0, 1), half a pixel beyond, and far away."""
    value, spatial_shapes, level_start_index, _, _ = random_inputs(1, 1, 2, 3, [[4, 5], [2, 3]], 1)
    coordinates = torch.tensor(
        [0.0, 1.0, 0.1, 0.5, 0.9, -0.1, 1.1, -0.125, 1.125, -3.0, 7.5, 1e6, -1e6], dtype=torch.float64
    )
    xs, ys = torch.meshgrid(coordinates, coordinates, indexing="ij")
    points = torch.stack((xs.flatten(), ys.flatten()), -1)  # (Lq, 2)
    Lq = points.shape[0]
    locations = points.view(1, Lq, 1, 1, 1, 2).expand(1, Lq, 2, 2, 1, 2).contiguous()  # (B, Lq, M, L, P, 2)
    weights = torch.rand(1, Lq, 2, 2, 1, dtype=torch.float64)
    args = (value, spatial_shapes, level_start_index, locations, weights)
    torch.testing.assert_close(gather.forward(*args), reference.forward(*args), rtol=1e-12, atol=1e-12)


def test_gradients_equal_reference():
    inputs = random_inputs(2, 4, 2, 3, [[5, 3], [2, 2]], 2, low=-0.3, high=1.3)
    grad_output = torch.randn(2, 4, 6, dtype=torch.float64)
    grads = []
    for backend in (gather, reference):
        leaves = [t.clone().requires_grad_() for t in (inputs[0], inputs[3], inputs[4])]
        backend.forward(leaves[0], inputs[1], inputs[2], leaves[1], leaves[2]).backward(grad_output)
        grads.append([leaf.grad for leaf in leaves])
    for actual, expected in zip(*grads):
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_follows_reference(dtype):
    inputs = random_inputs(2, 6, 2, 4, [[6, 5], [3, 2]], 2, dtype=dtype)
    expected = reference.forward(*(t.double() if t.is_floating_point() else t for t in inputs))
    actual = gather.forward(*inputs)
    assert actual.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2  # bf16 inputs and output, float32 inside
    torch.testing.assert_close(actual.double(), expected, rtol=tolerance, atol=tolerance)


def test_non_finite_location_gives_nan_like_reference():
    value, spatial_shapes, level_start_index, locations, weights = random_inputs(1, 3, 2, 2, [[4, 4]], 1)
    locations[0, 1, 0, 0, 0, 0] = float("nan")
    locations[0, 2, 1, 0, 0, 1] = float("inf")
    args = (value, spatial_shapes, level_start_index, locations, weights)
    out, expected = gather.forward(*args), reference.forward(*args)
    assert torch.equal(out.isnan(), expected.isnan()) and out.isnan().any()
    torch.testing.assert_close(out.nan_to_num(), expected.nan_to_num(), rtol=1e-12, atol=1e-12)


def test_dispatcher_picks_gather_while_exporting(monkeypatch):
    """`auto` under torch.onnx export (either exporter) runs the gather backend; backend='gather' works by name."""
    inputs = random_inputs(1, 3, 2, 2, [[4, 4]], 1)
    calls = []
    monkeypatch.setattr(gather, "forward", lambda *args: calls.append(1) or reference.forward(*args))
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    multi_scale_deformable_attention(*inputs)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: False)
    multi_scale_deformable_attention(*inputs, backend="gather")
    assert len(calls) == 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_traced_graph_follows_new_sizes():
    """Traced once, the graph samples maps of other sizes correctly: no size is baked in."""

    def run(value, spatial_shapes, level_start_index, locations, weights):
        return multi_scale_deformable_attention(value, spatial_shapes, level_start_index, locations, weights)

    traced = torch.jit.trace(run, random_inputs(2, 5, 2, 4, [[5, 3], [2, 2]], 2), check_trace=False)
    assert "deformable_detr::ms_deform_attn" not in str(traced.graph)
    other = random_inputs(3, 7, 2, 4, [[9, 4], [1, 6]], 2, seed=1)
    torch.testing.assert_close(traced(*other), reference.forward(*other), rtol=1e-12, atol=1e-12)
