"""The training and validation datasets of a run, from a COCO, YOLO or Pascal VOC folder.

Each split is read into COCO form (`data.formats.read_split`) and checked (`data.check.check_split`)
before training: a split with problems stops the run with one line naming the first problem,
unless `skip_bad`, which drops every image with a problem (and malformed annotations) and says how
many. One summary line per split says what the model will see.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from ..data.check import check_split, without_bad
from ..data.coco import CocoDetection
from ..data.formats import read_split
from ..data.split import DatasetSplit
from ..data.transforms import make_transforms
from ..errors import DatasetError
from .config import TrainConfig

logger = logging.getLogger(__name__)


def build_datasets(config: TrainConfig) -> tuple[CocoDetection, CocoDetection]:
    """Train/val datasets of `config.data_dir` (format `config.data_format`) with the config's sizes.

    Raises:
        DatasetError: a split is missing, has problems (without `skip_bad`), or the splits' categories differ.
    """
    root = Path(config.data_dir)
    splits = {name: load_checked_split(root, name, config.data_format, config.skip_bad) for name in ("train", "val")}
    train_names = [c.get("name") for c in sorted(splits["train"].categories, key=lambda c: c["id"])]
    val_names = [c.get("name") for c in sorted(splits["val"].categories, key=lambda c: c["id"])]
    if train_names != val_names:
        raise DatasetError(
            f"{root}: train categories {train_names[:6]} differ from val categories {val_names[:6]}; "
            "both splits need the same category list"
        )
    train_tf = make_transforms(
        config.augment, config.train_scales, config.max_size, config.crop_resize, config.crop_size, config.val_size
    )
    val_tf = make_transforms(False, config.train_scales, config.max_size, val_size=config.val_size)
    train_set = CocoDetection(
        splits["train"].images_dir, splits["train"].coco, train_tf, name=str(splits["train"].source)
    )
    val_set = CocoDetection(splits["val"].images_dir, splits["val"].coco, val_tf, name=str(splits["val"].source))
    if config.max_train_images is not None:
        train_set.images = train_set.images[: config.max_train_images]
    return train_set, val_set


def load_checked_split(root: Path, name: str, format: str = "auto", skip_bad: bool = False) -> DatasetSplit:
    """Read and check one split; refuse it when it has problems unless `skip_bad` (then drop them)."""
    try:
        split = read_split(root, name, format)
    except DatasetError as error:
        if "not found" not in str(error):  # a file that is there but unreadable: its own message says it all
            raise
        raise DatasetError(
            f"{error}; --data must hold a train and a val split (make one with `deformable-detr make-dataset`)"
        ) from None
    report = check_split(split)
    if not report.ok:
        count = sum(map(len, report.problems.values()))
        kind, messages = next(iter(report.problems.items()))
        if not skip_bad:
            raise DatasetError(
                f"{split.source}: {count} problem(s) in the {name} split, first: {kind}: {messages[0]}; "
                f"`deformable-detr check-data {root}` lists them; fix them or pass --skip-bad to train without them"
            )
        split, images, annotations = without_bad(split, report)
        logger.warning(
            "%s: --skip-bad: skipped %d image(s) and %d annotation(s) with %d problem(s) in the %s split",
            split.source,
            images,
            annotations,
            count,
            name,
        )
    for _kind, message in split.warnings:  # e.g. class_names_merged
        logger.warning("%s: %s (%s split)", split.source, message, name)
    if split.labels_without_image:
        names = split.labels_without_image
        logger.warning(
            "%s: %d label file%s without an image in the %s split, not used: %s; add the images or delete the files",
            split.source,
            len(names),
            "s" if len(names) > 1 else "",
            name,
            ", ".join(names[:3]) + (", ..." if len(names) > 3 else ""),
        )
    logger.info("%s", summarize_split(split))
    return split


def summarize_split(split: DatasetSplit) -> str:
    """One line: images, boxes per class, COCO size buckets (by box area), classes without boxes."""
    coco = split.coco
    names = {c["id"]: c.get("name", str(c["id"])) for c in coco["categories"]}
    boxes = [a for a in coco["annotations"] if not a.get("iscrowd", 0)]
    per_class = Counter(names.get(a["category_id"], "?") for a in boxes)
    areas = [a["bbox"][2] * a["bbox"][3] for a in boxes]
    buckets = (sum(a < 32**2 for a in areas), sum(32**2 <= a < 96**2 for a in areas), sum(a >= 96**2 for a in areas))
    shares = "/".join(f"{100 * b / max(len(areas), 1):.0f}%" for b in buckets)
    empty = [n for n in names.values() if per_class[n] == 0]
    classes = ", ".join(f"{n} {per_class[n]}" for n in names.values())
    return (
        f"{split.name} ({split.format}, {split.source}): {len(coco['images'])} images, {len(boxes)} boxes "
        f"[{classes}]; small/medium/large {shares}; classes without boxes: {', '.join(empty) or 'none'}"
    )
