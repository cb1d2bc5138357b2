"""Which detector a saved config describes: the one place that picks the model class.

A `DetrConfig` dict carries `"architecture": "detr"`; a dict without that key is a Deformable DETR
`ModelConfig` (every file written before DETR existed has none).

    config = model_config_from_dict(json.load(f)["model"])
    model = build_model(config)          # DeformableDETR or DETR
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from deformable_detr.errors import ConfigError
from deformable_detr.models.config import PRESETS, ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.models.detr import ARCHITECTURE as DETR_ARCHITECTURE
from deformable_detr.models.detr import DETR, DETR_PRESETS, DetrConfig

AnyModelConfig = ModelConfig | DetrConfig


def model_config_from_dict(values: dict[str, Any]) -> AnyModelConfig:
    """`DetrConfig` when `values["architecture"] == "detr"`, else `ModelConfig`; unknown fields raise."""
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"model config: got {values!r} ({type(values).__name__}); takes an object of ModelConfig "
            "(or DetrConfig) fields"
        )
    architecture = values.get("architecture")
    if architecture is None:
        return ModelConfig.from_dict(values)
    if architecture == DETR_ARCHITECTURE:
        return DetrConfig.from_dict(values)
    raise ConfigError(
        f"model config: architecture={architecture!r} is unknown; expected {DETR_ARCHITECTURE!r} "
        "or no 'architecture' key (Deformable DETR)"
    )


def model_preset(name: str, **overrides: Any) -> AnyModelConfig:
    """A Deformable DETR (`ModelConfig.preset`) or DETR (`DetrConfig.preset`) preset by name."""
    if name in DETR_PRESETS:
        return DetrConfig.preset(name, **overrides)
    if name in PRESETS:
        return ModelConfig.preset(name, **overrides)
    raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join([*PRESETS, *DETR_PRESETS])}")


def model_class(config: AnyModelConfig) -> type[DeformableDETR] | type[DETR]:
    """The detector class a config describes: `DETR` for a `DetrConfig`, else `DeformableDETR`."""
    return DETR if isinstance(config, DetrConfig) else DeformableDETR


def build_model(config: AnyModelConfig | dict[str, Any], **kwargs: Any) -> nn.Module:
    """`DeformableDETR(config, **kwargs)` or `DETR(config, **kwargs)`; a dict goes through `model_config_from_dict`."""
    if isinstance(config, dict):
        config = model_config_from_dict(config)
    return model_class(config)(config, **kwargs)
