"""Starting a training run from another model's weights (`train --init CKPT`), not resuming it.

`--resume OUT` continues a run exactly (optimizer, step, schedule, RNG). `--init CKPT` starts a *new*
run whose weights come from CKPT: the architecture is CKPT's, the class count is the dataset's.

    model = DeformableDETR(dataclasses.replace(source_config, num_classes=len(categories)))
    summary = transfer_weights(model, source_state_dict, source_categories, categories)

Class heads (`class_heads.*`, (K, C) weight and (K,) bias) keep the fresh model's initialisation
(zero-mean weights, focal prior bias -log(99)) except for the rows of categories whose names match
one of the source's (case-insensitive), which are copied. The denoising label embedding of models
trained with denoising (`label_embed.weight`, (K + 1, C): a row per class, then the padding row)
is remapped the same way, and its padding row is always copied. In two-stage models with box refinement
the last class head scores encoder proposals class-agnostically (row 0 is objectness, see
`criterion.py`), so its row 0 is always copied. Every other tensor must match the model in name and
shape and is copied (strict: one error lists every missing, unexpected and mis-shaped key).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..checkpoint.state_dict import load_state_dict_strict
from ..errors import ConfigError
from ..models.categories import category_mapping
from ..models.config import ModelConfig

CLASS_HEAD_PREFIX = "class_heads."
LABEL_EMBED = "label_embed.weight"  # denoising's (K + 1, C) label embedding: rows per class, then padding
InitSource = tuple[ModelConfig, dict[str, torch.Tensor], list[dict]]  # what `read_init_source` returns


@dataclass(frozen=True)
class InitSummary:
    """What `transfer_weights` did: tensor counts and the category mapping (target name -> source name or None)."""

    source: str
    reused: int
    reinitialised: int
    skipped: tuple[str, ...]
    mapping: dict[str, str | None] = field(default_factory=dict)
    rows_copied: int = 0  # categories whose class-head rows were copied

    def format(self) -> str:
        """One line: counts, then the category mapping."""
        matched = [f"{t}<-{s}" for t, s in self.mapping.items() if s is not None]
        new = [t for t, s in self.mapping.items() if s is None]
        parts = [
            f"init from {self.source}: {self.reused} tensors reused, {self.reinitialised} re-initialised (per-class rows)",
            f"{len(self.skipped)} skipped",
        ]
        parts.append(
            f"categories: {len(matched)} matched by name ({', '.join(matched[:8])}{'...' if len(matched) > 8 else ''})"
            if matched
            else "categories: none matched by name"
        )
        if new:
            parts.append(f"{len(new)} new ({', '.join(new[:8])}{'...' if len(new) > 8 else ''})")
        return "; ".join(parts)


def transfer_weights(
    model: nn.Module,
    source_state: Mapping[str, torch.Tensor],
    source_categories: list[dict],
    target_categories: list[dict],
    source: str = "checkpoint",
) -> InitSummary:
    """Load `source_state` into `model` (built with the target class count), remapping the class heads.

    Args:
        model: a freshly initialised `DeformableDETR` of the source's architecture with
            `num_classes = len(target_categories)`.
        source_state: the source model's state dict.
        source_categories / target_categories: [{"id", "name"}] in label order (label k = entry k).
        source: how messages name the source.

    Returns:
        An `InitSummary`.

    Raises:
        CheckpointMismatchError: a non-class-head tensor is missing, unexpected or mis-shaped.
    """
    target_state = model.state_dict()
    mapping = category_mapping(source_categories, target_categories)
    config = getattr(model, "config", None)
    encoder_head = None
    if config is not None and config.two_stage and config.with_box_refine:
        encoder_head = f"{CLASS_HEAD_PREFIX}{config.num_prediction_heads - 1}."
    merged, reinitialised = {}, 0
    same_classes = len(source_categories) == len(target_categories) and all(
        mapping.get(i) == i for i in range(len(target_categories))
    )
    for key, value in source_state.items():
        if (
            not (key.startswith(CLASS_HEAD_PREFIX) or key == LABEL_EMBED)
            or key not in target_state
            or same_classes
            or value.shape[1:] != target_state[key].shape[1:]
        ):  # mis-shaped: the strict load reports it
            merged[key] = value
            continue
        fresh = target_state[key].detach().clone()
        for target_label, source_label in mapping.items():
            if source_label < value.shape[0]:
                fresh[target_label] = value[source_label]
        if encoder_head is not None and key.startswith(encoder_head) and value.shape[0] and fresh.shape[0]:
            fresh[0] = value[0]  # objectness of the class-agnostic proposal head
        if key == LABEL_EMBED:
            fresh[-1] = value[-1]  # the padding row
        merged[key] = fresh
        reinitialised += 1
    skipped = tuple(key for key in source_state if key not in target_state and key.endswith("num_batches_tracked"))
    for key in skipped:
        merged.pop(key)
    load_state_dict_strict(model, merged, source)
    names = {label: str(c.get("name", label)) for label, c in enumerate(source_categories)}
    return InitSummary(
        source=source,
        reused=len(merged) - reinitialised,
        reinitialised=reinitialised,
        skipped=skipped,
        mapping={
            str(c.get("name", t)): (names[mapping[t]] if t in mapping else None)
            for t, c in enumerate(target_categories)
        },
        rows_copied=len(mapping),
    )


def read_init_source(path: str | os.PathLike) -> InitSource:
    """(architecture, state dict, categories) of a weights file to start from.

    Reads anything `deformable_detr.load` does: training checkpoints (`checkpoint.pth`, `best.pth`) or run
    folders, save_pretrained folders, official .pth files (COCO names for 91 classes), Hugging Face folders.
    """
    from ..inference.load import load

    model = load(path)
    return model.config, model.state_dict(), list(model.categories)


def frozen_backbone_parts(model_config: ModelConfig, freeze: str | None) -> list[str]:
    """What stays fixed in the backbone during training (empty when everything trains)."""
    parts = []
    if model_config.backbone_frozen_bn:
        parts.append("BatchNorm statistics (frozen BN)")
    if not model_config.train_backbone or freeze in ("backbone", "encoder"):
        parts.append("every backbone layer")
    elif model_config.freeze_stem_and_layer1:
        parts.append("stem and layer1")
    return parts


def prepare_model(model: nn.Module, config, categories: list[dict], source: InitSource | None = None) -> list[str]:
    """Apply a new run's starting point to a freshly built model: --init, --backbone-weights, --freeze.

    Args:
        model: `DeformableDETR(config.model)` with the dataset's class count.
        config: the `TrainConfig` (reads init, backbone_weights, random_backbone, freeze).
        categories: the training categories in label order.
        source: `read_init_source(config.init)` when the caller has read it already (read here otherwise).

    Returns:
        Lines to print (what was loaded, frozen, mapped).

    Raises:
        ConfigError: a frozen backbone would start from random weights without `random_backbone`.
    """
    lines = []
    if config.init:
        _, state, source_categories = source if source is not None else read_init_source(config.init)
        lines.append(transfer_weights(model, state, source_categories, categories, source=str(config.init)).format())
    if config.backbone_weights:
        from ..models.backbone_weights import load_backbone_weights

        layout = load_backbone_weights(model.backbone.body, config.backbone_weights)
        lines.append(f"backbone weights from {config.backbone_weights} ({layout} layout)")
    frozen = frozen_backbone_parts(config.model, config.freeze)
    if frozen and not config.init and not config.backbone_weights and not config.random_backbone:
        raise ConfigError(
            f"the model keeps {' and '.join(frozen)} of its backbone fixed, which would stay random: pass "
            "--backbone-weights FILE (an ImageNet ResNet), --init CKPT, or --random-backbone to train so on purpose"
        )
    if config.freeze:
        frozen_modules = [model.backbone] + (
            [model.input_proj, model.transformer.encoder] if config.freeze == "encoder" else []
        )
        for module in frozen_modules:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        lines.append(
            f"frozen: {config.freeze} ({sum(p.numel() for m in frozen_modules for p in m.parameters())} parameters)"
        )
    return lines


def init_model_config(config, num_classes: int, source: InitSource | None = None):
    """`config` with the architecture of `config.init` (and `num_classes`), for a run started with --init.

    A checkpoint of the other family (DETR vs Deformable DETR) also brings that family's loss, as `--model` does
    (`registry.with_model`). `source` is `read_init_source(config.init)` when the caller has read it already (read
    here otherwise).
    """
    import dataclasses

    from ..registry import with_model

    source_config, _, _ = source if source is not None else read_init_source(config.init)
    return with_model(config, dataclasses.replace(source_config, num_classes=num_classes))
