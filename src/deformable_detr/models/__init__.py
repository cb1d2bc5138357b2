"""The Deformable DETR detector: config, backbone, transformer, heads and postprocessing."""

from deformable_detr.models.config import PRESETS, ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.models.postprocess import postprocess

__all__ = ["PRESETS", "DeformableDETR", "ModelConfig", "postprocess"]
