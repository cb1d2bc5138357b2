"""The tiny model every test builds: a one-block ResNet-18 of width 16..128 and a d_model 32 transformer, so
every variant builds and runs in well under a second. Imported by test modules as `from tiny_models import ...`
(pytest puts tests/ on sys.path for tests/conftest.py)."""

from __future__ import annotations

from deformable_detr.models.config import ModelConfig

TINY = dict(
    backbone="resnet18",
    backbone_depths=(1, 1, 1, 1),
    backbone_base_width=16,
    d_model=32,
    n_heads=2,
    enc_n_points=2,
    dec_n_points=2,
    num_encoder_layers=1,
    num_decoder_layers=2,
    dim_feedforward=64,
    num_queries=8,
    num_classes=5,
    dropout=0.0,
)

VARIANTS = {
    "single-scale": dict(num_feature_levels=1),
    "single-scale-dc5": dict(num_feature_levels=1, dilation=True),
    "multi-scale": dict(),
    "multi-scale-dc5": dict(dilation=True),
    "refine": dict(with_box_refine=True),
    "two-stage": dict(two_stage=True),
    "two-stage-refine": dict(with_box_refine=True, two_stage=True),
}


def tiny_config(**overrides) -> ModelConfig:
    """A tiny `ModelConfig`; `overrides` replace any field."""
    return ModelConfig(**{**TINY, **overrides})


TINY_DETR = dict(
    backbone="resnet18",
    backbone_depths=(1, 1, 1, 1),
    backbone_base_width=16,
    backbone_frozen_bn=False,
    freeze_stem_and_layer1=False,
    d_model=32,
    n_heads=2,
    num_encoder_layers=1,
    num_decoder_layers=2,
    dim_feedforward=64,
    num_queries=10,
    dropout=0.0,
)


def tiny_detr_config(**overrides):
    """A tiny trainable `DetrConfig` (BatchNorm trained, nothing frozen); `overrides` replace any field."""
    from deformable_detr.models.detr_config import DetrConfig

    return DetrConfig(**{**TINY_DETR, **overrides})


SHAPES = ["circle", "square", "triangle", "star", "ring", "cross"]  # the synthetic dataset's names, ids 1..6


def write_detr_run(folder, seed: int = 0):
    """A DETR training run folder as `deformable-detr train` writes it (best.pth: model, TrainConfig, categories,
    AP, step, epoch; written with a checksum), built by hand from a tiny DETR of 6 classes with seeded random
    weights; the class biases are zeroed so that scores spread out. Returns (folder, the model in eval mode)."""
    from pathlib import Path

    import torch

    from deformable_detr.models.detr import DETR
    from deformable_detr.pipeline.processor import PreprocessConfig
    from deformable_detr.training.checkpoint import save_checkpoint
    from deformable_detr.training.config import TrainConfig

    torch.manual_seed(seed)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(SHAPES)]
    config = TrainConfig(model=tiny_detr_config(num_classes=6), val_size=64, max_size=96)
    preprocess = PreprocessConfig(min_size=config.val_size, max_size=config.max_size)  # what the loader derives
    model = DETR(config.model, preprocess=preprocess, categories=categories).eval()
    with torch.no_grad():
        model.class_head.bias.zero_()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"model": model.state_dict(), "config": config.to_dict(), "categories": categories}
    save_checkpoint(folder / "best.pth", {**payload, "AP": 0.0, "step": 1, "epoch": 1}, keep_previous=False)
    return folder, model
