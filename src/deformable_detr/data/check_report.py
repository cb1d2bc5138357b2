"""What `check_split` reports: the problem and warning kinds, what to do about each (in the terms of
the dataset's own format), and `DatasetReport`, which holds the findings and formats them for people."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# kind -> what to do about it (shown once per kind in the report).
PROBLEM_KINDS = {
    "malformed_entry": "give every entry the COCO fields (ids int, bbox [x, y, w, h], file_name, width, height)",
    "missing_image": "add the file to the images folder or remove its entry",
    "empty_image": "replace the 0-byte / 0-size image or remove its entry",
    "unreadable_image": "replace the corrupt file or remove its entry",
    "size_mismatch": "fix width/height in the JSON or the image file",
    "duplicate_image_id": "give every image a unique id",
    "duplicate_annotation_id": "give every annotation a unique id",
    "duplicate_category_id": "give every category a unique id",
    "unknown_image_id": "point the annotation at an existing image or drop it",
    "unknown_category_id": "add the category or fix the annotation's category_id",
    "degenerate_box": "boxes need w > 0 and h > 0; fix or drop the annotation",
    "out_of_bounds_box": "clip the box to the image or fix it",
}
# Problems only a YOLO / VOC reader finds (a COCO JSON has no such file to miss).
READER_PROBLEM_KINDS = {
    "missing_annotation_file": "add Annotations/<id>.xml or remove the id from ImageSets/Main/",
}
# What to do, in the terms of a YOLO or VOC dataset's own files (kinds not named here use the COCO hint).
FORMAT_HINTS = {
    "yolo": {
        "malformed_entry": "fix the label line: `class cx cy w h` (numbers, normalised to 0..1) or a polygon "
        "`class x1 y1 x2 y2 x3 y3 ...`, or delete it",
        "missing_image": "add the image named in the split's list file or remove the line",
        "empty_image": "replace the 0-byte / 0-size image or delete it and its label file",
        "unreadable_image": "replace the corrupt image or delete it and its label file",
        "unknown_category_id": "fix the class index or add its name to data.yaml `names` / classes.txt",
        "degenerate_box": "fix the label line's w and h (both > 0) or delete the line",
        "out_of_bounds_box": "fix the label line (coordinates are 0..1 of the image) or delete it",
    },
    "voc": {
        "malformed_entry": "fix the XML: <size> needs <width> and <height>, each <object> a <name> and a <bndbox> "
        "with numeric xmin, ymin, xmax, ymax",
        "missing_image": "add the image to JPEGImages/ or fix <filename> in its XML",
        "empty_image": "replace the 0-byte / 0-size image in JPEGImages/ or delete it and its XML",
        "unreadable_image": "replace the corrupt image in JPEGImages/ or delete it and its XML",
        "size_mismatch": "fix <size> in the XML or the image file",
        "unknown_category_id": "fix the object's <name> or add it to classes.txt",
        "degenerate_box": "fix the <bndbox> (1-based pixel corners, xmin <= xmax, ymin <= ymax) or delete the <object>",
        "out_of_bounds_box": "fix the <bndbox> to lie within the image's <size> or delete the <object>",
        "duplicate_file_name": "two XMLs name one image file; usually a copy-paste mistake",
    },
}
WARNING_KINDS = {
    "noncontiguous_category_ids": "fine for training (ids are mapped to labels); renumber 1..K to silence",
    "duplicate_file_name": "two image entries share one file; usually a copy-paste mistake",
    "label_without_image": "its boxes are not used; add the image it labels (same name, images/ for labels/) "
    "or delete the label file",
    "class_names_merged": "names differing only in case or surrounding spaces are one class, named by the most "
    "frequent spelling; use one spelling everywhere to silence this",
}


@dataclass(frozen=True)
class DatasetReport:
    """Result of `check_dataset`: every problem and warning found, one message per occurrence."""

    images_dir: Path
    annotations_file: Path
    num_images: int
    num_annotations: int
    num_categories: int
    problems: dict[str, list[str]] = field(default_factory=dict)  # kind -> messages
    warnings: dict[str, list[str]] = field(default_factory=dict)
    bad_image_ids: frozenset = frozenset()  # images with a problem (their file or one of their annotations)
    bad_annotations: frozenset = frozenset()  # indices into `annotations` that are malformed or point nowhere
    fatal: tuple[str, ...] = ()  # problems no image can be skipped for (e.g. duplicate category ids)
    split: str = ""  # train / val / test, named in `format` where the file's path does not say it
    bad_image_entries: frozenset = frozenset()  # images whose entry or file itself is bad (not just an annotation)
    dataset_format: str = "coco"  # "coco", "yolo" or "voc": the hints speak of that format's files

    @property
    def ok(self) -> bool:
        """True when no problem (warnings allowed) was found."""
        return not self.problems

    def counts(self) -> dict[str, int]:
        """Number of occurrences of each problem and warning kind found."""
        return {kind: len(messages) for kind, messages in {**self.problems, **self.warnings}.items()}

    def format(self, examples: int = 3) -> str:
        """Human-readable report: a summary line, then each kind with its count, fix and a few examples."""
        source = str(self.annotations_file)
        if self.split and self.split not in Path(source).parts and self.split not in Path(source).name:
            source += f" ({self.split} split)"
        lines = [
            f"{source}: {self.num_images} images, {self.num_annotations} annotations, "
            f"{self.num_categories} categories; {sum(map(len, self.problems.values()))} problems, "
            f"{sum(map(len, self.warnings.values()))} warnings"
        ]
        own_terms = FORMAT_HINTS.get(self.dataset_format, {})
        for level, found, hints in (
            ("problem", self.problems, {**PROBLEM_KINDS, **READER_PROBLEM_KINDS, **own_terms}),
            ("warning", self.warnings, {**WARNING_KINDS, **own_terms}),
        ):
            for kind, messages in found.items():
                lines.append(f"  {level} {kind}: {len(messages)} ({hints[kind]})")
                lines.extend(f"    - {message}" for message in messages[:examples])
                if len(messages) > examples:
                    lines.append(f"    - ... and {len(messages) - examples} more")
        return "\n".join(lines)
