"""One synthetic image: its shape, which objects (size bucket, class) and where they go.

Objects are drawn largest first, later ones over earlier ones. A placement that would hide more than
`MAX_HIDDEN_FRACTION` of an already drawn object is rejected, so every annotated object is at least half
visible; its box is still the full (unoccluded) object's tight box.
"""

from __future__ import annotations

import math

import numpy as np

from deformable_detr.data.synthetic_paint import background, object_texture
from deformable_detr.data.synthetic_shapes import CATEGORIES, shape_coverage

MAX_OBJECTS = 12
MAX_HIDDEN_FRACTION = 0.5  # an object may be covered by later ones up to this fraction of its mask
_ASPECT_RANGE = (0.75, 4 / 3)
_MAX_ROTATION = math.radians(30)
# Nominal (unrotated) box areas in px^2 per COCO bucket; rotation enlarges the final box a little.
_SMALL_AREA = (12.0**2, 27.0**2)
_MEDIUM_AREA = (36.0**2, 85.0**2)
_LARGE_MIN_SIDE = 105.0
_BUCKET_PROBABILITIES = (0.5, 0.35, 0.15)  # small, medium, large
_MAX_LARGE_PER_IMAGE = 2
_PLACEMENT_TRIES = 12


def render_image(
    rng: np.random.Generator,
    image_size: int,
    classes: tuple[str, ...] = CATEGORIES,
    objects_per_image: tuple[int, int] = (1, MAX_OBJECTS),
    object_size: tuple[float, float] | None = None,
) -> tuple[np.ndarray, list[tuple[int, list[int]]]]:
    """Draw one image and its objects.

    Args:
        rng: the only source of randomness.
        image_size: longer side in pixels.
        classes: shape names; category id k + 1 draws classes[k].
        objects_per_image, object_size: as `make_dataset`.

    Returns:
        image (H, W, 3) uint8 RGB; objects as (category_id in 1..K, [x, y, w, h] int pixels).
    """
    height, width = _sample_image_shape(rng, image_size)
    canvas = background(rng, height, width)  # (H, W, 3) float32 in [0, 255]
    owner = np.full((height, width), -1, dtype=np.int32)  # index of the object on top at each pixel
    full_pixels: list[int] = []  # mask size of each drawn object
    visible_pixels: list[int] = []  # of which not covered by later objects
    objects = []
    for area, category in _sample_objects(rng, height, width, len(classes), objects_per_image, object_size):
        drawn = place_object(rng, canvas, owner, full_pixels, visible_pixels, area, classes[category])
        if drawn is not None:
            objects.append((category + 1, drawn))
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), objects


def _sample_image_shape(rng: np.random.Generator, image_size: int) -> tuple[int, int]:
    """(height, width) with the longer side `image_size` and aspect w/h log-uniform in 0.75..1.33."""
    aspect = math.exp(rng.uniform(math.log(_ASPECT_RANGE[0]), math.log(_ASPECT_RANGE[1])))
    if aspect >= 1:
        return round(image_size / aspect), image_size
    return image_size, round(image_size * aspect)


def _sample_objects(
    rng: np.random.Generator,
    height: int,
    width: int,
    num_classes: int,
    objects_per_image: tuple[int, int] = (1, MAX_OBJECTS),
    object_size: tuple[float, float] | None = None,
) -> list[tuple[float, int]]:
    """(nominal box area, category index) for each object, largest first (drawing order)."""
    large_max_side = 0.8 * min(height, width)
    count = int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
    if object_size is not None:
        low, high = (min(side, large_max_side) for side in object_size)
        objects = []
        for _ in range(count):
            side = math.exp(rng.uniform(math.log(low), math.log(high)))  # log-uniform side
            objects.append((side * side, int(rng.integers(num_classes))))
        return sorted(objects, key=lambda item: -item[0])
    probabilities = np.array(_BUCKET_PROBABILITIES)
    if large_max_side <= _LARGE_MIN_SIDE + 5:
        probabilities[2] = 0.0  # image too small for COCO-large objects
    probabilities /= probabilities.sum()
    objects, num_large = [], 0
    for _ in range(count):
        bucket = int(rng.choice(3, p=probabilities))
        if bucket == 2 and num_large >= _MAX_LARGE_PER_IMAGE:
            bucket = 1
        num_large += bucket == 2
        low, high = (_SMALL_AREA, _MEDIUM_AREA, (_LARGE_MIN_SIDE**2, large_max_side**2))[bucket]
        area = math.exp(rng.uniform(math.log(low), math.log(high)))  # log-uniform within the bucket
        objects.append((area, int(rng.integers(num_classes))))
    return sorted(objects, key=lambda item: -item[0])


def place_object(rng, canvas, owner, full_pixels, visible_pixels, area, shape: str) -> list[int] | None:
    """Try a few positions for one object; draw it at the first acceptable one.

    Returns its tight [x, y, w, h] box, or None when no position hides at most
    `MAX_HIDDEN_FRACTION` of every earlier object.
    """
    height, width = owner.shape
    aspect = math.exp(rng.uniform(math.log(_ASPECT_RANGE[0]), math.log(_ASPECT_RANGE[1])))
    half_w, half_h = 0.5 * math.sqrt(area * aspect), 0.5 * math.sqrt(area / aspect)
    angle = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION)
    coverage = shape_coverage(shape, half_w, half_h, angle)  # (h, w) in [0, 1]
    rows, cols = np.nonzero(coverage >= 0.5)
    if rows.size == 0:
        return None
    coverage = coverage[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]  # crop to the tight box
    mask = coverage >= 0.5  # (h, w) drawn mask: defines the box and occlusion
    box_h, box_w = mask.shape
    if box_h > height or box_w > width:
        return None
    full = np.asarray(full_pixels, dtype=np.int64)
    visible = np.asarray(visible_pixels, dtype=np.int64)
    for _ in range(_PLACEMENT_TRIES):
        y0, x0 = int(rng.integers(0, height - box_h + 1)), int(rng.integers(0, width - box_w + 1))
        window = (slice(y0, y0 + box_h), slice(x0, x0 + box_w))
        covered = np.bincount(owner[window][mask] + 1, minlength=len(full) + 1)[1:]  # (objects so far,)
        if len(full) and np.any(visible - covered < (1 - MAX_HIDDEN_FRACTION) * full):
            continue
        texture = object_texture(rng, box_h, box_w, canvas[window][mask].mean(axis=0))  # (h, w, 3)
        alpha = coverage[..., None]  # (h, w, 1)
        canvas[window] = canvas[window] * (1 - alpha) + texture * alpha
        for j in np.nonzero(covered)[0]:
            visible_pixels[j] -= int(covered[j])
        owner[window][mask] = len(full_pixels)
        full_pixels.append(int(mask.sum()))
        visible_pixels.append(int(mask.sum()))
        return [x0, y0, box_w, box_h]
    return None
