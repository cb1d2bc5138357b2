"""deformable_detr.registry: each architecture's config class, model class, criterion, loss weights, converters.

Oracles: the papers' choices written out here (DETR: softmax criterion, class/L1/GIoU weights 1/5/2, no official
or HF converter in this package; Deformable DETR: focal-loss criterion 2/5/2 with its denoising switch).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from deformable_detr.errors import ConfigError
from deformable_detr.interop.huggingface import transformers_to_ours
from deformable_detr.interop.official import official_to_ours
from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.models.detr import DETR
from deformable_detr.models.detr_config import DetrConfig
from deformable_detr.registry import (
    ARCHITECTURES,
    architecture_of,
    build_criterion,
    build_model,
    default_loss_config,
    model_class,
    model_config_from_dict,
    model_preset,
)
from deformable_detr.training.criterion import LossConfig, SetCriterion
from deformable_detr.training.detr_criterion import DetrCriterion
from tiny_models import tiny_config, tiny_detr_config

SRC = Path(__file__).resolve().parents[1] / "src" / "deformable_detr"


def test_each_architecture_maps_to_its_classes_and_converters():
    assert {name: (a.config_class, a.model_class) for name, a in ARCHITECTURES.items()} == {
        "deformable-detr": (ModelConfig, DeformableDETR),
        "detr": (DetrConfig, DETR),
    }
    assert (ARCHITECTURES["deformable-detr"].from_official, ARCHITECTURES["deformable-detr"].from_transformers) == (
        official_to_ours,
        transformers_to_ours,
    )
    assert (ARCHITECTURES["detr"].from_official, ARCHITECTURES["detr"].from_transformers) == (None, None)


def test_configs_models_and_presets_of_both_architectures():
    detr, deformable = tiny_detr_config(num_classes=3), tiny_config(num_classes=3)
    assert model_class(detr) is DETR and model_class(deformable) is DeformableDETR
    assert type(build_model(detr.to_dict())) is DETR and type(build_model(deformable)) is DeformableDETR
    assert model_config_from_dict(detr.to_dict()) == detr and model_config_from_dict(deformable.to_dict()) == deformable
    assert architecture_of(build_model(detr)).name == "detr"  # a model answers for its config
    assert type(model_preset("detr-tiny")) is DetrConfig and type(model_preset("tiny")) is ModelConfig
    with pytest.raises(ConfigError, match=r"architecture='yolo' is unknown"):
        model_config_from_dict({"architecture": "yolo"})
    with pytest.raises(ConfigError, match=r"architecture='deformable-detr' is unknown"):  # ModelConfig has no such key
        model_config_from_dict({"architecture": "deformable-detr"})
    with pytest.raises(ConfigError, match=r"unknown model preset 'detr-r18'; choose one of .*detr-r50.*tiny"):
        model_preset("detr-r18")
    with pytest.raises(ConfigError, match=r"dict is no model config"):
        architecture_of({})


def test_criterion_and_loss_weights_fit_the_architecture():
    detr, deformable = tiny_detr_config(num_classes=3), tiny_config(num_classes=3, denoising=True)
    assert (default_loss_config(detr).cost_class, default_loss_config(detr).loss_bbox) == (1.0, 5.0)
    assert (default_loss_config(deformable).cost_class, default_loss_config(deformable).loss_ce) == (2.0, 2.0)
    assert type(build_criterion(detr, default_loss_config(detr))) is DetrCriterion
    criterion = build_criterion(deformable, LossConfig())
    assert type(criterion) is SetCriterion and criterion.denoising is not None
    assert build_criterion(tiny_config(num_classes=3), LossConfig()).denoising is None


def test_only_the_registry_picks_a_model_class():
    """No other module imports both detector classes (which it would need to choose between them)."""
    pickers = []
    for path in sorted(SRC.rglob("*.py")):
        names = {
            alias.name
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        if {"DETR", "DeformableDETR"} <= names:
            pickers.append(str(path.relative_to(SRC)))
    assert pickers == ["registry.py"]
