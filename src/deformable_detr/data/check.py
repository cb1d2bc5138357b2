"""Checks of a dataset split (any format, read into COCO form) that list every problem found.

`check_split(read_split(root, "train"))` checks a COCO, YOLO or VOC split; the readers' own
problems (a label line with 4 numbers, XML without a size) are reported with file and line.
`without_bad` drops what `--skip-bad` skips: every image with a problem, and malformed annotations.

Problems (each makes `DatasetReport.ok` False, and `deformable-detr check-data` exit 1):
malformed entries, missing / empty (0 bytes or 0 size) / unreadable images, image size differing
from the JSON's width/height, duplicate image/annotation/category ids, annotations naming unknown
image or category ids, degenerate boxes (w or h <= 0) and boxes outside their image.

Warnings (reported, but the dataset stays usable): category ids that are not 1..K (COCO itself
uses 1..90 with gaps; the data layer maps any ids to contiguous labels), files named by two
image entries, and YOLO label files without an image (their boxes are not used).
The kinds, their fixes and the `DatasetReport` are in `check_report`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from numbers import Real
from pathlib import Path

from ..errors import DatasetError
from ..pipeline.decode import image_size
from .check_report import PROBLEM_KINDS, READER_PROBLEM_KINDS, WARNING_KINDS, DatasetReport
from .coco import load_json_split
from .split import BOX_TOLERANCE, DatasetSplit


def check_dataset(
    images_dir: str | Path, annotations_file: str | Path, num_threads: int | None = None
) -> DatasetReport:
    """Check a COCO-format dataset (images folder + instances JSON) and list every problem with counts.

    Raises:
        DatasetError: the annotations file or images folder is missing, the JSON is malformed or
            lacks the images/annotations/categories lists.
    """
    images_dir, annotations_file = Path(images_dir), Path(annotations_file)
    if not annotations_file.is_file():
        raise DatasetError(f"{annotations_file}: annotations file not found; pass the COCO instances JSON")
    return check_split(load_json_split(images_dir, annotations_file), num_threads)


def check_split(split: DatasetSplit, num_threads: int | None = None) -> DatasetReport:
    """Check one split of any format (read into COCO form) and list every problem with counts.

    Args:
        split: from `read_split` / `load_json_split`; the reader's own problems (bad label lines,
            bad XML) are included in the report.
        num_threads: threads decoding images; None -> 2 x CPU cores (decoding releases the GIL).

    Returns:
        A `DatasetReport`; `report.ok` is False when any problem was found.

    Raises:
        DatasetError: the instances dict lacks the images/annotations/categories lists.
    """
    data = split.coco
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DatasetError(
            f"{split.source}: needs top-level lists 'images', 'annotations' and 'categories' (COCO instances format)"
        )
    found = _Findings()
    for kind, message, image_id in split.problems:
        found.problem(kind, message, image_id)
    for kind, message in split.warnings:
        found.warning(kind, message)
    for label in split.labels_without_image:
        found.warning("label_without_image", f"{label}: no image of that name in the images folder")
    categories = _check_categories(data["categories"], found)
    images = _check_images(data["images"], found)
    _check_annotations(data["annotations"], images, categories, found)
    recorded_in = _recorded_in(split)
    file_hint = "replace it or delete it and its XML" if split.format == "voc" else "replace it or remove its entry"
    with ThreadPoolExecutor(num_threads or 2 * (os.cpu_count() or 1)) as pool:
        file_problems = pool.map(
            lambda item: _check_image_file(split.images_dir, *item, recorded_in(item[1]), file_hint), images.items()
        )
        for image_id, file_problem in zip(images, file_problems):
            if file_problem is not None:
                kind, message = file_problem
                found.problem(kind, f"image id {image_id} ({images[image_id]['file_name']}): {message}", image_id)
                found.bad_image_entries.add(image_id)
    return DatasetReport(
        split.images_dir,
        split.source,
        len(data["images"]),
        len(data["annotations"]),
        len(data["categories"]),
        {kind: found.problems[kind] for kind in {**READER_PROBLEM_KINDS, **PROBLEM_KINDS} if kind in found.problems},
        {kind: found.warnings[kind] for kind in WARNING_KINDS if kind in found.warnings},
        frozenset(found.bad_images),
        frozenset(found.bad_annotations),
        tuple(found.fatal),
        split.name,
        frozenset(found.bad_image_entries),
        split.format,
    )


def without_bad(split: DatasetSplit, report: DatasetReport) -> tuple[DatasetSplit, int, int]:
    """The split minus every image with a problem (and its annotations) and every malformed annotation.

    Returns:
        (clean split, images skipped, annotations skipped).

    Raises:
        DatasetError: a problem that skipping images cannot fix (e.g. duplicate category ids).
    """
    if report.fatal:
        raise DatasetError(f"{split.source}: {report.fatal[0]}; --skip-bad cannot skip this, fix the dataset")
    images = [im for im in split.coco["images"] if not (isinstance(im, dict) and im.get("id") in report.bad_image_ids)]
    image_ids = {im["id"] for im in images if isinstance(im, dict)}
    annotations = [
        ann
        for index, ann in enumerate(split.coco["annotations"])
        if index not in report.bad_annotations and ann.get("image_id") in image_ids
    ]
    coco = {**split.coco, "images": images, "annotations": annotations}
    clean = dataclasses.replace(split, coco=coco, problems=[])
    return clean, len(split.coco["images"]) - len(images), len(split.coco["annotations"]) - len(annotations)


def without_problems(split: DatasetSplit, report: DatasetReport) -> DatasetSplit:
    """What `convert` writes: the split minus every image whose entry or file is bad (with its annotations)
    and every annotation with a problem; images with only a bad annotation stay (without it).

    The readers already left out what they reported (bad label lines, boxes past the border), so the
    result has no problem `check_split` would find.

    Raises:
        DatasetError: a problem that dropping entries cannot fix (e.g. duplicate category ids).
    """
    if report.fatal:
        raise DatasetError(f"{split.source}: {report.fatal[0]}; this cannot be converted, fix the dataset")
    images = [
        im
        for im in split.coco["images"]
        if isinstance(im, dict) and _is_int(im.get("id")) and im["id"] not in report.bad_image_entries
    ]
    image_ids = {im["id"] for im in images}
    annotations = [
        ann
        for index, ann in enumerate(split.coco["annotations"])
        if index not in report.bad_annotations and ann.get("image_id") in image_ids
    ]
    return dataclasses.replace(split, coco={**split.coco, "images": images, "annotations": annotations}, problems=[])


class _Findings:
    """Messages collected by kind while checking."""

    def __init__(self):
        self.problems: dict[str, list[str]] = {}
        self.warnings: dict[str, list[str]] = {}
        self.bad_images: set = set()
        self.bad_annotations: set[int] = set()
        self.bad_image_entries: set = set()
        self.fatal: list[str] = []

    def problem(self, kind: str, message: str, image_id=None, annotation_index: int | None = None) -> None:
        self.problems.setdefault(kind, []).append(message)
        if image_id is not None:
            self.bad_images.add(image_id)
        if annotation_index is not None:
            self.bad_annotations.add(annotation_index)

    def warning(self, kind: str, message: str) -> None:
        self.warnings.setdefault(kind, []).append(message)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_categories(categories: list, found: _Findings) -> set:
    """Category ids (first occurrence of each well-formed one), reporting malformed/duplicate/non-contiguous."""
    ids = set()
    for index, category in enumerate(categories):
        if not isinstance(category, dict) or not _is_int(category.get("id")):
            found.problem("malformed_entry", f"categories[{index}]: needs an integer 'id', got {category!r:.80}")
            found.fatal.append(f"categories[{index}] has no integer 'id'")
        elif category["id"] in ids:
            found.problem("duplicate_category_id", f"categories[{index}]: id {category['id']} used before")
            found.fatal.append(f"categories[{index}]: id {category['id']} used before")
        else:
            ids.add(category["id"])
    if ids and sorted(ids) != list(range(1, len(ids) + 1)):
        found.warning(
            "noncontiguous_category_ids",
            f"category ids {sorted(ids)[:10]}{'...' if len(ids) > 10 else ''} are not 1..{len(ids)}",
        )
    return ids


def _check_images(images: list, found: _Findings) -> dict:
    """{image id: entry} of the well-formed, non-duplicate image entries."""
    by_id: dict = {}
    file_names = Counter()
    for index, image in enumerate(images):
        if (
            not isinstance(image, dict)
            or not _is_int(image.get("id"))
            or not isinstance(image.get("file_name"), str)
            or not _is_int(image.get("width"))
            or not _is_int(image.get("height"))
        ):
            image_id = image.get("id") if isinstance(image, dict) and _is_int(image.get("id")) else None
            found.problem(
                "malformed_entry",
                f"images[{index}]: needs integer id/width/height and a file_name, got {image!r:.80}",
                image_id,
            )
            found.bad_image_entries.add(image_id)
        elif image["id"] in by_id:
            found.problem("duplicate_image_id", f"images[{index}]: id {image['id']} used before", image["id"])
            found.bad_image_entries.add(image["id"])
        else:
            by_id[image["id"]] = image
            file_names[image["file_name"]] += 1
            if image["width"] <= 0 or image["height"] <= 0:
                found.problem(
                    "empty_image",
                    f"images[{index}] ({image['file_name']}): size {image['width']}x{image['height']} in the JSON",
                    image["id"],
                )
                found.bad_image_entries.add(image["id"])
    for name, count in file_names.items():
        if count > 1:
            found.warning("duplicate_file_name", f"{name} is named by {count} image entries")
    return by_id


def _check_annotations(annotations: list, images: dict, categories: set, found: _Findings) -> None:
    ids = set()
    for index, ann in enumerate(annotations):
        source = ann.get("source") if isinstance(ann, dict) else None
        where = source if isinstance(source, str) else f"annotations[{index}]"
        image_id = (
            ann.get("image_id")
            if isinstance(ann, dict) and _is_int(ann.get("image_id")) and ann["image_id"] in images
            else None
        )
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if (
            not isinstance(ann, dict)
            or not _is_int(ann.get("id"))
            or not isinstance(bbox, (list, tuple))
            or len(bbox) != 4
            or not all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
        ):
            found.problem(
                "malformed_entry",
                f"{where}: needs an integer id and bbox of 4 finite numbers, got {ann!r:.80}",
                image_id,
                index,
            )
            continue
        if not isinstance(source, str):
            where = f"{where} (id {ann['id']})"
        if ann["id"] in ids:
            found.problem("duplicate_annotation_id", f"{where}: id {ann['id']} used before", image_id, index)
        ids.add(ann["id"])
        if not _is_int(ann.get("category_id")) or ann["category_id"] not in categories:
            found.problem(
                "unknown_category_id",
                f"{where}: category_id {ann.get('category_id')!r} not in categories",
                image_id,
                index,
            )
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            found.problem("degenerate_box", f"{where}: bbox {list(bbox)} has w or h <= 0", image_id, index)
        image = images.get(image_id)
        if image is None:
            found.problem("unknown_image_id", f"{where}: image_id {ann.get('image_id')!r} not in images", None, index)
        elif (
            x < -BOX_TOLERANCE
            or y < -BOX_TOLERANCE
            or x + w > image["width"] + BOX_TOLERANCE
            or y + h > image["height"] + BOX_TOLERANCE
        ):
            found.problem(
                "out_of_bounds_box",
                f"{where}: bbox {[round(v, 2) for v in bbox]} outside image {image['id']} "
                f"({image['width']}x{image['height']})",
                image_id,
                index,
            )


def _recorded_in(split: DatasetSplit):
    """image entry -> the file that recorded its size, for messages (a VOC image's XML), else "JSON"."""
    return lambda image: split.image_sources.get(image["id"], "its XML" if split.format == "voc" else "JSON")


def _check_image_file(
    images_dir: Path, image_id, image: dict, recorded_in: str = "JSON", hint: str = "replace it or remove its entry"
) -> tuple[str, str] | None:
    """(problem kind, message) for one image file, or None when it decodes to the size `recorded_in` says;
    `hint` ends the message of a file that does not decode."""
    path = images_dir / image["file_name"]
    if not path.exists():
        return "missing_image", f"not found in {images_dir}"
    if path.is_file() and os.path.getsize(path) == 0:
        return "empty_image", "file has 0 bytes"
    try:
        width, height = image_size(path, name=image["file_name"], hint=hint)
    except DatasetError as error:
        return "unreadable_image", str(error).removeprefix(f"{image['file_name']}: ")
    if width == 0 or height == 0:
        return "empty_image", f"decodes to {width}x{height}"
    if (width, height) != (image["width"], image["height"]):
        return "size_mismatch", f"file is {width}x{height}, {recorded_in} says {image['width']}x{image['height']}"
    return None
