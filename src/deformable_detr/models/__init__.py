"""The Deformable DETR detector: config, backbone, transformer, heads."""

from deformable_detr.models.config import PRESETS, ModelConfig
from deformable_detr.models.detector import DeformableDETR

__all__ = ["PRESETS", "DeformableDETR", "ModelConfig"]
