"""One synthetic image: objects inside the image, occlusion limited to half of each object."""

import numpy as np

from deformable_detr.data import synthetic_render
from deformable_detr.data.synthetic_render import render_image
from deformable_detr.data.synthetic_shapes import CATEGORIES


def test_render_image_returns_objects_inside_the_image():
    rng = np.random.default_rng(0)
    image, objects = render_image(rng, 128)
    assert 1 <= len(objects) <= synthetic_render.MAX_OBJECTS
    for category_id, (x, y, w, h) in objects:
        assert 1 <= category_id <= len(CATEGORIES)
        assert 0 <= x and 0 <= y and x + w <= image.shape[1] and y + h <= image.shape[0]


def test_no_object_is_more_than_half_hidden():
    # Place many objects on a small canvas; recount each one's visible pixels from the owner map.
    rng = np.random.default_rng(0)
    canvas = np.full((120, 120, 3), 128, np.float32)
    owner = np.full((120, 120), -1, np.int32)
    full, visible, placed = [], [], 0
    for area in [100.0**2, 95.0**2] + [40.0**2] * 10 + [15.0**2] * 30:
        placed += (
            synthetic_render.place_object(rng, canvas, owner, full, visible, area, CATEGORIES[int(rng.integers(6))])
            is not None
        )
    assert placed == len(full) and 5 <= placed < 42  # some placements had to be refused
    counted = np.bincount(owner.ravel() + 1, minlength=len(full) + 1)[1:]
    np.testing.assert_array_equal(counted, visible)
    assert (np.array(visible) >= (1 - synthetic_render.MAX_HIDDEN_FRACTION) * np.array(full)).all()
