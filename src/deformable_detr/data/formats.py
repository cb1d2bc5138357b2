"""Which format a dataset folder is in, its splits, and reading any split into COCO form.

    fmt = detect_format("data/pets")            # "coco", "yolo" or "voc"
    split = read_split("data/pets", "train")     # a DatasetSplit (COCO dict + images folder)

COCO layouts: `root/{train,val}/{images/,annotations.json}` (what `make-dataset` writes), a single
split `root/{images/,annotations.json}` (split name "all"), or the official
`root/annotations/instances_<name>.json` with images in `root/<name>/` (e.g. train2017, val2017;
the split is the name without digits).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import DatasetError
from .coco import read_json
from .split import FORMATS, SPLIT_ALIASES, DatasetSplit
from .voc import is_voc, read_voc, voc_splits
from .yolo import is_yolo, read_yolo, yolo_splits


def detect_format(root: str | Path) -> str:
    """ "coco", "yolo" or "voc" for the dataset at `root`.

    Raises:
        DatasetError: `root` is missing or matches none of the layouts.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if _coco_splits(root):
        return "coco"
    if is_voc(root):
        return "voc"
    if is_yolo(root):
        return "yolo"
    raise DatasetError(
        f"{root}: not a recognised dataset; expected COCO (train/annotations.json + train/images/), "
        "YOLO (data.yaml or classes.txt + images/ + labels/) or Pascal VOC (Annotations/ + JPEGImages/)"
    )


def dataset_splits(root: str | Path, format: str = "auto") -> list[str]:
    """Names of the splits of the dataset at `root` (e.g. ["train", "val"])."""
    root = Path(root)
    format = _resolve_format(root, format)
    if format == "coco":
        splits = _coco_splits(root)
        if not splits:
            raise DatasetError(
                f"{root}: no COCO annotations found (train/annotations.json, annotations.json or annotations/instances_*.json)"
            )
        return list(splits)
    if format == "yolo":
        return list(yolo_splits(root))
    return list(voc_splits(root))


def read_split(root: str | Path, split: str, format: str = "auto") -> DatasetSplit:
    """Read split `split` of the dataset at `root` (format detected unless given) into COCO form.

    Raises:
        DatasetError: unknown format, no such split, or a file that cannot be read at all.
    """
    root = Path(root)
    format = _resolve_format(root, format)
    split = SPLIT_ALIASES.get(split, split)
    if format == "yolo":
        return read_yolo(root, split)
    if format == "voc":
        return read_voc(root, split)
    splits = _coco_splits(root)
    if split not in splits:
        raise DatasetError(
            f"{root}: no '{split}' split (found {', '.join(splits) or 'none'}); expected {root / split / 'annotations.json'}"
        )
    images_dir, annotations_file = splits[split]
    return DatasetSplit(split, "coco", images_dir, read_json(annotations_file), annotations_file)


def _resolve_format(root: Path, format: str) -> str:
    if format == "auto":
        return detect_format(root)
    if format not in FORMATS:
        raise DatasetError(f"unknown dataset format {format!r}; choose auto, {', '.join(FORMATS)}")
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    return format


def _coco_splits(root: Path) -> dict[str, tuple[Path, Path]]:
    """{split: (images_dir, annotations_file)} for the COCO layouts in the module docstring."""
    splits = {}
    if (root / "annotations.json").is_file():
        return {"all": (root / "images", root / "annotations.json")}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if (folder / "annotations.json").is_file():
            splits[SPLIT_ALIASES.get(folder.name, folder.name)] = (folder / "images", folder / "annotations.json")
    for path in sorted((root / "annotations").glob("instances_*.json")) if (root / "annotations").is_dir() else []:
        name = path.stem.removeprefix("instances_")
        split = SPLIT_ALIASES.get(re.sub(r"\d+$", "", name), name)
        images_dir = next(
            (d for d in (root / name, root / "images" / name, root / "images") if d.is_dir()), root / name
        )
        splits.setdefault(split, (images_dir, path))
    return splits


def load_json_split(images_dir: str | Path, annotations_file: str | Path) -> DatasetSplit:
    """A COCO split given as an images folder and an instances JSON."""
    annotations_file = Path(annotations_file)
    if not Path(images_dir).is_dir():
        raise DatasetError(f"{images_dir}: images folder not found; pass the folder holding the image files")
    return DatasetSplit(annotations_file.stem, "coco", Path(images_dir), read_json(annotations_file), annotations_file)


def convert_dataset(src: str | Path, out: str | Path, format: str = "auto") -> dict[str, tuple[Path, int, int, int]]:
    """Write every split of the dataset at `src` as COCO: `out/<split>/{images/, annotations.json}`.

    Returns:
        {split: (annotations file, images, boxes, problems)}; `problems` counts what could not be
        converted (bad label lines, XML without a size, images whose file is missing: left out with their
        boxes); `check-data SRC` lists them.

    Raises:
        DatasetError: `out` exists and is not empty (nothing is overwritten), or `src` cannot be read.
    """
    from .split import write_coco

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: already exists and is not empty; choose a new output folder")
    splits = {name: _without_missing_images(read_split(src, name, format)) for name in dataset_splits(src, format)}
    written = {}
    for name, (split, missing) in splits.items():
        path = write_coco(split, out / name)
        problems = len(split.problems) + missing
        written[name] = (path, len(split.coco["images"]), len(split.coco["annotations"]), problems)
    return written


def _without_missing_images(split):
    """(the split without the images whose file is missing, and their annotations; how many were dropped).

    Checked before anything is written, so a missing file never leaves a half-converted output folder.
    """
    import dataclasses

    missing = {image["id"] for image in split.coco["images"] if not (split.images_dir / image["file_name"]).is_file()}
    if not missing:
        return split, 0
    coco = {
        **split.coco,
        "images": [image for image in split.coco["images"] if image["id"] not in missing],
        "annotations": [ann for ann in split.coco["annotations"] if ann["image_id"] not in missing],
    }
    return dataclasses.replace(split, coco=coco), len(missing)
