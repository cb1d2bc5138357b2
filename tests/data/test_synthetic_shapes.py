"""Synthetic shapes: each outline fills its nominal box and the new shapes differ from the demo ones."""

import numpy as np
import pytest

from deformable_detr.data.synthetic_shapes import SHAPES, shape_coverage


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_fills_its_tight_box_edge_to_edge(shape):
    coverage = shape_coverage(shape, half_w=12.0, half_h=9.0, angle=0.0)  # (h, w)
    rows, cols = np.nonzero(coverage >= 0.5)
    # Unrotated, every shape reaches all four sides of its nominal 24 x 18 box; a pointed tip (star)
    # is under half covered in its last pixel, so allow 1 px per side.
    assert abs((cols.max() - cols.min() + 1) - 24) <= 2 and abs((rows.max() - rows.min() + 1) - 18) <= 2


@pytest.mark.parametrize(
    "first, second", [("hexagon", "circle"), ("semicircle", "circle"), ("crescent", "circle"), ("arrow", "triangle")]
)
def test_new_shapes_differ_from_the_demo_shapes(first, second):
    a = shape_coverage(first, 20.0, 20.0, 0.0) >= 0.5
    b = shape_coverage(second, 20.0, 20.0, 0.0) >= 0.5
    assert a.shape == b.shape and (a != b).mean() > 0.08  # at least 8 % of the box differs
