"""Inference for users: `load` turns any supported weights into a ready model (see load.py)."""

from deformable_detr.checkpoint.format import CheckpointInfo
from deformable_detr.inference.load import load

__all__ = ["CheckpointInfo", "load"]
