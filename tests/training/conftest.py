"""Fixtures for training tests: a tiny training config (datasets and one_thread: tests/conftest.py)."""

import pytest

from deformable_detr.models.config import ModelConfig
from deformable_detr.training.config import TrainConfig
from deformable_detr.training.optim import OptimConfig


def tiny_model_config(**overrides) -> ModelConfig:
    """About 0.1M parameters: widths 8-64, d_model 32, 1+1 layers, 10 queries."""
    values = dict(
        backbone_base_width=8,
        d_model=32,
        n_heads=2,
        enc_n_points=2,
        dec_n_points=2,
        num_encoder_layers=1,
        num_decoder_layers=2,
        dim_feedforward=64,
        num_queries=10,
        dropout=0.0,
    )
    values.update(overrides)
    return ModelConfig.preset("tiny", **values)


@pytest.fixture
def make_tiny_model_config():
    return tiny_model_config


@pytest.fixture
def tiny_train_config(tiny_dataset, tmp_path, one_thread):
    return TrainConfig(
        model=tiny_model_config(),
        optim=OptimConfig(lr=1e-3, lr_backbone=1e-3, warmup_steps=2),
        data_dir=str(tiny_dataset),
        output_dir=str(tmp_path / "run"),
        train_scales=(56, 64),
        max_size=80,
        crop_resize=(48,),
        crop_size=(32, 48),
        val_size=64,
        epochs=2,
        batch_size=2,
        eval_every=0,
        workers=0,
        threads=1,
        seed=0,
        log_every=1,
    )
