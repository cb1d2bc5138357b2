"""The grid_sample reference vs a plain per-point bilinear loop (the independent oracle), float64."""

import math

import pytest
import torch

from deformable_detr.ops import reference


def bilinear_loop(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Textbook bilinear sampling, one point at a time: pixel (j, i) has centre ((j + 0.5) / W, (i + 0.5) / H);
    neighbours outside the map read zero. (B, S, M, D) ... -> (B, Lq, M * D)."""
    B, _, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    out = torch.zeros(B, Lq, M, D, dtype=value.dtype)
    for b in range(B):
        for q in range(Lq):
            for m in range(M):
                for level in range(L):
                    height, width = (int(n) for n in spatial_shapes[level])
                    start = int(level_start_index[level])
                    for p in range(P):
                        x = float(sampling_locations[b, q, m, level, p, 0]) * width - 0.5
                        y = float(sampling_locations[b, q, m, level, p, 1]) * height - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                            if 0 <= xi < width and 0 <= yi < height:
                                weight = (1 - abs(x - xi)) * (1 - abs(y - yi))
                                pixel = value[b, start + yi * width + xi, m]
                                out[b, q, m] += attention_weights[b, q, m, level, p] * weight * pixel
    return out.view(B, Lq, M * D)


@pytest.mark.parametrize(
    "B, Lq, M, D, shapes, P",
    [
        (1, 3, 1, 2, [[3, 5]], 1),
        (2, 4, 2, 3, [[4, 3], [1, 1], [2, 5]], 2),
        (1, 5, 3, 1, [[13, 17], [2, 2]], 3),
    ],
)
def test_reference_matches_bilinear_loop(make_inputs, B, Lq, M, D, shapes, P):
    inputs = make_inputs(B, Lq, M, D, shapes, P, low=-0.3, high=1.3)
    torch.testing.assert_close(reference.forward(*inputs), bilinear_loop(*inputs), rtol=1e-12, atol=1e-12)


def test_reference_at_pixel_centres_and_borders(make_levels):
    """Pixel centres read the pixel itself; the map border (0 or 1) reads half of the edge pixel."""
    spatial_shapes, level_start_index, S = make_levels([[2, 4]])
    value = torch.arange(S, dtype=torch.float64).view(1, S, 1, 1) + 1  # pixel (j, i) holds 4 * i + j + 1
    points = [(0.5 / 4, 0.5 / 2), (3.5 / 4, 1.5 / 2), (0.0, 0.25), (1.0, 0.75), (-0.2, 0.5), (0.5, 1.3)]
    expected = [1.0, 8.0, 0.5, 4.0, 0.0, 0.0]
    locations = torch.tensor(points, dtype=torch.float64).view(1, len(points), 1, 1, 1, 2)
    weights = torch.ones(1, len(points), 1, 1, 1, dtype=torch.float64)
    out = reference.forward(value, spatial_shapes, level_start_index, locations, weights)
    torch.testing.assert_close(out.view(-1), torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(out, bilinear_loop(value, spatial_shapes, level_start_index, locations, weights))


def test_reference_gradcheck(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(1, 2, 2, 3, [[3, 4], [2, 1]], 2)
    # random points miss the pixel-grid lines (where bilinear sampling has kinks) almost surely
    locations = locations.requires_grad_()
    torch.autograd.gradcheck(
        lambda v, loc, w: reference.forward(v, spatial_shapes, level_start_index, loc, w),
        (value.requires_grad_(), locations, weights.requires_grad_()),
    )
