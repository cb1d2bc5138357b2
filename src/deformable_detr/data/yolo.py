"""YOLO (Ultralytics / Darknet) datasets read into COCO form.

Layout: images in `.../images/...`, one `.../labels/....txt` per image (the last `images` folder of the
path replaced by `labels`, the suffix by `.txt`); each line `class cx cy w h`, normalised to [0, 1] by
the image's width and height (a line of `class x1 y1 x2 y2 ... ` with >= 3 points is a polygon; its
bounding box is used). A missing or empty label file is an image without objects.

Class names: `data.yaml` (`names` as a list or {index: name}), else `classes.txt` (one per line).
Splits: the yaml's `train` / `val` / `test` (a folder, a .txt listing image paths, or a list of
those; relative to the yaml's `path`, or the yaml's folder), else `images/{train,val}/`, or
`{train,valid,val}/images/`, or a single split `images/`.

Category ids are class index + 1; boxes in pixels are x0 = (cx - w/2) * W, w_px = w * W (exact), then the
readers' one box rule (`split.add_box`): up to 1 px past the border is clipped, further out is left out as
a problem (a line with w or h <= 0 is a malformed line).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from ..errors import DatasetError
from ..pipeline.decode import image_size
from .split import IMAGE_SUFFIXES, SPLIT_ALIASES, DatasetSplit, add_box

logger = logging.getLogger(__name__)
_NOT_LABEL_FILES = {"classes.txt", "labels.txt", "readme.txt"}  # text files found beside label files


def is_yolo(root: Path) -> bool:
    """True when `root` looks like a YOLO dataset (a data yaml, classes.txt, or a labels/ folder)."""
    return (
        _yaml_file(root) is not None
        or (root / "classes.txt").is_file()
        or (root / "labels").is_dir()
        or any((root / name / "labels").is_dir() for name in SPLIT_ALIASES)
    )


def yolo_splits(root: str | Path) -> dict[str, list[Path]]:
    """{split name: image files} of the YOLO dataset at `root` (split names normalised: valid -> val)."""
    return {name: images for name, (images, _) in _split_sources(Path(root)).items()}


def _split_sources(root: Path) -> dict[str, tuple[list[Path], list[Path]]]:
    """{split name: (image files, the image folders they were found in)}; see `yolo_splits`."""
    config = _read_yaml(root)
    splits: dict[str, tuple[list[Path], list[Path]]] = {}
    if config is not None and any(key in config for key in ("train", "val", "test")):
        base = _yaml_base(root, config)
        for key in ("train", "val", "test"):
            if not config.get(key):
                continue
            folders: list[Path] = []
            try:
                splits[key] = (_images_of(base, config[key], root, folders), folders)
            except DatasetError as error:
                if key != "test":
                    raise
                logger.warning("%s; the test split is not used for training, so it is left out", error)
        return splits
    for name, alias in SPLIT_ALIASES.items():
        for folder in (root / "images" / name, root / name / "images"):
            if folder.is_dir():
                images, folders = splits.setdefault(alias, ([], []))
                images.extend(_images_under(folder))
                folders.append(folder)
    if not splits and (root / "images").is_dir():
        splits["train"] = (_images_under(root / "images"), [root / "images"])
    if not splits:
        raise DatasetError(
            f"{root}: no YOLO images found; expected images/{{train,val}}/, {{train,val}}/images/ or a data.yaml"
        )
    return splits


def class_names(root: str | Path) -> list[str]:
    """Class names in index order, from data.yaml (`names`) or classes.txt."""
    root = Path(root)
    config = _read_yaml(root)
    if config is not None and "names" in config:
        names = config["names"]
        if isinstance(names, dict):
            try:
                indexed = {int(k): str(v) for k, v in names.items()}
            except (TypeError, ValueError):
                raise DatasetError(f"{_yaml_file(root)}: 'names' keys must be class indices 0..K-1") from None
            if sorted(indexed) != list(range(len(indexed))):
                raise DatasetError(
                    f"{_yaml_file(root)}: 'names' keys {sorted(indexed)} are not 0..{len(indexed) - 1}; number the classes from 0"
                )
            return [indexed[i] for i in range(len(indexed))]
        if isinstance(names, list) and names:
            return [str(n) for n in names]
        raise DatasetError(f"{_yaml_file(root)}: 'names' must be a non-empty list or {{index: name}} mapping")
    classes = root / "classes.txt"
    if classes.is_file():
        names = [line.strip() for line in classes.read_text(errors="replace").splitlines() if line.strip()]
        if names:
            return names
        raise DatasetError(f"{classes}: no class names in it; write one name per line")
    raise DatasetError(f"{root}: no class names; add a data.yaml with 'names' or a classes.txt (one name per line)")


def read_yolo(root: str | Path, split: str) -> DatasetSplit:
    """Read one split of a YOLO dataset into COCO form; unparseable lines become `problems`, not errors.

    Raises:
        DatasetError: no class names, or no such split.
    """
    root = Path(root)
    names = class_names(root)
    sources = _split_sources(root)
    if split not in sources:
        raise DatasetError(f"{root}: YOLO dataset has no '{split}' split (found {', '.join(sources) or 'none'})")
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    result = DatasetSplit(split, "yolo", root, coco, root)
    for image_path in sources[split][0]:
        _read_image(root, image_path, len(names), result)
    result.labels_without_image = [_relative(path, root) for path in _labels_without_image(sources, split)]
    return result


def _labels_without_image(sources: dict[str, tuple[list[Path], list[Path]]], split: str) -> list[Path]:
    """The label files in `split`'s labels folders that no image of any split uses, sorted.

    A labels folder is an images folder with its last `images` replaced by `labels` (as `label_file`); one
    shared by several splits counts its files in the first. Names like `classes.txt` (LabelImg writes it
    there) are not label files.
    """
    resolved: dict[Path, Path] = {}  # folder -> its resolved path (one resolve per folder, not per file)

    def canonical(path: Path) -> Path:
        if path.parent not in resolved:
            resolved[path.parent] = path.parent.resolve()
        return resolved[path.parent] / path.name

    used = {canonical(label_file(image)) for images, _ in sources.values() for image in images}
    claimed: set[Path] = set()
    orphans: list[Path] = []
    for name, (_, folders) in sources.items():
        for folder in folders:
            labels = label_file(folder / "x.jpg").parent.resolve()
            if labels == folder.resolve() or labels in claimed or not labels.is_dir():
                continue  # labels beside the images (no `images` folder in the path) are not searched
            claimed.add(labels)
            if name == split:
                orphans.extend(
                    path
                    for path in labels.rglob("*.txt")
                    if path.name.lower() not in _NOT_LABEL_FILES and path.is_file() and canonical(path) not in used
                )
    return sorted(orphans)


def _read_image(root: Path, image_path: Path, num_classes: int, result: DatasetSplit) -> None:
    image_id = len(result.coco["images"]) + 1
    shown = _relative(image_path, root)
    try:
        width, height = image_size(image_path, name=shown, verify=False)
    except DatasetError as error:
        kind = "unreadable_image" if image_path.exists() else "missing_image"  # a list file names a missing one
        result.problems.append((kind, str(error), None))
        return
    result.coco["images"].append(
        {"id": image_id, "file_name": _relative(image_path, root), "width": width, "height": height}
    )
    label_path = label_file(image_path)
    if not label_path.is_file():
        return
    try:
        lines = label_path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        result.coco["images"].pop()  # its boxes are unknown: the image is left out, not kept as one without objects
        result.problems.append(
            (
                "malformed_entry",
                f"{_relative(label_path, root)}: cannot read ({type(error).__name__}: {error}); fix the file",
                None,
            )
        )
        return
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{_relative(label_path, root)}:{number}"
        parsed = _parse_line(line)
        if isinstance(parsed, str):
            result.problems.append(("malformed_entry", f"{where}: {parsed}, got {line.strip()[:60]!r}", image_id))
            continue
        class_index, (x0, y0, x1, y1) = parsed
        if not 0 <= class_index < num_classes:
            result.problems.append(
                (
                    "unknown_category_id",
                    f"{where}: class {class_index} is not in 0..{num_classes - 1} "
                    f"({num_classes} names); fix the class or add its name",
                    image_id,
                )
            )
            continue
        described = f"box ({x0:.4g}, {y0:.4g}, {x1:.4g}, {y1:.4g}) (normalised x0 y0 x1 y1)"
        box_xyxy = (x0 * width, y0 * height, x1 * width, y1 * height)
        add_box(result, image_id, class_index + 1, box_xyxy, (width, height), where, described)


def _parse_line(line: str) -> tuple[int, tuple[float, float, float, float]] | str:
    """(class index, normalised x0 y0 x1 y1), or what is wrong with the line."""
    fields = line.split()
    try:
        values = [float(v) for v in fields]
    except ValueError:
        return "expected numbers (class cx cy w h)"
    if not all(math.isfinite(v) for v in values):
        return "non-finite number"
    if values[0] != int(values[0]) or values[0] < 0:
        return f"class {fields[0]} is not a non-negative integer"
    class_index = int(values[0])
    if len(values) == 5:
        cx, cy, w, h = values[1:]
        if w <= 0 or h <= 0:
            return f"box width/height {w:.4g}/{h:.4g} must be > 0"
        return class_index, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    if len(values) >= 7 and len(values) % 2 == 1:  # polygon: class x1 y1 x2 y2 x3 y3 ...
        xs, ys = values[1::2], values[2::2]
        if max(xs) <= min(xs) or max(ys) <= min(ys):
            return "polygon has zero width or height"
        return class_index, (min(xs), min(ys), max(xs), max(ys))
    return f"{len(values)} numbers; expected 5 (class cx cy w h) or a polygon (class x1 y1 x2 y2 x3 y3 ...)"


def label_file(image_path: Path) -> Path:
    """The label file of an image: the last `images` folder in its path replaced by `labels`, suffix .txt."""
    parts = list(image_path.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _images_of(base: Path, entry, root: Path, folders: list[Path]) -> list[Path]:
    """Images named by a yaml split entry: a folder, a .txt list of paths, or a list of those; the folders
    they are in are appended to `folders` (a listed image's own folder)."""
    if isinstance(entry, list):
        return [path for item in entry for path in _images_of(base, item, root, folders)]
    if not isinstance(entry, str):
        raise DatasetError(
            f"{_yaml_file(root)}: split entry {entry!r} must be a folder, a .txt list of images, or a list of those"
        )
    path = _resolve(base, entry, root)
    if path.is_dir():
        folders.append(path)
        return _images_under(path)
    if path.is_file() and path.suffix == ".txt":
        listed = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        images = [_resolve(path.parent, item, root) if not Path(item).is_absolute() else Path(item) for item in listed]
        folders.extend(dict.fromkeys(image.parent for image in images))
        return images
    if path.is_file():
        folders.append(path.parent)
        return [path]
    raise DatasetError(
        f"{_yaml_file(root)}: split path {entry!r} not found (looked for {path}); fix the path in the yaml"
    )


def _resolve(base: Path, entry: str, root: Path) -> Path:
    """`entry` relative to `base`; Roboflow exports write '../train/images' meaning root/train/images."""
    path = Path(entry) if Path(entry).is_absolute() else base / entry
    if not path.exists() and entry.startswith("../"):
        for candidate in (root / entry[3:], base / entry[3:]):
            if candidate.exists():
                return candidate
    return path


def _yaml_file(root: Path) -> Path | None:
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (root / name).is_file():
            return root / name
    candidates = sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml"))
    return candidates[0] if len(candidates) == 1 else None


def _read_yaml(root: Path) -> dict | None:
    path = _yaml_file(root)
    if path is None:
        return None
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not valid YAML ({str(error).splitlines()[0]}); fix the file") from None
    if not isinstance(config, dict):
        raise DatasetError(f"{path}: expected a mapping with 'names' and 'train'/'val'; got {type(config).__name__}")
    return config


def _yaml_base(root: Path, config: dict) -> Path:
    base = config.get("path")
    if isinstance(base, str) and base:
        base_path = Path(base)
        if not base_path.is_absolute():
            base_path = root / base_path
        if base_path.is_dir():
            return base_path
    return root
