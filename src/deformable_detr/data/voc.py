"""Pascal VOC datasets read into COCO form.

Layout: `Annotations/<id>.xml`, `JPEGImages/<filename>`, `ImageSets/Main/{train,val,trainval,test}.txt`
(one image id per line). Without ImageSets every XML is one `train` split. A `VOCdevkit/VOC20xx`
folder inside `root` is used when `root` itself has no `Annotations/`.

Boxes: VOC pixel indices are 1-based and inclusive, so x0 = xmin - 1, y0 = ymin - 1, x1 = xmax,
y1 = ymax (as detectron2 reads them); then the readers' one box rule (`split.add_box`, against the XML's
<size>): up to 1 px past the border is clipped (a 0-based xmin 0, an xmax of width + 1), further out or
inverted is left out as a problem. `difficult` objects become `iscrowd` 1, which COCO evaluation
ignores (neither a miss nor a false positive) and training skips, matching VOC's own protocol.
Class names: `classes.txt` / `labels.txt` in `root` if present, else every `<name>` in
`Annotations/`, sorted, so all splits share one class list.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from ..errors import DatasetError
from .split import DatasetSplit, add_box

SPLIT_FILES = {"train": "train", "val": "val", "test": "test", "trainval": "trainval"}


def voc_root(root: str | Path) -> Path:
    """The folder holding `Annotations/` (root itself or root/VOCdevkit/VOC20xx)."""
    root = Path(root)
    if (root / "Annotations").is_dir():
        return root
    inner = sorted(root.glob("VOCdevkit/VOC*")) + sorted(root.glob("VOC*"))
    for candidate in inner:
        if (candidate / "Annotations").is_dir():
            return candidate
    raise DatasetError(
        f"{root}: no Annotations/ folder (Pascal VOC layout: Annotations/, JPEGImages/, ImageSets/Main/)"
    )


def is_voc(root: Path) -> bool:
    try:
        voc_root(root)
    except DatasetError:
        return False
    return True


def voc_splits(root: str | Path) -> dict[str, list[str]]:
    """{split: image ids} from ImageSets/Main/*.txt, or every XML as `train` when there are none."""
    root = voc_root(root)
    main = root / "ImageSets" / "Main"
    splits = {}
    for split in ("train", "val", "test"):
        path = main / f"{split}.txt"
        if path.is_file():
            splits[split] = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not splits:
        splits["train"] = sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
    return splits


def class_names(root: str | Path) -> list[str]:
    """classes.txt / labels.txt, else every object name in every XML: surrounding spaces stripped, names
    differing only in case merged into the most frequent spelling (ties: the first in sorted order), sorted."""
    return _classes(voc_root(root))[0]


def _classes(root: Path) -> tuple[list[str], list[str]]:
    """(class names as `class_names`, one message per merged group of spellings)."""
    for name in ("classes.txt", "labels.txt"):
        if (root / name).is_file():
            return [line.strip() for line in (root / name).read_text().splitlines() if line.strip()], []
    spellings: dict[str, Counter] = {}  # casefolded name -> how often each spelling occurs
    for path in sorted((root / "Annotations").glob("*.xml")):
        try:
            for obj in ET.parse(path).getroot().iter("object"):
                text = (obj.findtext("name") or "").strip()
                if text:
                    spellings.setdefault(text.casefold(), Counter())[text] += 1
        except (ET.ParseError, OSError):
            continue  # reported per split by read_voc
    if not spellings:
        raise DatasetError(f"{root / 'Annotations'}: no <object><name> in any XML; add classes.txt or annotate objects")
    names, merged = [], []
    for counts in spellings.values():
        chosen = min(counts, key=lambda spelling: (-counts[spelling], spelling))
        names.append(chosen)
        if len(counts) > 1:
            variants = ", ".join(f"{spelling!r}" for spelling in sorted(counts))
            tally = " and ".join(str(counts[spelling]) for spelling in sorted(counts))
            merged.append(f"Annotations/: class names {variants} are one class {chosen!r} ({tally} objects)")
    return sorted(names), merged


def read_voc(root: str | Path, split: str) -> DatasetSplit:
    """Read one split of a Pascal VOC dataset into COCO form; bad XML becomes `problems`, not errors."""
    root = voc_root(root)
    names, merged = _classes(root)
    listed = (root / "classes.txt").is_file() or (root / "labels.txt").is_file()  # names matched exactly
    category_of = {(name if listed else name.casefold()): i + 1 for i, name in enumerate(names)}
    splits = voc_splits(root)
    if split not in splits:
        raise DatasetError(f"{root}: VOC dataset has no '{split}' split (found {', '.join(splits)} in ImageSets/Main/)")
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    result = DatasetSplit(split, "voc", root / "JPEGImages", coco, root)
    result.warnings.extend(("class_names_merged", message) for message in merged)
    listed_in = f"ImageSets/Main/{split}.txt" if (root / "ImageSets" / "Main" / f"{split}.txt").is_file() else None
    for stem in splits[split]:
        _read_xml(root, stem, category_of, result, listed_in, fold_case=not listed)
    return result


def _read_xml(
    root: Path,
    stem: str,
    category_of: dict[str, int],
    result: DatasetSplit,
    listed_in: str | None = None,
    fold_case: bool = False,
) -> None:
    """Add image `stem` and its objects to `result`. `category_of` maps a class name to its category id;
    with `fold_case` its keys are casefolded (names from the XMLs: every spelling of a merged name)."""
    path = root / "Annotations" / f"{stem}.xml"
    shown = f"Annotations/{stem}.xml"
    try:
        tree = ET.parse(path).getroot()
    except FileNotFoundError:
        result.problems.append(
            (
                "missing_annotation_file",
                f"{shown}: not found (id {stem} is listed in {listed_in or 'ImageSets/Main/'}); "
                "add the XML or remove the id",
                None,
            )
        )
        return
    except ET.ParseError as error:
        line, column = error.position
        result.problems.append(
            ("malformed_entry", f"{shown}:{line}: not valid XML (column {column}); fix the file", None)
        )
        return
    except OSError as error:
        result.problems.append(("malformed_entry", f"{shown}: cannot read ({error})", None))
        return
    file_name = (tree.findtext("filename") or "").strip() or f"{stem}.jpg"
    if not (root / "JPEGImages" / file_name).exists() and (root / "JPEGImages" / f"{stem}.jpg").exists():
        file_name = f"{stem}.jpg"  # some exports write a stale <filename>
    size = tree.find("size")
    width, height = _int(size, "width"), _int(size, "height")
    if width is None or height is None or width <= 0 or height <= 0:
        result.problems.append(
            (
                "malformed_entry",
                f"{shown}: no valid <size><width>/<height> (got {width}x{height}); add the image size",
                None,
            )
        )
        return
    image_id = len(result.coco["images"]) + 1
    result.coco["images"].append({"id": image_id, "file_name": file_name, "width": width, "height": height})
    result.image_sources[image_id] = shown
    for index, obj in enumerate(tree.iter("object")):
        where = f"{shown}: object {index}"
        name = (obj.findtext("name") or "").strip()
        key = name.casefold() if fold_case else name
        if key not in category_of:
            names = [category["name"] for category in result.categories]
            same = [n for n in names if n.casefold() == name.casefold()]
            result.problems.append(
                (
                    "unknown_category_id",
                    f"{where}: class {name!r} not in the class list ({', '.join(names[:8])}"
                    f"{'...' if len(names) > 8 else ''})"
                    + (f" (the list has {same[0]!r}: names in classes.txt are matched exactly)" if same else "")
                    + "; fix the name or add it to classes.txt",
                    image_id,
                )
            )
            continue
        box = obj.find("bndbox")
        corners = [_float(box, key) for key in ("xmin", "ymin", "xmax", "ymax")]
        if any(v is None for v in corners):
            result.problems.append(
                ("malformed_entry", f"{where} ({name}): <bndbox> needs numeric xmin, ymin, xmax, ymax", image_id)
            )
            continue
        xmin, ymin, xmax, ymax = corners
        difficult = _int(obj, "difficult") or 0
        described = f"<bndbox> xmin {xmin:g} ymin {ymin:g} xmax {xmax:g} ymax {ymax:g} ({name})"
        add_box(
            result,
            image_id,
            category_of[key],
            (xmin - 1, ymin - 1, xmax, ymax),
            (width, height),
            where,
            described,
            iscrowd=int(difficult == 1),
        )


def _float(element, key: str) -> float | None:
    if element is None:
        return None
    text = element.findtext(key)
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _int(element, key: str) -> int | None:
    value = _float(element, key)
    return int(value) if value is not None and value == int(value) else None
