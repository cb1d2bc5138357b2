"""`DetrConfig`: the architecture of a DETR detector (models/detr.py), and its named presets.

config = DetrConfig.preset("detr-r50")           # or detr-r50-dc5, detr-r101, detr-tiny, detr-demo
DetrConfig.from_dict(config.to_dict()) == config # saved with "architecture": "detr"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deformable_detr.errors import ConfigError
from deformable_detr.models.backbone import RESNETS, check_resnet_fields
from deformable_detr.models.config import config_from_dict, config_to_dict
from deformable_detr.util.config_fields import check_fields

ARCHITECTURE = "detr"


@dataclass(frozen=True)
class DetrConfig:
    """Architecture of a DETR detector. Defaults are DETR R50 (COCO: 42.0 AP after 500 epochs, 41M params).

    architecture: always "detr"; saved with the config so a checkpoint says which model class to build
        (a `ModelConfig` has no such field and means Deformable DETR).
    Backbone (as `ModelConfig`): backbone, backbone_depths, backbone_base_width, backbone_frozen_bn,
        train_backbone, freeze_stem_and_layer1, dilation (DC5: C5 at stride 16).
    Transformer: d_model, n_heads, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout
        (DETR: 256, 8, 6, 6, 2048, 0.1), post-norm layers with global attention.
    Detection: num_queries learned queries (DETR: 100); num_classes K object classes (the classifier
        has K + 1 outputs, the last is "no object").
    """

    architecture: str = ARCHITECTURE
    backbone: str = "resnet50"
    backbone_depths: tuple[int, int, int, int] | None = None
    backbone_base_width: int = 64
    backbone_frozen_bn: bool = True
    train_backbone: bool = True
    freeze_stem_and_layer1: bool = True
    dilation: bool = False
    d_model: int = 256
    n_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    num_queries: int = 100
    num_classes: int = 91

    def __post_init__(self) -> None:
        check_fields(self)
        if self.architecture != ARCHITECTURE:
            raise ConfigError(f"DetrConfig.architecture={self.architecture!r} must be {ARCHITECTURE!r}")
        check_resnet_fields(self)
        for name in (
            "d_model",
            "n_heads",
            "num_encoder_layers",
            "num_decoder_layers",
            "dim_feedforward",
            "num_queries",
            "num_classes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.d_model % 2 or self.d_model % self.n_heads:
            raise ConfigError(f"d_model={self.d_model} must be even and divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout} must be in [0, 1)")

    @property
    def resnet_depths(self) -> tuple[int, int, int, int]:
        """Blocks per stage actually built: `backbone_depths`, or the named ResNet's."""
        return self.backbone_depths or RESNETS[self.backbone][1]

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DetrConfig:
        """The named preset (see `DETR_PRESETS`), with any fields replaced by `overrides`."""
        if name not in DETR_PRESETS:
            raise ConfigError(f"unknown DETR preset {name!r}; choose one of {', '.join(DETR_PRESETS)}")
        return dataclasses.replace(DETR_PRESETS[name](), **overrides)

    def describe(self) -> str:
        """The variant in words, e.g. "DETR, resnet50 DC5, single-scale global attention"."""
        return f"DETR, {self.backbone}{' DC5' if self.dilation else ''}, single-scale global attention"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field (with `"architecture": "detr"`)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DetrConfig:
        """Inverse of `to_dict`; missing fields take their defaults, unknown ones raise ConfigError."""
        return config_from_dict(cls, values)


def detr_r50() -> DetrConfig:
    """DETR R50: 42.0 AP on COCO val2017 (500 epochs), 41M params."""
    return DetrConfig()


def detr_r50_dc5() -> DetrConfig:
    """DETR-DC5 R50 (C5 at stride 16): 43.3 AP on COCO val2017 (500 epochs), 35.3 AP after 50 epochs; 41M params."""
    return DetrConfig(dilation=True)


def detr_r101() -> DetrConfig:
    """DETR R101: 43.5 AP on COCO val2017 (500 epochs), 60M params."""
    return DetrConfig(backbone="resnet101")


def detr_tiny() -> DetrConfig:
    """The width, depth and backbone of Deformable DETR's `tiny` preset: 1-block ResNet-18 of widths 32-256
    (trainable BatchNorm), d_model 64, 4 heads, 2+2 layers, 50 queries. The FFN is twice as wide (512), as
    DETR's 2048 is twice Deformable DETR's 1024; the parameter count is then within 10 % of `tiny`'s."""
    return DetrConfig(
        backbone="resnet18",
        backbone_depths=(1, 1, 1, 1),
        backbone_base_width=32,
        backbone_frozen_bn=False,
        freeze_stem_and_layer1=False,
        d_model=64,
        n_heads=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=512,
        num_queries=50,
    )


def detr_demo() -> DetrConfig:
    """`detr-tiny` sized like Deformable DETR's `demo` preset: 30 queries, no dropout, 6 classes (synthetic shapes)."""
    return dataclasses.replace(detr_tiny(), num_queries=30, dropout=0.0, num_classes=6)


DETR_PRESETS: dict[str, Callable[[], DetrConfig]] = {
    "detr-r50": detr_r50,
    "detr-r50-dc5": detr_r50_dc5,
    "detr-r101": detr_r101,
    "detr-tiny": detr_tiny,
    "detr-demo": detr_demo,
}
