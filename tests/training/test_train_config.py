"""TrainConfig: to_dict/from_dict round trip through JSON, unknown keys refused by name, validation, helpers."""

import dataclasses
import json

import pytest

from deformable_detr.errors import ConfigError
from deformable_detr.models.config import ModelConfig
from deformable_detr.training.config import TrainConfig
from deformable_detr.training.criterion import LossConfig
from deformable_detr.training.optim import OptimConfig


def test_round_trip_through_json_restores_every_type():
    config = TrainConfig.preset("demo", data_dir="d", output_dir="o", crop_size=(100, 150), max_steps=7)
    config = dataclasses.replace(
        config,
        loss=LossConfig(cost_class=3.0, aux_loss=False),
        optim=OptimConfig(lr=1e-3, betas=(0.8, 0.9), schedule="linear"),
    )
    restored = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.model, ModelConfig) and isinstance(restored.optim.betas, tuple)
    assert isinstance(restored.train_scales, tuple) and restored.crop_size == (100, 150)


def test_partial_dict_takes_defaults():
    assert TrainConfig.from_dict({"epochs": 3}) == TrainConfig(epochs=3)


@pytest.mark.parametrize(
    "values, pattern",
    [
        ({"epoch": 3}, r"unknown TrainConfig field\(s\) epoch; known fields: .*epochs"),
        ({"optim": {"learning_rate": 1.0}}, r"unknown OptimConfig field\(s\) learning_rate"),
        ({"loss": {"dice": 1.0}}, r"unknown LossConfig field\(s\) dice"),
        ({"device": "gpu"}, r"TrainConfig.device = 'gpu'; use cpu, cuda or cuda:N"),
        ({"threads": -1}, r"TrainConfig.threads = -1 must be >= 0"),
        ({"max_minutes": float("nan")}, r"TrainConfig.max_minutes = nan \(float\): takes a finite number or None"),
        ({"optim": {"lr": float("inf")}}, r"OptimConfig.lr = inf \(float\): takes a finite number"),
    ],
)
def test_bad_values_are_config_errors(values, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TrainConfig.from_dict(values)


def test_unknown_model_field_is_refused():
    with pytest.raises(ValueError, match="unknown ModelConfig field.*d_modell"):
        TrainConfig.from_dict({"model": {"d_modell": 32}})


def test_with_lr_scales_the_backbone_along():
    config = TrainConfig(optim=OptimConfig(lr=2e-4, lr_backbone=2e-5)).with_lr(1e-3)
    assert config.optim.lr == 1e-3 and config.optim.lr_backbone == pytest.approx(1e-4, rel=1e-12)
    with pytest.raises(ConfigError, match="lr = 0 must be a finite number > 0"):
        config.with_lr(0)


def test_of_run_reads_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TrainConfig(epochs=4, output_dir="elsewhere").to_dict()))
    config = TrainConfig.of_run(tmp_path)
    assert config.epochs == 4 and config.output_dir == str(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        TrainConfig.of_run(tmp_path)
