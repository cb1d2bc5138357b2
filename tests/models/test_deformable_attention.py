"""MultiScaleDeformableAttention: the paper's initialisation, sampling geometry, masking, compile."""

import math

import pytest
import torch

import deformable_detr.models.deformable_attention as attention_module
from deformable_detr.models.deformable_attention import MultiScaleDeformableAttention

SHAPES = [[6, 8], [3, 4]]  # (H_l, W_l) per level


def levels():
    spatial_shapes = torch.tensor(SHAPES)
    sizes = spatial_shapes.prod(1)
    return spatial_shapes, torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]]), int(sizes.sum())


def test_init_ring_of_head_directions():
    attention = MultiScaleDeformableAttention(d_model=32, n_levels=2, n_heads=8, n_points=3)
    assert torch.count_nonzero(attention.sampling_offsets.weight) == 0
    bias = attention.sampling_offsets.bias.view(8, 2, 3, 2)  # (M, L, P, 2)
    # head m points at angle 2*pi*m/8, scaled so max(|x|, |y|) = 1: a square ring of 8 directions
    directions = torch.tensor(
        [[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]], dtype=torch.float32
    )
    for point in range(3):
        for level in range(2):
            torch.testing.assert_close(bias[:, level, point], directions * (point + 1), atol=1e-6, rtol=0)


def test_init_uniform_attention_and_xavier_projections():
    attention = MultiScaleDeformableAttention(d_model=32, n_levels=2, n_heads=4, n_points=2)
    assert torch.count_nonzero(attention.attention_weights.weight) == 0
    assert torch.count_nonzero(attention.attention_weights.bias) == 0
    bound = math.sqrt(6 / (32 + 32))  # xavier-uniform limit for a 32 x 32 matrix
    for projection in (attention.value_proj, attention.output_proj):
        assert torch.count_nonzero(projection.bias) == 0
        assert projection.weight.abs().max() <= bound and projection.weight.abs().max() > 0.8 * bound


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(d_model=30, n_heads=8), r"d_model \(30\) must be divisible by n_heads \(8\)"),
        (dict(n_points=0), "n_points must be >= 1"),
        (dict(backend="gpu"), "unknown backend 'gpu'"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiScaleDeformableAttention(**kwargs)


def test_bad_reference_points_shape_raises():
    attention = MultiScaleDeformableAttention(d_model=16, n_levels=2, n_heads=2, n_points=2)
    spatial_shapes, level_start_index, S = levels()
    with pytest.raises(ValueError, match="reference_points must be"):
        attention(
            torch.randn(1, 3, 16), torch.rand(1, 3, 2, 3), torch.randn(1, S, 16), spatial_shapes, level_start_index
        )


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_at_init_samples_the_ring_pixels(backend):
    """From a pixel centre, head m's point i reads the pixel (i + 1) steps along its direction on every
    level, and the attention is uniform: the output is the mean of those pixels' projected values."""
    torch.manual_seed(0)
    M, L, P, C = 4, 2, 2, 16  # 4 heads: right, down, left, up
    attention = MultiScaleDeformableAttention(C, L, M, P, backend=backend).double()
    spatial_shapes, level_start_index, S = levels()
    value_input = torch.randn(1, S, C, dtype=torch.float64)
    level_pixels = [(2, 2), (1, 1)]  # (row, column) of the query's pixel on each level
    reference_points = torch.tensor(
        [[(c + 0.5) / w, (r + 0.5) / h] for (r, c), (h, w) in zip(level_pixels, SHAPES)], dtype=torch.float64
    ).view(1, 1, L, 2)
    query = torch.randn(1, 1, C, dtype=torch.float64)
    out = attention(query, reference_points, value_input, spatial_shapes, level_start_index)

    value = attention.value_proj(value_input).view(S, M, C // M)
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)]  # (row, column) step of each head
    expected = torch.zeros(M, C // M, dtype=torch.float64)
    for m, (dr, dc) in enumerate(steps):
        for level, ((r, c), (h, w)) in enumerate(zip(level_pixels, SHAPES)):
            for i in range(P):
                row, col = r + dr * (i + 1), c + dc * (i + 1)
                if 0 <= row < h and 0 <= col < w:
                    expected[m] += value[int(level_start_index[level]) + row * w + col, m] / (L * P)
    expected = attention.output_proj(expected.view(1, 1, C))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_box_reference_points_scale_offsets_by_box_size(monkeypatch):
    """(cx, cy, w, h) form: offsets / P * (w, h) * 0.5, so at init head 0's last point is on the box's right edge."""
    captured = {}

    def spy(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend):
        captured["locations"] = sampling_locations
        return value.new_zeros(value.shape[0], sampling_locations.shape[1], value.shape[2] * value.shape[3])

    monkeypatch.setattr(attention_module, "multi_scale_deformable_attention", spy)
    attention = MultiScaleDeformableAttention(d_model=16, n_levels=2, n_heads=4, n_points=2)
    spatial_shapes, level_start_index, S = levels()
    box = torch.tensor([0.4, 0.5, 0.2, 0.6])
    attention(torch.randn(1, 1, 16), box.expand(1, 1, 2, 4), torch.randn(1, S, 16), spatial_shapes, level_start_index)
    locations = captured["locations"]  # (1, 1, M, L, P, 2)
    torch.testing.assert_close(locations[0, 0, 0, :, -1], torch.tensor([[0.5, 0.5], [0.5, 0.5]]))  # cx + w / 2
    torch.testing.assert_close(locations[0, 0, 1, :, 0], torch.tensor([[0.4, 0.65], [0.4, 0.65]]))  # cy + h / P / 2


def test_padding_mask_hides_padded_values():
    torch.manual_seed(0)
    attention = MultiScaleDeformableAttention(d_model=16, n_levels=2, n_heads=2, n_points=2)
    spatial_shapes, level_start_index, S = levels()
    query, reference_points = torch.randn(2, 5, 16), torch.rand(2, 5, 2, 2)
    value_input = torch.randn(2, S, 16)
    padding_mask = torch.zeros(2, S, dtype=torch.bool)
    padding_mask[1, 10:20] = True
    out = attention(query, reference_points, value_input, spatial_shapes, level_start_index, padding_mask)
    changed = value_input.clone()
    changed[1, 10:20] += 100.0
    out_changed = attention(query, reference_points, changed, spatial_shapes, level_start_index, padding_mask)
    torch.testing.assert_close(out, out_changed)
    unmasked = attention(query, reference_points, changed, spatial_shapes, level_start_index)
    assert not torch.allclose(unmasked[1], out[1])


def test_backends_agree_and_autocast_runs():
    torch.manual_seed(0)
    spatial_shapes, level_start_index, S = levels()
    inputs = (torch.randn(2, 7, 32), torch.rand(2, 7, 2, 2), torch.randn(2, S, 32), spatial_shapes, level_start_index)
    fused = MultiScaleDeformableAttention(32, 2, 4, 2, backend="auto")
    plain = MultiScaleDeformableAttention(32, 2, 4, 2, backend="reference")
    plain.load_state_dict(fused.state_dict())
    torch.testing.assert_close(fused(*inputs), plain(*inputs), rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused(*inputs)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), plain(*inputs), rtol=0.05, atol=0.05)


def test_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    attention = MultiScaleDeformableAttention(32, 2, 4, 2)
    spatial_shapes, level_start_index, S = levels()
    query = torch.randn(2, 7, 32, requires_grad=True)
    inputs = (
        query,
        torch.rand(2, 7, 2, 2),
        torch.randn(2, S, 32),
        spatial_shapes,
        level_start_index,
        torch.rand(2, S) < 0.2,
    )
    compiled = torch.compile(attention, fullgraph=True, backend="aot_eager")
    out = compiled(*inputs)
    (grad,) = torch.autograd.grad(out.sum(), query)
    expected = attention(*inputs)
    (expected_grad,) = torch.autograd.grad(expected.sum(), query)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grad, expected_grad)
