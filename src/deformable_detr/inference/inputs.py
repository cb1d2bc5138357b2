"""Which image files a `predict` command line names, and where each one's drawing goes.

Inputs are files, folders (searched recursively for image extensions) and glob patterns. Every file
gets an output path that mirrors its path below the inputs' common folder, so two `000000.jpg` from
different folders never overwrite each other's drawing, and the order is fixed by the command line
(folders and globs sorted), which is what lets several processes share the work and agree on ids.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deformable_detr.errors import ConfigError

OUTPUT_MARKER = "detections.json"  # a folder holding this is a predict output, never searched for inputs
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


@dataclass(frozen=True)
class ImageFiles:
    """The image files to process, in order, with what could not be used.

    files: resolved image paths, each once.
    outputs: per file, the relative path of its drawing (mirrors the file's path, `.png`).
    missing: {"file", "error"} for inputs that name nothing (a missing file, a glob or folder with no image).
    skipped: files inside given folders that do not have an image extension (not read).
    """

    files: list[Path]
    outputs: list[Path]
    missing: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _folder_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) below `folder`, sorted; hidden entries left out, and each earlier output
    folder (holding a `detections.json`) listed among the other files instead of searched."""
    images, others = [], []
    for root, dirs, names in os.walk(folder):
        root_path = Path(root)
        outputs = {d for d in dirs if (root_path / d / OUTPUT_MARKER).exists()}
        others.extend(root_path / d for d in sorted(outputs) if not d.startswith("."))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in outputs)
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = root_path / name
            (images if _is_image_name(path) else others).append(path)
    return images, others


def collect_image_files(inputs: Sequence[str | os.PathLike]) -> ImageFiles:
    """Expand files, folders and globs into image files with unique output paths.

    Args:
        inputs: paths of files or folders, or glob patterns (`photos/**/*.jpg`). Sub-folders holding
            a `detections.json` (outputs of an earlier `predict`) are not searched.

    Returns:
        `ImageFiles`. A file named explicitly is taken whatever its extension (decoding decides).
    """
    found: list[Path] = []
    missing, skipped = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images, others = _folder_files(path)
            skipped.extend(str(p) for p in others)
            if not images:
                missing.append(
                    {"file": str(item), "error": f"folder holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})"}
                )
            found.extend(images)
        elif path.exists():
            found.append(path)
        elif glob.has_magic(str(item)):
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=True))
            files = [p for p in matches if p.is_file() and _is_image_name(p)]
            if not files:
                missing.append({"file": str(item), "error": "the pattern matches no image file"})
            found.extend(files)
        else:
            missing.append({"file": str(item), "error": "no such file or folder"})
    files, seen = [], set()
    for path in found:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            files.append(resolved)
    return ImageFiles(files, _output_paths(files), missing, skipped)


def _output_paths(files: list[Path]) -> list[Path]:
    """Per file, its path below the files' common folder with suffix `.png`; clashes (a.jpg, a.png) get `_2`, ..."""
    if not files:
        return []
    common = Path(os.path.commonpath([str(p.parent) for p in files]))
    outputs, used = [], set()
    for path in files:
        relative = path.relative_to(common).with_suffix(".png")
        candidate, count = relative, 1
        while str(candidate).lower() in used:
            count += 1
            candidate = relative.with_name(f"{relative.stem}_{count}{relative.suffix}")
        used.add(str(candidate).lower())
        outputs.append(candidate)
    return outputs


def check_output_folder(
    out_dir: str | os.PathLike, files: Sequence[Path], overwrite: bool = False, outputs: Sequence[Path] = ()
) -> Path:
    """Refuse an output folder that holds any input (its drawings could replace them), a previous result,
    or (without `overwrite`) any file of the same name as an output to be written.

    Args:
        outputs: the drawings' paths relative to the folder (`ImageFiles.outputs`).

    Returns:
        the resolved output folder.
    """
    out = Path(out_dir).resolve()
    inside = [f for f in files if f == out or out in f.parents]
    if inside:
        raise ConfigError(
            f"--out {out_dir}: the folder contains input images (e.g. {inside[0]}); drawings could "
            "replace them; choose an output folder outside the inputs"
        )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a folder; choose a folder path")
    if (out / "detections.json").exists() and not overwrite:
        raise ConfigError(
            f"--out {out_dir}: already holds detections.json from an earlier run; "
            "choose another folder or pass --overwrite"
        )
    taken = next((out / relative for relative in outputs if (out / relative).exists()), None)
    if taken is not None and not overwrite:
        raise ConfigError(
            f"--out {out_dir}: already holds {taken}, which a drawing would replace; "
            "choose an empty folder or pass --overwrite"
        )
    return out
