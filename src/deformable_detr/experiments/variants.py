"""The models an experiment compares: named variants of one small recipe, plus `field=value` overrides.

A variant spec is `[LABEL=]BASE[:field=value]...`: BASE is a name in `VARIANTS`, each `field=value`
replaces a field of the model config, of the loss / optimizer config with a `loss.` / `optim.`
prefix, or of the training config with a `train.` prefix (e.g. `train.epochs=100`: this model's own budget); values are read as JSON where they parse (`true`, `0.5`, `[1, 2]`), else as strings.

    label, config = variant_train_config("refine-q100=deformable-refine:num_queries=100", base)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from ..models.config import ModelConfig
from ..models.detr_config import DetrConfig
from ..registry import default_loss_config
from ..training.config import TrainConfig


def _deformable(**fields: Any) -> Callable[[], ModelConfig]:
    # `tiny` (1-block ResNet-18 widths 32-256, d 64, 2+2 layers, 50 queries) without dropout, as trained from scratch.
    base = dict(with_box_refine=False, two_stage=False, dropout=0.0)
    return lambda: ModelConfig.preset("tiny", **{**base, **fields})


def _detr(**fields: Any) -> Callable[[], DetrConfig]:
    return lambda: DetrConfig.preset("detr-tiny", dropout=0.0, **fields)


# name -> the model; all share the backbone, d_model, depth and query count of `tiny` / `detr-tiny`.
VARIANTS: dict[str, Callable[[], ModelConfig | DetrConfig]] = {
    "detr": _detr(),
    "detr-dc5": _detr(dilation=True),
    "deformable-single-scale": _deformable(num_feature_levels=1),
    "deformable-single-scale-dc5": _deformable(num_feature_levels=1, dilation=True),
    "deformable": _deformable(),
    "deformable-refine": _deformable(with_box_refine=True),
    "deformable-two-stage": _deformable(with_box_refine=True, two_stage=True),
}
# A variant's `train.` overrides may not change what makes the runs comparable.
_SHARED_FIELDS = ("data_dir", "output_dir", "seed", "model", "loss", "optim", "backbone_weights", "threads")
DETR_LR_SCALE = 0.5  # DETR's lr (1e-4, backbone 1e-5) is half of Deformable DETR's (2e-4, 2e-5)


def _parse_value(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return tuple(value) if isinstance(value, list) else value


def variant_train_config(spec: str, base: TrainConfig) -> tuple[str, TrainConfig]:
    """(label, `base` with the variant's model, its loss family and its lr) for one variant spec.

    A DETR variant gets DETR's loss (`registry.default_loss_config`) and `DETR_LR_SCALE` times `base`'s learning rates;
    a Deformable DETR variant keeps `base`'s. `num_classes` is set by training from the data.
    """
    head, *assignments = spec.split(":")
    label, _, name = head.rpartition("=")
    label = label or spec.replace(":", "+")
    if "/" in label or label in ("", ".", ".."):
        raise ConfigError(
            f"model variant {spec!r}: label {label!r} cannot name a folder; write LABEL=BASE with a plain LABEL"
        )
    if name not in VARIANTS:
        raise ConfigError(f"model variant {name!r} (in {spec!r}) is unknown; choose one of {', '.join(VARIANTS)}")
    model = VARIANTS[name]()
    is_detr = isinstance(model, DetrConfig)
    loss = default_loss_config(model)
    scale = DETR_LR_SCALE if is_detr else 1.0
    optim = dataclasses.replace(base.optim, lr=base.optim.lr * scale, lr_backbone=base.optim.lr_backbone * scale)
    overrides: dict[str, dict[str, Any]] = {"model": {}, "loss": {}, "optim": {}, "train": {}}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        part, _, field = key.rpartition(".")
        if not sep or part not in ("", "loss", "optim", "train") or (part == "train" and field in _SHARED_FIELDS):
            raise ConfigError(
                f"model variant {spec!r}: {assignment!r} is not FIELD=VALUE, loss.FIELD=VALUE, optim.FIELD=VALUE or "
                f"train.FIELD=VALUE (train.{', train.'.join(_SHARED_FIELDS)} are the experiment's, not a model's)"
            )
        overrides[part or "model"][field] = _parse_value(text)
    try:
        model = dataclasses.replace(model, **overrides["model"])
        loss = dataclasses.replace(loss, **overrides["loss"])
        optim = dataclasses.replace(optim, **overrides["optim"])
        return label, dataclasses.replace(base, model=model, loss=loss, optim=optim, **overrides["train"])
    except TypeError as error:  # an unknown field name
        raise ConfigError(
            f"model variant {spec!r}: {error}; see the fields of ModelConfig/DetrConfig, LossConfig, OptimConfig, "
            "TrainConfig"
        ) from None
