"""`DatasetSplit`: one split of any supported dataset format, held in the COCO instances form.

Every reader (COCO JSON, YOLO, Pascal VOC) returns this, so checking, training and evaluation
see one representation. `coco` is a COCO instances dict: `images` (`id`, `file_name` relative to
`images_dir`, `width`, `height`), `annotations` (`id`, `image_id`, `category_id`, `bbox` [x, y, w, h]
pixels, `area`, `iscrowd`, and `source`, where in the original files the annotation came from),
`categories` (`id`, `name`). `problems` are what the reader itself found (unparseable lines,
unreadable images it needed the size of, boxes it left out), as (kind, message, image_id or None).

One box rule for every reader (`add_box`): a box at most `BOX_TOLERANCE` px past the image border is
rounding and is clipped to the image; a box further out (`out_of_bounds_box`) or with no area after
clipping (`degenerate_box`, e.g. an inverted VOC box) is left out and recorded as a problem.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint.files import atomic_write_text

FORMATS = ("coco", "yolo", "voc")
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
BOX_TOLERANCE = 1.0  # px; annotation tools round boxes across the border by this much (clipped, not a problem)


@dataclass
class DatasetSplit:
    """One split (train / val / test) of a dataset, converted to COCO form in memory."""

    name: str
    format: str
    images_dir: Path
    coco: dict
    source: Path  # the file or folder the split was read from (for messages)
    problems: list[tuple[str, str, int | None]] = field(default_factory=list)
    clipped_boxes: int = 0  # boxes at most BOX_TOLERANCE px past the border, clipped to the image by `add_box`
    labels_without_image: list[str] = field(default_factory=list)  # YOLO label files no image uses (relative)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (kind, message) the reader noticed
    image_sources: dict = field(default_factory=dict)  # image id -> the file that recorded its size (VOC: its XML)

    @property
    def categories(self) -> list[dict]:
        return self.coco["categories"]


def write_coco(split: DatasetSplit, out_dir: str | Path, copy_images: bool = True) -> Path:
    """Write the split as `out_dir/images/` + `out_dir/annotations.json` (the `source` keys dropped).

    Images are hard-linked where possible, else copied; their file names are flattened
    (`a/b.jpg` -> `a__b.jpg`) so they sit in one folder. Returns the annotations file.
    """
    import shutil

    out_dir = Path(out_dir)
    images_out = out_dir / "images"
    images_out.mkdir(parents=True, exist_ok=True)
    images = []
    flat_names: dict[str, str] = {}  # flattened name -> the file_name it stands for
    for image in split.coco["images"]:
        flat = image["file_name"].replace("\\", "/").replace("/", "__")
        if flat_names.setdefault(flat, image["file_name"]) != image["file_name"]:  # "a/b.jpg" and "a__b.jpg"
            flat = f"{Path(flat).stem}__id{image['id']}{Path(flat).suffix}"
            flat_names[flat] = image["file_name"]
        if copy_images:
            target = images_out / flat
            if target.exists():
                target.unlink()
            try:
                os.link(split.images_dir / image["file_name"], target)
            except OSError:
                shutil.copy2(split.images_dir / image["file_name"], target)
        images.append({**image, "file_name": flat})
    annotations = [{k: v for k, v in ann.items() if k != "source"} for ann in split.coco["annotations"]]
    coco = {"images": images, "annotations": annotations, "categories": split.coco["categories"]}
    path = out_dir / "annotations.json"
    return atomic_write_text(path, json.dumps(coco))


def box_entry(
    ann_id: int,
    image_id: int,
    category_id: int,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    source: str,
    iscrowd: int = 0,
) -> dict:
    """A COCO annotation for the pixel box (x0, y0, x1, y1)."""
    w, h = x1 - x0, y1 - y0
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x0, y0, w, h],
        "area": max(w, 0.0) * max(h, 0.0),
        "iscrowd": iscrowd,
        "source": source,
    }


def add_box(
    split: DatasetSplit,
    image_id: int,
    category_id: int,
    box_xyxy: tuple[float, float, float, float],
    image_size: tuple[int, int],
    where: str,
    described: str,
    iscrowd: int = 0,
) -> bool:
    """Add the pixel box to `split` under the one box rule (module docstring), or record why it is left out.

    Args:
        box_xyxy: (x0, y0, x1, y1) in pixels of the image.
        image_size: (width, height) of the image in pixels.
        where: the file (and line or object) the box comes from, e.g. "labels/train/a.txt:3".
        described: the box as the file writes it, for messages (e.g. "<bndbox> 61 11 150 40").

    Returns:
        True when the box was added (clipped if it was at most BOX_TOLERANCE px outside).
    """
    x0, y0, x1, y1 = box_xyxy
    width, height = image_size
    outside = max(-x0, -y0, x1 - width, y1 - height)
    if x1 <= x0 or y1 <= y0:
        split.problems.append(
            (
                "degenerate_box",
                f"{where}: {described} is {x1 - x0:.4g} x {y1 - y0:.4g} px (width and height must be > 0; "
                "inverted corners?); fix the box or delete it",
                image_id,
            )
        )
        return False
    if outside > BOX_TOLERANCE:
        split.problems.append(
            (
                "out_of_bounds_box",
                f"{where}: {described} is outside the image: {outside:.4g} px past the border of the "
                f"{width}x{height} image (over {BOX_TOLERANCE:g} px is not rounding); fix the box or delete it",
                image_id,
            )
        )
        return False
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        split.problems.append(
            (
                "degenerate_box",
                f"{where}: {described} has no area inside the {width}x{height} image; delete it",
                image_id,
            )
        )
        return False
    if clipped != (x0, y0, x1, y1):
        split.clipped_boxes += 1
    ann_id = len(split.coco["annotations"]) + 1
    split.coco["annotations"].append(box_entry(ann_id, image_id, category_id, *clipped, where, iscrowd=iscrowd))
    return True
