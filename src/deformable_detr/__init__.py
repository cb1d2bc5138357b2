"""Deformable DETR: multi-scale deformable attention, detector, training, inference, export and serving.

import deformable_detr
model = deformable_detr.load("run/best.pth")          # any checkpoint format people have
detections = model.predict(["photo.jpg"], threshold=0.5)
"""

__version__ = "0.1.0"

from deformable_detr.errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    DatasetError,
    DeformableDetrError,
    ModelInputError,
)
from deformable_detr.inference.load import load  # noqa: E402
from deformable_detr.models import DeformableDETR, ModelConfig  # noqa: E402
from deformable_detr.models.deformable_attention import MultiScaleDeformableAttention  # noqa: E402
from deformable_detr.ops import multi_scale_deformable_attention  # noqa: E402
from deformable_detr.pipeline.detections import Detections  # noqa: E402
from deformable_detr.pipeline.processor import PreprocessConfig  # noqa: E402
from deformable_detr.training import TrainConfig, fit  # noqa: E402


def __getattr__(name: str):
    """`compile_inference` on first use only: it imports torch._dynamo, seconds that plain users need not pay."""
    if name == "compile_inference":
        from deformable_detr.pipeline.compiled import compile_inference

        return compile_inference
    raise AttributeError(f"module 'deformable_detr' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "DeformableDETR",
    "DeformableDetrError",
    "Detections",
    "ModelConfig",
    "ModelInputError",
    "MultiScaleDeformableAttention",
    "PreprocessConfig",
    "TrainConfig",
    "compile_inference",
    "fit",
    "load",
    "multi_scale_deformable_attention",
]
