"""Deformable DETR: multi-scale deformable attention, detector, training and interop."""

__version__ = "0.1.0"

from deformable_detr.models import DeformableDETR, ModelConfig  # noqa: E402  (public API)
from deformable_detr.models.deformable_attention import MultiScaleDeformableAttention  # noqa: E402
from deformable_detr.ops import multi_scale_deformable_attention  # noqa: E402
from deformable_detr.inference.loader import load  # noqa: E402
