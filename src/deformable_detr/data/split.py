"""`DatasetSplit`: one split of any supported dataset format, held in the COCO instances form.

Every reader (COCO JSON, YOLO, Pascal VOC) returns this, so checking, training and evaluation
see one representation. `coco` is a COCO instances dict: `images` (`id`, `file_name` relative to
`images_dir`, `width`, `height`), `annotations` (`id`, `image_id`, `category_id`, `bbox` [x, y, w, h]
pixels, `area`, `iscrowd`, and `source`, where in the original files the annotation came from),
`categories` (`id`, `name`). `problems` are what the reader itself found (unparseable lines,
unreadable images it needed the size of), as (kind, message, image_id or None).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("coco", "yolo", "voc")
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class DatasetSplit:
    """One split (train / val / test) of a dataset, converted to COCO form in memory."""

    name: str
    format: str
    images_dir: Path
    coco: dict
    source: Path  # the file or folder the split was read from (for messages)
    problems: list[tuple[str, str, int | None]] = field(default_factory=list)

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
    for image in split.coco["images"]:
        flat = image["file_name"].replace("\\", "/").replace("/", "__")
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
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(coco))
    os.replace(temporary, path)
    return path


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
