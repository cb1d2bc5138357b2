"""Inference for users: `load` turns any supported weights into a ready model (see loader.py)."""

from deformable_detr.inference.loader import CheckpointInfo, load

__all__ = ["CheckpointInfo", "load"]
