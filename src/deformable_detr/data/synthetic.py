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

This module writes the dataset; `synthetic_render` draws one image (placement and occlusion),
`synthetic_shapes` holds the outlines and `synthetic_paint` the fills and background clutter.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from deformable_detr.checkpoint.files import atomic_write_text
from deformable_detr.data.synthetic_render import MAX_OBJECTS, render_image
from deformable_detr.data.synthetic_shapes import CATEGORIES, SHAPES
from deformable_detr.errors import ConfigError

# Named class sets for `make_dataset(classes=...)`: the demo's six, and four other shapes for transfer experiments.
CLASS_SETS = {"demo": CATEGORIES, "transfer": ("hexagon", "crescent", "arrow", "semicircle")}
JPEG_QUALITY = 90
_MIN_OBJECT_SIDE = 4.0  # px; `object_size` below this draws shapes too small to tell apart
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
    unknown = [name for name in classes if name not in SHAPES]
    if not classes or unknown or len(set(classes)) != len(classes):
        raise ConfigError(
            f"make_dataset: classes {classes!r} must be distinct shape names from {', '.join(SHAPES)} "
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
