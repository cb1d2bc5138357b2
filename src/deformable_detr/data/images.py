"""Decoding image files into RGB PIL images, with one clear error for anything that is not a usable image."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DatasetError


def load_rgb_image(path: Path) -> Image.Image:
    """Open an image, apply its EXIF orientation and convert it (grayscale, RGBA, palette, ...) to RGB.

    Raises:
        DatasetError: one line naming the file when it is missing or cannot be decoded.
    """
    try:
        with Image.open(path) as raw:
            image = ImageOps.exif_transpose(raw)
            image.load()
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found; check the images folder or the file_name in the annotations") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DatasetError(f"{path}: cannot decode image ({error}); replace the file or remove it from the annotations") from None
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")
