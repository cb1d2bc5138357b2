"""Helpers of the inference tests: a tiny random detector and image files."""

import numpy as np
import torch
from PIL import Image

from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.pipeline.processor import PreprocessConfig
from tiny_models import TINY as TINY_SIZES

TINY = dict(TINY_SIZES, num_classes=3)
CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 5, "name": "triangle"}]


def tiny_model(**overrides) -> DeformableDETR:
    """A random tiny detector (3 classes) that resizes images to a 96 px shorter side (160 max)."""
    torch.manual_seed(0)
    model = DeformableDETR(
        ModelConfig(**{**TINY, **overrides}),
        preprocess=PreprocessConfig(min_size=96, max_size=160),
        categories=CATEGORIES,
    )
    with torch.no_grad():  # scores spread out instead of all ~0.01 (the focal prior)
        for head in model.class_heads:
            head.bias.normal_(0.0, 2.0)
    return model.eval()


def write_image(path, height, width, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode).save(path)
    return path


VARIANTS = {
    "single-scale": dict(num_feature_levels=1),
    "single-scale-dc5": dict(num_feature_levels=1, dilation=True),
    "multi-scale": dict(),
    "refine": dict(with_box_refine=True),
    "two-stage": dict(two_stage=True),
    "two-stage-refine": dict(with_box_refine=True, two_stage=True),
}
