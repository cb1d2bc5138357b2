"""Synthetic COCO-format shapes dataset: the project's embedded default data.

Each image has a textured, cluttered background (two-colour gradient, low-frequency blotches,
pixel noise and thin distractor strokes that are *not* objects) and 1..12 filled shapes of six
categories (`objects_per_image`, `object_size` and `classes` make easier sets: fewer, larger objects, fewer classes). The category is the shape's outline only; colour and texture (solid, stripes, checker,
shading) are random, so a detector must learn shape. Objects are stretched to aspect ratios
0.75..1.33, rotated by up to +-30 degrees and span all three COCO size buckets (small < 32^2 px,
medium, large > 96^2 px), with about half of them small.

Occlusion: objects are drawn largest first, later ones over earlier ones. A placement that would
hide more than `MAX_HIDDEN_FRACTION` of an already drawn object is rejected, so every annotated
object is at least half visible; its box is still the full (unoccluded) object's tight box.

Annotations: `bbox` is [x, y, w, h] in pixels, tight around the object's drawn mask (pixels at least
half covered by the anti-aliased shape); `area` is that **box** area w * h (so COCO's size buckets
are box sizes); `iscrowd` 0; category ids 1..6. Output is a pure function of the arguments: the
same seed gives byte-identical JSON and identical images, whatever the number of workers.
"""

from __future__ import annotations

import colorsys
import json
import math
import multiprocessing
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from deformable_detr.checkpoint.files import atomic_write_text
from deformable_detr.errors import ConfigError

CATEGORIES = ("circle", "square", "triangle", "star", "ring", "cross")
# Named class sets for `make_dataset(classes=...)`: the demo's six, and four other shapes for transfer experiments.
CLASS_SETS = {"demo": CATEGORIES, "transfer": ("hexagon", "crescent", "arrow", "semicircle")}
MAX_OBJECTS = 12
MAX_HIDDEN_FRACTION = 0.5  # an object may be covered by later ones up to this fraction of its mask
MIN_CONTRAST = 110.0  # RGB distance between an object's colour and the pixels it is drawn over
JPEG_QUALITY = 90
_ASPECT_RANGE = (0.75, 4 / 3)
_MAX_ROTATION = math.radians(30)
# Nominal (unrotated) box areas in px^2 per COCO bucket; rotation enlarges the final box a little.
_SMALL_AREA = (12.0**2, 27.0**2)
_MEDIUM_AREA = (36.0**2, 85.0**2)
_LARGE_MIN_SIDE = 105.0
_BUCKET_PROBABILITIES = (0.5, 0.35, 0.15)  # small, medium, large
_MAX_LARGE_PER_IMAGE = 2
_PLACEMENT_TRIES = 12
_MIN_OBJECT_SIDE = 4.0  # px; `object_size` below this draws shapes too small to tell apart
_MIN_PATTERNED_SIDE = 20  # px; smaller objects get solid or shaded fills only
_PARALLEL_MIN_IMAGES = 48  # below this a process pool costs more than it saves


@dataclass(frozen=True)
class SplitPaths:
    """Where one split of a generated dataset lives."""

    images_dir: Path
    annotations_file: Path


def make_dataset(
    out_dir: str | Path,
    num_train: int,
    num_val: int,
    image_size: int = 256,
    seed: int = 0,
    num_workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    classes: tuple[str, ...] | str = "demo",
    objects_per_image: tuple[int, int] = (1, MAX_OBJECTS),
    object_size: tuple[float, float] | None = None,
) -> dict[str, SplitPaths]:
    """Render the synthetic shapes dataset as COCO-format splits under `out_dir`.

    Args:
        out_dir: output folder; gets `train/images/*.jpg`, `train/annotations.json` and the same
            for `val`. Existing files of the same names are overwritten.
        num_train: number of training images (>= 0).
        num_val: number of validation images (>= 0).
        image_size: longer image side in pixels (>= 64); the shorter side is 0.75..1 of it. Large
            objects (> 96^2 px) need a shorter side of at least ~132 px and are skipped below that.
        seed: the output is a pure function of the arguments other than num_workers and progress.
        num_workers: processes used to render; None -> all CPU cores. Does not change the output.
        progress: called with the number of images just finished (for a progress bar).
        classes: a name in `CLASS_SETS` ("demo": the six shapes; "transfer": hexagon, crescent, arrow,
            semicircle) or a tuple of shape names from `SHAPES`; category ids are 1..K in this order.
        objects_per_image: (min, max) objects drawn per image, uniform; a placement that would hide too much
            of an earlier object is dropped, so an image may hold fewer.
        object_size: (min, max) nominal box side in px (square root of the unrotated box area), log-uniform;
            None = the COCO size-bucket mix (about half small). Sides above 0.8 of the shorter image side are
            capped there.

    Returns:
        {"train": SplitPaths, "val": SplitPaths}.
    """
    for name, value, minimum in (("num_train", num_train, 0), ("num_val", num_val, 0), ("image_size", image_size, 64)):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"make_dataset: {name}={value!r} must be an integer >= {minimum}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"make_dataset: seed={seed!r} must be a non-negative integer")
    classes = resolve_classes(classes)
    objects_per_image, object_size = check_object_options(objects_per_image, object_size)
    out_dir = Path(out_dir)
    workers = num_workers or os.cpu_count() or 1
    splits = {}
    for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        images_dir = out_dir / split / "images"
        images_dir.mkdir(parents=True, exist_ok=True)
        tasks = [
            (seed, split_index, index, image_size, str(images_dir), classes, objects_per_image, object_size)
            for index in range(count)
        ]
        results = _map(_render_and_save, tasks, workers, progress)
        annotations_file = out_dir / split / "annotations.json"
        options = {} if objects_per_image == (1, MAX_OBJECTS) else {"objects_per_image": list(objects_per_image)}
        options.update({} if object_size is None else {"object_size": list(object_size)})
        _write_json(annotations_file, _coco_dict(results, split, image_size, seed, classes, options))
        splits[split] = SplitPaths(images_dir, annotations_file)
    return splits


def _map(function, tasks: list, workers: int, progress) -> list:
    """Ordered map over `tasks`, in a process pool when that pays off."""
    if workers <= 1 or len(tasks) < _PARALLEL_MIN_IMAGES:
        results = []
        for task in tasks:
            results.append(function(task))
            if progress is not None:
                progress(1)
        return results
    chunksize = max(1, min(32, len(tasks) // (4 * workers)))
    # fork where available (Linux): spawn would re-run an unguarded calling script in every worker.
    method = (
        "fork" if "fork" in multiprocessing.get_all_start_methods() and sys.platform.startswith("linux") else "spawn"
    )
    with multiprocessing.get_context(method).Pool(workers) as pool:
        results = []
        for result in pool.imap(function, tasks, chunksize=chunksize):
            results.append(result)
            if progress is not None:
                progress(1)
    return results


def resolve_classes(classes: tuple[str, ...] | str) -> tuple[str, ...]:
    """Shape names of a class set name or a comma-separated list / tuple of shape names."""
    if isinstance(classes, str):
        classes = CLASS_SETS.get(classes) or tuple(name.strip() for name in classes.split(",") if name.strip())
    classes = tuple(classes)
    unknown = [name for name in classes if name not in _SHAPES]
    if not classes or unknown or len(set(classes)) != len(classes):
        raise ConfigError(
            f"make_dataset: classes {classes!r} must be distinct shape names from {', '.join(_SHAPES)} "
            f"or a set name ({', '.join(CLASS_SETS)})"
        )
    return classes


def check_object_options(
    objects_per_image: tuple[int, int], object_size: tuple[float, float] | None
) -> tuple[tuple[int, int], tuple[float, float] | None]:
    """`make_dataset`'s object count and size ranges as tuples, or a ConfigError naming the bad one."""
    count = tuple(objects_per_image)
    if (
        len(count) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in count)
        or not 1 <= count[0] <= count[1] <= MAX_OBJECTS
    ):
        raise ConfigError(
            f"make_dataset: objects_per_image={objects_per_image!r} must be (min, max) integers "
            f"with 1 <= min <= max <= {MAX_OBJECTS}"
        )
    if object_size is None:
        return (count[0], count[1]), None
    size = tuple(object_size)
    if len(size) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in size):
        raise ConfigError(f"make_dataset: object_size={object_size!r} must be (min, max) box sides in px")
    if not _MIN_OBJECT_SIDE <= size[0] <= size[1]:
        raise ConfigError(
            f"make_dataset: object_size={object_size!r} must satisfy {_MIN_OBJECT_SIDE:g} <= min <= max (px)"
        )
    return (count[0], count[1]), (float(size[0]), float(size[1]))


def _coco_dict(
    results: list[tuple[int, int, list]],
    split: str,
    image_size: int,
    seed: int,
    classes: tuple[str, ...] = CATEGORIES,
    options: dict | None = None,
) -> dict:
    """Assemble the COCO instances dict from per-image (width, height, objects) in image order; `options`
    (non-default generator settings) are recorded in "info"."""
    images, annotations = [], []
    for index, (width, height, objects) in enumerate(results):
        image_id = index + 1
        images.append({"id": image_id, "file_name": f"{index:06d}.jpg", "width": width, "height": height})
        for category_id, bbox in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": bbox,
                    "area": float(bbox[2] * bbox[3]),
                    "iscrowd": 0,
                }
            )
    return {
        "info": {
            "description": f"deformable_detr synthetic shapes, {split} split",
            "image_size": image_size,
            "seed": seed,
            **(options or {}),
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(classes)],
    }


def _write_json(path: Path, data: dict) -> None:
    """Write atomically (temp file then rename), so a crash never leaves half a file."""
    atomic_write_text(path, json.dumps(data, separators=(",", ":")))


def _render_and_save(task: tuple) -> tuple[int, int, list]:
    """Render image `index` of a split, write its JPEG, return (width, height, [(category_id, bbox)])."""
    seed, split_index, index, image_size, images_dir, classes, objects_per_image, object_size = task
    rng = np.random.default_rng([seed, split_index, index])
    image, objects = render_image(rng, image_size, classes, objects_per_image, object_size)
    Image.fromarray(image).save(os.path.join(images_dir, f"{index:06d}.jpg"), quality=JPEG_QUALITY)
    height, width = image.shape[:2]
    return width, height, objects


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
    canvas = _background(rng, height, width)  # (H, W, 3) float32 in [0, 255]
    owner = np.full((height, width), -1, dtype=np.int32)  # index of the object on top at each pixel
    full_pixels: list[int] = []  # mask size of each drawn object
    visible_pixels: list[int] = []  # of which not covered by later objects
    objects = []
    for area, category in _sample_objects(rng, height, width, len(classes), objects_per_image, object_size):
        drawn = _place_object(rng, canvas, owner, full_pixels, visible_pixels, area, classes[category])
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


def _place_object(rng, canvas, owner, full_pixels, visible_pixels, area, shape: str) -> list[int] | None:
    """Try a few positions for one object; draw it at the first acceptable one.

    Returns its tight [x, y, w, h] box, or None when no position hides at most
    `MAX_HIDDEN_FRACTION` of every earlier object.
    """
    height, width = owner.shape
    aspect = math.exp(rng.uniform(math.log(_ASPECT_RANGE[0]), math.log(_ASPECT_RANGE[1])))
    half_w, half_h = 0.5 * math.sqrt(area * aspect), 0.5 * math.sqrt(area / aspect)
    angle = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION)
    coverage = _shape_coverage(shape, half_w, half_h, angle)  # (h, w) in [0, 1]
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
        texture = _texture(rng, box_h, box_w, canvas[window][mask].mean(axis=0))  # (h, w, 3)
        alpha = coverage[..., None]  # (h, w, 1)
        canvas[window] = canvas[window] * (1 - alpha) + texture * alpha
        for j in np.nonzero(covered)[0]:
            visible_pixels[j] -= int(covered[j])
        owner[window][mask] = len(full_pixels)
        full_pixels.append(int(mask.sum()))
        visible_pixels.append(int(mask.sum()))
        return [x0, y0, box_w, box_h]
    return None


def _shape_coverage(shape: str, half_w: float, half_h: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage (h, w) in {0, .25, .5, .75, 1} of a rotated, stretched shape.

    The shape is defined in its own frame (u, v) in [-1, 1]^2 (v down), scaled by (half_w, half_h),
    then rotated by `angle`; each pixel is sampled at 2 x 2 sub-pixel points.
    """
    cos, sin = math.cos(angle), math.sin(angle)
    extent_x = abs(cos) * half_w + abs(sin) * half_h  # half-extents of the rotated frame's box
    extent_y = abs(sin) * half_w + abs(cos) * half_h
    size_x, size_y = 2 * math.ceil(extent_x) + 2, 2 * math.ceil(extent_y) + 2
    dx = ((np.arange(2 * size_x, dtype=np.float32) + 0.5) / 2 - size_x / 2)[None, :]  # (1, 2w) sub-pixel samples
    dy = ((np.arange(2 * size_y, dtype=np.float32) + 0.5) / 2 - size_y / 2)[:, None]  # (2h, 1)
    u = (cos * dx + sin * dy) / half_w  # (2h, 2w): rotate into the shape's frame, then normalize
    v = (-sin * dx + cos * dy) / half_h
    inside = _SHAPES[shape](u, v)  # (2h, 2w) bool
    return inside.reshape(size_y, 2, size_x, 2).mean(axis=(1, 3), dtype=np.float32)  # (h, w)


def _circle(u, v):
    return u * u + v * v <= 1.0


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 1.0


def _triangle(u, v):
    return (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2)  # apex up at v = -1, base at v = 1


def _ring(u, v):
    squared = u * u + v * v
    return (squared <= 1.0) & (squared >= 0.55**2)  # inner radius 0.55 of the outer


def _cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.34) & (av <= 1.0)) | ((av <= 0.34) & (au <= 1.0))


_STAR_INNER = 0.45  # inner/outer radius of the five-pointed star


def _star(u, v):
    """Exact five-pointed star polygon, one point up, stretched to fill [-1, 1]^2 like the other shapes."""
    # A star of outer radius 1 spans x in [-sin 72, sin 72] and y in [-1, cos 36] (y down): map onto it.
    half_width, bottom = math.sin(math.radians(72)), math.cos(math.radians(36))
    u, v = u * half_width, -1.0 + (v + 1.0) * (1.0 + bottom) / 2
    theta = np.arctan2(v, u) + math.pi / 2  # 0 at the top point
    sector = 2 * math.pi / 5
    phi = np.mod(theta, sector)
    phi = np.minimum(phi, sector - phi)  # angle from the nearest outer vertex, in [0, pi/5]
    s, c = _STAR_INNER * math.sin(math.pi / 5), _STAR_INNER * math.cos(math.pi / 5)
    # Ray at angle phi meets the edge from (1, 0) to (c, s) at r = s / (s cos phi - (c - 1) sin phi).
    boundary = s / (s * np.cos(phi) - (c - 1.0) * np.sin(phi))
    return u * u + v * v <= boundary * boundary


def _hexagon(u, v):
    """Regular hexagon with flat top and bottom, stretched to fill [-1, 1]^2."""
    au, av = np.abs(u), np.abs(v)
    return (av <= 1.0) & (au <= 1.0 - 0.5 * av)


def _crescent(u, v):
    """A unit disc minus a disc of radius 0.8 shifted right by 0.5 (a moon open to the right), stretched
    so its horns (at x = 0.61 of the unit disc) reach the right edge of [-1, 1]^2."""
    u = -1.0 + (u + 1.0) * (1.0 + 0.61) / 2
    return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + v * v > 0.8**2)


def _arrow(u, v):
    """Arrow pointing up: triangular head over the top 45 %, shaft 0.4 wide below it."""
    head = (v <= -0.1) & (np.abs(u) <= (v + 1.0) / 0.9)
    shaft = (v > -0.1) & (v <= 1.0) & (np.abs(u) <= 0.4)
    return head | shaft


def _semicircle(u, v):
    """Upper half disc, stretched so the flat side sits on v = 1 and the arc reaches v = -1."""
    w = (v + 1.0) / 2.0  # 0 at the top, 1 at the flat side
    return (u * u + (1.0 - w) ** 2 <= 1.0) & (w <= 1.0)


_SHAPES = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "ring": _ring,
    "cross": _cross,
    "hexagon": _hexagon,
    "crescent": _crescent,
    "arrow": _arrow,
    "semicircle": _semicircle,
}
SHAPES = tuple(_SHAPES)


def _contrasting_colour(rng: np.random.Generator, below: np.ndarray) -> np.ndarray:
    """A saturated random colour far (>= MIN_CONTRAST in RGB) from `below`, the mean of the pixels it covers."""
    best, best_distance = None, -1.0
    for _ in range(12):
        hue, saturation, value = rng.uniform(), rng.uniform(0.45, 1.0), rng.uniform(0.25, 1.0)
        colour = 255 * np.array(colorsys.hsv_to_rgb(hue, saturation, value), dtype=np.float32)
        distance = float(np.linalg.norm(colour - below))
        if distance >= MIN_CONTRAST:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


def _texture(rng: np.random.Generator, box_h: int, box_w: int, below: np.ndarray) -> np.ndarray:
    """(h, w, 3) float32 fill of one object: solid, stripes, checker or shading around one colour."""
    colour = _contrasting_colour(rng, below)
    second = colour * 0.55 if colour.mean() > 110 else colour * 0.5 + 110  # a darker or lighter shade
    kind = rng.choice(4, p=(0.4, 0.25, 0.15, 0.2))
    if min(box_h, box_w) < _MIN_PATTERNED_SIDE and kind in (1, 2):
        kind = 0  # stripes or checks would hide a small object's outline
    ys, xs = np.mgrid[0:box_h, 0:box_w].astype(np.float32)
    if kind == 0:  # solid
        mix = np.zeros((box_h, box_w), np.float32)
    elif kind == 1:  # stripes at a random angle, period 4..9 px
        direction = rng.uniform(0, math.pi)
        phase = (xs * math.cos(direction) + ys * math.sin(direction)) * (2 * math.pi / rng.uniform(4, 9))
        mix = (np.sin(phase) > 0).astype(np.float32)
    elif kind == 2:  # checker, cells of 3..7 px
        cell = int(rng.integers(3, 8))
        mix = ((ys // cell + xs // cell) % 2).astype(np.float32)
    else:  # shading from one side to the other
        direction = rng.uniform(0, 2 * math.pi)
        ramp = xs * math.cos(direction) + ys * math.sin(direction)
        mix = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    fill = colour * (1 - mix[..., None]) + second * mix[..., None]  # (h, w, 3)
    return fill + rng.normal(0, 4, size=fill.shape).astype(np.float32)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 clutter: muted gradient + coarse blotches + pixel noise + distractor strokes."""
    direction = rng.uniform(0, 2 * math.pi)
    ramp = (np.arange(width, dtype=np.float32) * math.cos(direction))[None, :] + (
        np.arange(height, dtype=np.float32) * math.sin(direction)
    )[:, None]  # (H, W)
    ramp = ((ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0))[..., None]  # (H, W, 1) in [0, 1]
    grey = rng.uniform(60, 190)
    start, end = (grey + rng.uniform(-45, 45, size=(2, 3))).astype(np.float32)  # muted colours near grey
    canvas = start + (end - start) * ramp  # (H, W, 3)
    canvas += _blotches(rng, height, width, amplitude=rng.uniform(10, 30))
    canvas += rng.standard_normal(size=canvas.shape, dtype=np.float32) * np.float32(rng.uniform(3, 10))
    for _ in range(int(rng.integers(4, 13))):
        _draw_stroke(rng, canvas)
    return canvas


def _blotches(rng: np.random.Generator, height: int, width: int, amplitude: float, cells: int = 6) -> np.ndarray:
    """(H, W, 3) smooth low-frequency noise: a coarse random (cells x cells) grid upsampled bilinearly."""
    grid = rng.uniform(-amplitude, amplitude, size=(cells, cells, 3)).astype(np.float32)
    rows = _linear_weights(height, cells)  # (H, cells)
    cols = _linear_weights(width, cells)  # (W, cells)
    along_rows = sum(rows[:, i, None] * grid[i].reshape(1, cells * 3) for i in range(cells))  # (H, cells * 3)
    along_rows = along_rows.reshape(height, cells, 3)  # (H, cells, 3)
    along_rows = along_rows.transpose(0, 2, 1).reshape(height * 3, cells)  # (H * 3, cells)
    # Sum of outer products rather than `@`: a multithreaded BLAS call this small is slower under load.
    flat = sum(along_rows[:, j, None] * cols[None, :, j] for j in range(cells))  # (H * 3, W)
    return flat.reshape(height, 3, width).transpose(0, 2, 1)  # (H, W, 3)


def _linear_weights(size: int, cells: int) -> np.ndarray:
    """(size, cells) weights interpolating `cells` evenly spaced knots linearly at `size` positions."""
    position = np.linspace(0, cells - 1, size, dtype=np.float32)[:, None]  # (size, 1)
    return np.maximum(0, 1 - np.abs(position - np.arange(cells, dtype=np.float32)[None, :]))  # hat functions


def _draw_stroke(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """Draw one thin (1..2.5 px) anti-aliased line segment in place: clutter that is not an object."""
    height, width = canvas.shape[:2]
    start = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    direction = rng.uniform(0, 2 * math.pi)
    end = start + rng.uniform(15, 0.5 * max(height, width)) * np.array([math.cos(direction), math.sin(direction)])
    half_width = rng.uniform(0.5, 1.25)
    x_lo, x_hi = int(max(0, min(start[0], end[0]) - 3)), int(min(width, max(start[0], end[0]) + 4))
    y_lo, y_hi = int(max(0, min(start[1], end[1]) - 3)), int(min(height, max(start[1], end[1]) + 4))
    if x_hi <= x_lo or y_hi <= y_lo:
        return
    ys, xs = np.mgrid[y_lo:y_hi, x_lo:x_hi].astype(np.float32) + 0.5
    segment = end - start
    t = np.clip(((xs - start[0]) * segment[0] + (ys - start[1]) * segment[1]) / float(segment @ segment), 0, 1)
    distance = np.hypot(xs - start[0] - t * segment[0], ys - start[1] - t * segment[1])  # to the segment
    alpha = np.clip(half_width + 0.5 - distance, 0, 1)[..., None]  # (h, w, 1)
    colour = 255 * np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.8), rng.uniform(0.1, 1.0)), np.float32)
    region = canvas[y_lo:y_hi, x_lo:x_hi]
    region *= 1 - alpha
    region += colour * alpha
