"""The architectures this package builds, and the one place that picks between them.

An architecture name maps to its config class, model class, presets, criterion (and default loss weights)
and the converters of other projects' checkpoints. Everything that must choose between Deformable DETR and
DETR asks here: `TrainConfig.from_dict`, training's `setup`, `deformable-detr train --model`, and the loader.

    config = model_config_from_dict(json.load(f)["model"])     # ModelConfig or DetrConfig
    model = build_model(config)                                # DeformableDETR or DETR
    criterion = build_criterion(config, loss_config)           # SetCriterion or DetrCriterion

A saved config says its architecture: a `DetrConfig` dict carries `"architecture": "detr"`; a dict without
that key is a Deformable DETR `ModelConfig` (every file written before DETR existed has none).

The criteria live in `training/`, whose package imports `TrainConfig`, which reads model configs through
this module; so the criterion modules are imported inside the small builder functions of the entries, at
call time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deformable_detr.errors import ConfigError
from deformable_detr.interop.huggingface import transformers_to_ours
from deformable_detr.interop.official import official_to_ours
from deformable_detr.models.config import PRESETS, ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.models.detr import DETR
from deformable_detr.models.detr_config import DETR_PRESETS, DetrConfig
from deformable_detr.pipeline.contract import Detector

AnyModelConfig = ModelConfig | DetrConfig
DEFORMABLE_DETR = "deformable-detr"
DETR_NAME = "detr"


@dataclass(frozen=True)
class Architecture:
    """One architecture: how to read its config, build its model and loss, and convert others' weights.

    name: what a saved config's "architecture" says (Deformable DETR's configs say nothing: the default).
    config_class, model_class: its frozen config and its `Detector` nn.Module.
    presets: name -> config factory.
    default_loss: () -> the `LossConfig` (matcher costs, loss weights) its paper trains with.
    criterion: (config, loss) -> its criterion module.
    from_official, from_transformers: (checkpoint, config=, source=) -> (config, our state dict), or None
        where no such converter exists (DETR: neither; its HF comparison lives in the tests).
    """

    name: str
    config_class: type
    model_class: type
    presets: Mapping[str, Callable[[], Any]]
    default_loss: Callable[[], Any]
    criterion: Callable[[Any, Any], Any]
    from_official: Callable | None
    from_transformers: Callable | None


def _focal_loss_config():
    from deformable_detr.training.criterion import LossConfig

    return LossConfig()


def _set_criterion(config: ModelConfig, loss):
    """Deformable DETR's `SetCriterion`, making the denoising queries a model built with `denoising` takes."""
    from deformable_detr.training.criterion import SetCriterion

    return SetCriterion.from_config(config.num_classes, loss, denoising=config.denoising)


def _detr_loss_config():
    from deformable_detr.training.detr_criterion import detr_loss_config

    return detr_loss_config()


def _detr_criterion(config: DetrConfig, loss):
    """DETR's `DetrCriterion`: softmax classifier with a no-object class, no denoising."""
    from deformable_detr.training.detr_criterion import DetrCriterion

    return DetrCriterion.from_config(config.num_classes, loss)


ARCHITECTURES: dict[str, Architecture] = {
    DEFORMABLE_DETR: Architecture(
        DEFORMABLE_DETR,
        ModelConfig,
        DeformableDETR,
        PRESETS,
        _focal_loss_config,
        _set_criterion,
        official_to_ours,
        transformers_to_ours,
    ),
    DETR_NAME: Architecture(DETR_NAME, DetrConfig, DETR, DETR_PRESETS, _detr_loss_config, _detr_criterion, None, None),
}


def architecture_of(config_or_model: Any) -> Architecture:
    """The `Architecture` of a config (`ModelConfig`, `DetrConfig`) or of a model built from one."""
    config = getattr(config_or_model, "config", config_or_model)
    for architecture in ARCHITECTURES.values():
        if type(config) is architecture.config_class:
            return architecture
    raise ConfigError(
        f"{type(config).__name__} is no model config; expected one of "
        f"{', '.join(a.config_class.__name__ for a in ARCHITECTURES.values())}"
    )


def model_config_from_dict(values: Mapping[str, Any]) -> AnyModelConfig:
    """`DetrConfig` when `values["architecture"] == "detr"`, else `ModelConfig`; unknown fields raise ConfigError."""
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"model config: got {values!r} ({type(values).__name__}); takes an object of ModelConfig "
            "(or DetrConfig) fields"
        )
    if "architecture" not in values:
        return ModelConfig.from_dict(dict(values))
    name = values["architecture"]
    if name == DEFORMABLE_DETR or name not in ARCHITECTURES:  # ModelConfig has no "architecture" field
        raise ConfigError(
            f"model config: architecture={name!r} is unknown; expected {DETR_NAME!r} "
            "or no 'architecture' key (Deformable DETR)"
        )
    return ARCHITECTURES[name].config_class.from_dict(dict(values))


def model_preset(name: str, **overrides: Any) -> AnyModelConfig:
    """The model config preset `name` of any architecture ("tiny", "deformable-detr", "detr-r50", ...)."""
    for architecture in ARCHITECTURES.values():
        if name in architecture.presets:
            return architecture.config_class.preset(name, **overrides)
    known = [preset for architecture in ARCHITECTURES.values() for preset in architecture.presets]
    raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join(known)}")


def model_class(config: AnyModelConfig) -> type:
    """The detector class `config` describes: `DETR` for a `DetrConfig`, `DeformableDETR` for a `ModelConfig`."""
    return architecture_of(config).model_class


def build_model(config: AnyModelConfig | Mapping[str, Any], **kwargs: Any) -> Detector:
    """A fresh detector for `config` (a dict goes through `model_config_from_dict`); kwargs go to its class."""
    if isinstance(config, Mapping):
        config = model_config_from_dict(config)
    return model_class(config)(config, **kwargs)


def default_loss_config(config: AnyModelConfig):
    """The matcher costs and loss weights the paper of `config`'s architecture trains with (a `LossConfig`)."""
    return architecture_of(config).default_loss()


def with_model(train_config, model: AnyModelConfig):
    """`train_config` (a `TrainConfig`) training `model` instead; a model of the other family (DETR vs Deformable
    DETR) also brings that family's loss (`default_loss_config`): a softmax DETR is not trained with focal-loss
    weights. Used by `train --model` and `train --init`."""
    import dataclasses

    if architecture_of(model) != architecture_of(train_config.model):
        train_config = dataclasses.replace(train_config, loss=default_loss_config(model))
    return dataclasses.replace(train_config, model=model)


def build_criterion(config: AnyModelConfig, loss):
    """The loss that fits a model of `config` (its architecture's `criterion`: `DetrCriterion` or `SetCriterion`).

    Args:
        config: the model's config. loss: a `LossConfig` (matcher costs, loss weights).
    """
    return architecture_of(config).criterion(config, loss)
