"""Deformable DETR: multi-scale deformable attention, detector, training and interop."""

__version__ = "0.1.0"

from deformable_detr.models import DeformableDETR, ModelConfig  # noqa: E402  (public API)
