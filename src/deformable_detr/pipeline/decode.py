"""Any image input -> an 8-bit RGB PIL image, with one clear error for anything that is not a usable image.

Files (paths, bytes, uploads) decode through `load_rgb_image`; `to_rgb_image` also takes PIL images, numpy
arrays and tensors (the inputs of `predict`).

Policy (the same for training data, `predict` and uploads to `serve`):
- EXIF orientation is applied, so the image is what a viewer shows.
- Modes: grayscale (8-bit `L`, 16-bit `I;16*` / `I`), float `F`, RGBA / LA / transparent palette
  (composited over white, as a viewer shows them on a white page), palette, CMYK and YCbCr all become
  8-bit RGB. 16-bit values are scaled by 255/65535 (not clipped, which would turn them white).
- Size: an image over `MAX_PIXELS` (PIL's own decompression-bomb limit) is refused before any pixel
  is decoded. An image whose longer side exceeds `MAX_SIDE` is downscaled to that side (JPEGs are
  decoded at reduced scale, so memory stays small); `image.info["original_size"]` then holds its
  (width, height) in the file, so boxes given in the file's pixels can be rescaled.
- Missing, empty (0 bytes), truncated or non-image files raise `DatasetError` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from deformable_detr.errors import DatasetError, ModelInputError

MAX_SIDE = 10_000  # px; longer sides are downscaled to this
MAX_PIXELS = 178_956_970  # width * height above this is refused (PIL's DecompressionBombError limit)
ImageSource = str | os.PathLike | bytes | BinaryIO


def load_rgb_image(
    source: ImageSource, name: str | None = None, hint: str | None = None, max_side: int = MAX_SIDE
) -> Image.Image:
    """Decode an image file (path, bytes or binary file object) into an 8-bit RGB PIL image.

    Args:
        source: a path, the file's bytes, or a binary file object (e.g. an upload).
        name: how messages name the image (default: the path, or "image" for bytes/file objects).
        hint: what the user should do, appended to decoding errors (default: replace the file).
        max_side: longer sides above this are downscaled to it (see the module docstring).

    Returns:
        RGB image of the displayed size (after EXIF rotation), at most `max_side` on its longer side.
        When downscaled, `image.info["original_size"]` is the (width, height) before downscaling.

    Raises:
        DatasetError: one line naming the file, when it is missing, empty, not an image, truncated
            or corrupt, or over `MAX_PIXELS`.
    """
    label = _label(source, name)
    hint = hint or "replace the file with a valid JPEG/PNG/BMP/TIFF/WebP image"
    with _open(source, label, hint) as raw:
        width, height = _checked_size(raw, label)
        original_size = _displayed_size(raw, width, height)
        scale = max_side / max(width, height)
        try:
            if scale < 1 and raw.format == "JPEG":
                raw.draft(
                    raw.mode, (max(1, int(width * scale)), max(1, int(height * scale)))
                )  # decode at 1/2..1/8 scale
            with _quiet_pil():
                raw.load()
                image = ImageOps.exif_transpose(raw)
            image = to_rgb(image)
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, struct.error ... for bad files
            raise DatasetError(f"{label}: cannot decode image ({_reason(error)}); {hint}") from None
    if max(image.size) > max_side:
        factor = max_side / max(image.size)
        image = image.resize(
            (max(1, round(image.width * factor)), max(1, round(image.height * factor))), Image.BILINEAR
        )
    if image.size != original_size:
        image.info["original_size"] = original_size
    return image


def image_size(
    source: ImageSource, name: str | None = None, hint: str | None = None, verify: bool = True
) -> tuple[int, int]:
    """(width, height) an image displays at (after EXIF rotation), checking that it decodes.

    Args:
        verify: decode the pixels (JPEGs at 1/8 scale, which still reads every byte) to find truncated
            or corrupt files; False reads only the header.

    Raises:
        DatasetError: as `load_rgb_image`.
    """
    label = _label(source, name)
    hint = hint or "replace the file with a valid JPEG/PNG/BMP/TIFF/WebP image"
    with _open(source, label, hint) as raw:
        width, height = _checked_size(raw, label)
        size = _displayed_size(raw, width, height)
        if verify:
            try:
                if raw.format == "JPEG":
                    raw.draft(raw.mode, (max(1, width // 8), max(1, height // 8)))
                with _quiet_pil():
                    raw.load()
            except Exception as error:  # as in load_rgb_image
                raise DatasetError(f"{label}: cannot decode image ({_reason(error)}); {hint}") from None
    return size


@contextlib.contextmanager
def _quiet_pil():
    """Silence PIL's warnings (size over its bomb-warning level, which `_checked_size` handles; corrupt EXIF
    or TIFF tags in an image that still decodes): a file either decodes or raises one DatasetError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def _label(source: ImageSource, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return str(getattr(source, "name", "image"))


def _open(source: ImageSource, label: str, hint: str) -> Image.Image:
    """Image.open with every failure turned into one DatasetError line (no pixels decoded yet)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    try:
        if isinstance(source, (str, os.PathLike)):
            if not Path(source).exists():
                raise DatasetError(f"{label}: image file not found; check the path")
            if Path(source).is_dir():
                raise DatasetError(f"{label}: not a readable image: it is a folder; give the path of an image file")
            if Path(source).is_file() and os.path.getsize(source) == 0:
                raise DatasetError(f"{label}: image file is empty (0 bytes); {hint}")
        elif _remaining_bytes(source) == 0:
            raise DatasetError(f"{label}: image is empty (0 bytes); {hint}")
        with _quiet_pil():
            return Image.open(source)
    except DatasetError:
        raise
    except Image.DecompressionBombError:
        raise DatasetError(
            f"{label}: image refused: over the {MAX_PIXELS}-pixel limit (a possible decompression bomb); "
            "downscale the file"
        ) from None
    except UnidentifiedImageError:
        raise DatasetError(f"{label}: not an image file (format not recognised); {hint}") from None
    except Exception as error:  # IsADirectoryError, PermissionError, a truncated header ...
        raise DatasetError(f"{label}: not a readable image ({_reason(error)}); {hint}") from None


def _remaining_bytes(stream: BinaryIO) -> int | None:
    try:
        position = stream.tell()
        end = stream.seek(0, io.SEEK_END)
        stream.seek(position)
        return end - position
    except (OSError, AttributeError, ValueError):
        return None


def _checked_size(raw: Image.Image, label: str) -> tuple[int, int]:
    width, height = raw.size
    if width <= 0 or height <= 0:
        raise DatasetError(f"{label}: image has size {width}x{height}; replace the file")
    if width * height > MAX_PIXELS:
        raise DatasetError(
            f"{label}: image of {width}x{height} = {width * height} pixels is over the {MAX_PIXELS}-pixel "
            "limit (a possible decompression bomb); refused; downscale the file"
        )
    return width, height


def _displayed_size(raw: Image.Image, width: int, height: int) -> tuple[int, int]:
    """(width, height) after the EXIF orientation (5-8 rotate by 90 degrees)."""
    try:
        with _quiet_pil():
            orientation = raw.getexif().get(0x0112)
    except Exception:  # a corrupt EXIF block: exif_transpose will ignore it too  # noqa: BLE001
        orientation = None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode (see the module docstring)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.float64)
        if mode == "I" and values.max(initial=0) <= 255 and values.min(initial=0) >= 0:
            scaled = values  # 8-bit data stored as 32-bit integers
        else:
            scaled = values * (255.0 / 65535.0)
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0  # [0, 1] floats, or 0..255
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


def to_rgb_image(image: ImageInput) -> Image.Image:
    """Any supported image input as an RGB PIL image (8 bits per channel).

    Args:
        image: a file path (decoded by `load_rgb_image`: EXIF orientation applied, any mode -> RGB,
            sides over 10k px downscaled with `info["original_size"]` kept); a PIL image (used as it
            is, no EXIF rotation, converted to RGB like a file); a numpy (H, W, 3) or (H, W) uint8 array;
            a torch (3, H, W) or (1, H, W) tensor, uint8 in 0..255 or floating point in [0, 1]
            (rounded to 8 bits, so it gives the same result as the uint8 image it came from).

    Raises:
        DatasetError: a file that is missing or cannot be decoded.
        ModelInputError: an array or tensor of the wrong shape, dtype or range, or an empty image.
    """
    if isinstance(image, (str, os.PathLike)):
        return load_rgb_image(Path(image))
    if isinstance(image, Image.Image):
        if image.width < 1 or image.height < 1:
            raise ModelInputError(f"PIL image of size {image.size} is empty; give an image of at least 1x1 pixels")
        return to_rgb(image)  # the same mode policy as files (alpha over white, 16-bit scaled, ...)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ModelInputError(
                f"numpy image has shape {image.shape} and dtype {image.dtype}; expected (H, W, 3) "
                "or (H, W) uint8 (convert with (array * 255).round().astype(np.uint8))"
            )
        if image.size == 0:
            raise ModelInputError(f"numpy image of shape {image.shape} is empty; give at least 1x1 pixels")
        return Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    if isinstance(image, torch.Tensor):
        return _tensor_to_image(image)
    raise ModelInputError(
        f"cannot use a {type(image).__name__} as an image; give a path, a PIL image, a numpy "
        "(H, W, 3) uint8 array or a (3, H, W) tensor"
    )


def _tensor_to_image(image: torch.Tensor) -> Image.Image:
    """(3 | 1, H, W) uint8 or float in [0, 1] -> RGB PIL image."""
    if image.dim() != 3 or image.shape[0] not in (1, 3) or image.shape[1] < 1 or image.shape[2] < 1:
        raise ModelInputError(
            f"image tensor has shape {tuple(image.shape)}; expected (3, H, W) or (1, H, W) "
            "with H, W >= 1 (a batch of images goes in as a list)"
        )
    image = image.detach().cpu()
    if image.is_floating_point():
        if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ModelInputError(
                f"float image tensor has values in [{image.min().item()}, {image.max().item()}]"
                " or non-finite ones; expected pixel values in [0, 1] (or a uint8 tensor)"
            )
        image = (image.float() * 255).round().to(torch.uint8)
    elif image.dtype != torch.uint8:
        raise ModelInputError(f"image tensor has dtype {image.dtype}; expected uint8 (0..255) or float (0..1)")
    pixels = image.expand(3, -1, -1).permute(1, 2, 0).contiguous().numpy()  # (H, W, 3)
    return Image.fromarray(pixels, "RGB")
