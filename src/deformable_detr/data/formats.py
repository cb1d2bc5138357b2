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
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError
from .check import check_split, without_problems
from .coco import read_json
from .split import FORMATS, SPLIT_ALIASES, DatasetSplit, write_coco
from .voc import is_voc, read_voc, voc_splits
from .yolo import is_yolo, read_yolo, yolo_splits


def detect_format(root: str | Path) -> str:
    """ "coco", "yolo" or "voc" for the dataset at `root`.

    Raises:
        DatasetError: `root` is missing or matches none of the layouts.
    """
    root = Path(root)
    if root.is_file():
        raise DatasetError(f"{root}: is a file, not a dataset folder; pass the folder that holds the dataset")
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


@dataclass(frozen=True)
class ConvertedSplit:
    """What `convert_dataset` wrote for one split.

    annotations_file: the written `out/<split>/annotations.json`.
    images, boxes: how many were written.
    left_out: problem kind -> how many entries of that kind were not converted (a box or label line,
        or an image with its boxes); `check-data SRC` lists them with file and line.
    clipped: boxes at most 1 px past the image border, clipped to it (rounding in the source).
    labels_without_image: YOLO label files (relative to SRC) that no image uses, so not converted.
    """

    annotations_file: Path
    images: int
    boxes: int
    left_out: dict[str, int] = field(default_factory=dict)
    clipped: int = 0
    labels_without_image: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        """Entries not converted, all kinds together."""
        return sum(self.left_out.values())

    def __iter__(self):
        """Unpacks as the (annotations_file, images, boxes, problems) tuple earlier versions returned."""
        return iter((self.annotations_file, self.images, self.boxes, self.problems))

    def __getitem__(self, index):
        return tuple(self)[index]


def convert_dataset(src: str | Path, out: str | Path, format: str = "auto") -> dict[str, ConvertedSplit]:
    """Write every split of the dataset at `src` as COCO: `out/<split>/{images/, annotations.json}`.

    Every format goes through one rule: each split is read (the readers clip boxes at most 1 px past the
    border and leave out bad label lines and boxes further out or inverted), checked with `check_split`
    (image files decoded and compared with their recorded size), and whatever has a problem is left out
    (`check.without_problems`: a bad box alone, or an image whose file is missing, unreadable, empty or
    of another size, with its boxes) and counted by kind. So `check-data OUT` finds no problem.
    Every split is read and checked before anything is written (a bad file never leaves a half-converted
    output folder).

    Returns:
        {split: ConvertedSplit}.

    Raises:
        DatasetError: `out` exists and is not empty (nothing is overwritten), `src` cannot be read, or it has
            a problem no entry can be left out for (e.g. duplicate category ids).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: already exists and is not empty; choose a new output folder")
    checked = []
    for name in dataset_splits(src, format):
        split = read_split(src, name, format)
        report = check_split(split)
        left_out = {kind: len(messages) for kind, messages in report.problems.items()}
        checked.append((name, without_problems(split, report), left_out))
    written = {}
    for name, split, left_out in checked:
        path = write_coco(split, out / name)
        written[name] = ConvertedSplit(
            path,
            len(split.coco["images"]),
            len(split.coco["annotations"]),
            left_out,
            split.clipped_boxes,
            list(split.labels_without_image),
        )
    return written
