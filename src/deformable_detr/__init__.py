"""Deformable DETR: multi-scale deformable attention, detector, training and interop."""

__version__ = "0.1.0"
