"""Checks of the tensors given to a detector, so bad input fails with one clear line instead of deep inside.

Shape, dtype and device checks are free; the one value check (NaN/Inf pixels) is a single `isfinite`
reduction, skipped while tracing, compiling or exporting (where it would break the graph).
"""

from __future__ import annotations

import torch

from deformable_detr.errors import ModelInputError


def _is_capturing() -> bool:
    """True under torch.jit tracing, torch.compile/dynamo or ONNX export."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())


def check_model_input(images: torch.Tensor, padding_mask: torch.Tensor | None, channels: int = 3) -> None:
    """Raise ModelInputError unless `images`/`padding_mask` are what `DeformableDETR.forward` takes.

    Args:
        images: expected (B, channels, H, W), B >= 1, H, W >= 1, floating point, finite.
        padding_mask: expected None or (B, H, W) bool (True = padding) on the images' device.
        channels: expected channel count (3: RGB).

    Raises:
        ModelInputError: naming the argument, what it got and what is expected.
    """
    if not isinstance(images, torch.Tensor):
        raise ModelInputError(f"images must be a (B, {channels}, H, W) float tensor; got {type(images).__name__}")
    if images.dim() != 4:
        hint = "; add a batch dimension with images[None]" if images.dim() == 3 else ""
        raise ModelInputError(f"images must be (B, {channels}, H, W); got shape {tuple(images.shape)}{hint}")
    batch, got_channels, height, width = images.shape
    if batch == 0:
        raise ModelInputError("images is an empty batch (B = 0); pass at least one image")
    if got_channels != channels:
        raise ModelInputError(
            f"images has {got_channels} channels (shape {tuple(images.shape)}); the model takes "
            f"{channels} (RGB): convert grayscale/RGBA images to RGB first"
        )
    if height == 0 or width == 0:
        raise ModelInputError(f"images has an empty side (shape {tuple(images.shape)}); pass images of at least 1x1")
    if not images.is_floating_point():
        raise ModelInputError(
            f"images has dtype {images.dtype}; the model takes normalized floating-point pixels "
            "(convert with .float() and normalize with the model's mean/std)"
        )
    if padding_mask is not None:
        if not isinstance(padding_mask, torch.Tensor):
            raise ModelInputError(
                f"padding_mask must be a (B, H, W) bool tensor or None; got {type(padding_mask).__name__}"
            )
        if padding_mask.dtype != torch.bool:
            raise ModelInputError(
                f"padding_mask has dtype {padding_mask.dtype}; it must be bool with True = padding "
                "(a 1 = valid mask converts with mask == 0)"
            )
        if tuple(padding_mask.shape) != (batch, height, width):
            raise ModelInputError(
                f"padding_mask has shape {tuple(padding_mask.shape)}; it must be (B, H, W) = "
                f"{(batch, height, width)} to match images {tuple(images.shape)}"
            )
        if padding_mask.device != images.device:
            raise ModelInputError(
                f"padding_mask is on {padding_mask.device} but images on {images.device}; "
                "move both to the model's device"
            )
    if not _is_capturing() and not bool(torch.isfinite(images).all()):
        raise ModelInputError("images contain NaN or Inf pixels; check the image decoding and normalization")
