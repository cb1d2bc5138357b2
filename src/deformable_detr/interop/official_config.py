"""What architecture an official Deformable-DETR checkpoint describes: its `ModelConfig` from the key names,
tensor shapes and the file's `args` (docs/interop.md), and the checks on the tensors that say it.

    config = config_from_official(state_dict, vars(args), source="r50_deformable_detr-checkpoint.pth")

`official.py` renames the tensors; `huggingface.py` reuses the backbone and config helpers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from deformable_detr.errors import CheckpointError, ConfigError
from deformable_detr.models.backbone import RESNETS
from deformable_detr.models.config import ModelConfig

_IGNORED_SUFFIXES = ("total_ops", "total_params", "num_batches_tracked")  # profiler leftovers, BN counters
_RESNET_NAMES = {spec: name for name, spec in RESNETS.items()}  # (block type, blocks per stage) -> name


def drop_ignored(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove profiler leftovers, BN step counters and an ImageNet classifier (`fc.*`)."""
    kept = {}
    for key, value in state_dict.items():
        if key.endswith(_IGNORED_SUFFIXES) or re.match(r"backbone\.0\.body\.fc\.", key):
            continue
        kept[key] = value
    return kept


def check_position_embedding(state_dict: Mapping[str, torch.Tensor], args: Mapping[str, Any], source: str) -> None:
    if "backbone.1.row_embed.weight" in state_dict or args.get("position_embedding") == "learned":
        raise CheckpointError(
            f"{source}: learned position embedding (--position_embedding learned) is not supported; "
            "only the sine embedding of the released configs is"
        )


def layer_count(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    """1 + the largest index i of keys `{prefix}{i}.*` (0 when there are none): layers or blocks in a ModuleList."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(match.group(1)) for key in state_dict if (match := pattern.match(key))}
    return 1 + max(indices) if indices else 0


def head_indices(state_dict: Mapping[str, torch.Tensor], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(match.group(1)) for key in state_dict if (match := pattern.match(key))})


def head_tensors(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Tensors under `prefix` ("class_embed.3."), keyed by the rest of the name ("weight")."""
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}


def same_tensors(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[name].shape == b[name].shape and torch.equal(a[name], b[name]) for name in a)


def _heads_differ(state_dict: Mapping[str, torch.Tensor], kind: str) -> bool:
    indices = head_indices(state_dict, f"{kind}.")
    first = head_tensors(state_dict, f"{kind}.{indices[0]}.") if indices else {}
    return any(not same_tensors(first, head_tensors(state_dict, f"{kind}.{j}.")) for j in indices[1:])


def backbone_from_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """Read the ResNet's block type, blocks per stage and base width from torchvision-named keys.

    Args:
        state_dict: tensors with torchvision ResNet names under `prefix` (e.g. "backbone.0.body.").
        prefix: where the ResNet's keys start.

    Returns:
        {"backbone": name, "backbone_depths": (n1, n2, n3, n4) or None, "backbone_base_width": int}
        where name is "resnet18/34/50/101"; depths and width are only non-default for non-standard nets.
    """
    if f"{prefix}conv1.weight" not in state_dict:
        raise CheckpointError(f"no ResNet found: '{prefix}conv1.weight' is missing from the checkpoint")
    depths = tuple(layer_count(state_dict, f"{prefix}layer{stage}.") for stage in range(1, 5))
    block = "bottleneck" if f"{prefix}layer1.0.conv3.weight" in state_dict else "basic"
    base_width = int(state_dict[f"{prefix}conv1.weight"].shape[0])
    name = _RESNET_NAMES.get((block, depths))
    if name is not None and base_width == 64:
        return {"backbone": name, "backbone_depths": None, "backbone_base_width": 64}
    reference = "resnet50" if block == "bottleneck" else "resnet18"
    return {"backbone": reference, "backbone_depths": depths, "backbone_base_width": base_width}


def config_from_official(
    state_dict: Mapping[str, torch.Tensor], args: Mapping[str, Any], source: str = "checkpoint"
) -> ModelConfig:
    """The `ModelConfig` of an official checkpoint, from its keys, shapes and `args` (docs/interop.md).

    Args:
        state_dict: official key names (after `read_official_checkpoint`).
        args: `vars(args)` of the checkpoint. It must supply what no tensor stores: `nheads`, `dilation`
            (DC5) and, for two-stage, `num_queries`; `dropout` is read when present.
        source: name used in error messages.

    Returns:
        ModelConfig describing the checkpoint.

    Raises:
        CheckpointError: not a Deformable DETR state dict, or `args` lacks a value no tensor stores
            (the message asks for an explicit `config=` instead of guessing).
    """
    args = dict(args or {})
    state_dict = drop_ignored(state_dict)
    check_position_embedding(state_dict, args, source)
    if "transformer.level_embed" not in state_dict:
        raise CheckpointError(
            f"{source}: 'transformer.level_embed' (HF: 'model.level_embed') is missing: "
            "not a Deformable DETR state dict"
        )
    two_stage = "transformer.enc_output.weight" in state_dict
    needed = ["nheads", "dilation"] + (["num_queries"] if two_stage else [])
    absent = [name for name in needed if name not in args]
    if absent:
        raise CheckpointError(
            f"{source}: the file has no args.{', args.'.join(absent)}, and no tensor stores "
            f"{'them' if len(absent) > 1 else 'it'} (head count, DC5{', two-stage query count' if two_stage else ''}); "
            "pass config=ModelConfig(...) describing the model instead of letting the loader guess"
        )
    num_levels, d_model = state_dict["transformer.level_embed"].shape
    n_heads = int(args["nheads"])
    enc = "transformer.encoder.layers.0."
    dec = "transformer.decoder.layers.0."
    enc_rows = state_dict[f"{enc}self_attn.attention_weights.weight"].shape[0]  # M * L * P
    dec_rows = state_dict[f"{dec}cross_attn.attention_weights.weight"].shape[0]
    for rows, what in ((enc_rows, "encoder"), (dec_rows, "decoder")):
        if rows % (n_heads * num_levels):
            raise CheckpointError(
                f"{source}: {what} attention_weights has {rows} rows, not a multiple of heads*levels="
                f"{n_heads}*{num_levels}; args.nheads is wrong: pass config=ModelConfig(...) with the right n_heads"
            )
    ffn = state_dict[f"{enc}linear1.weight"].shape[0]
    with_box_refine = "transformer.decoder.bbox_embed.0.layers.0.weight" in state_dict or _heads_differ(
        state_dict, "bbox_embed"
    )
    if "query_embed.weight" in state_dict:
        num_queries = state_dict["query_embed.weight"].shape[0]
    else:
        num_queries = int(args["num_queries"])
    fields = dict(
        backbone_from_state_dict(state_dict, "backbone.0.body."),
        d_model=int(d_model),
        n_heads=n_heads,
        num_encoder_layers=layer_count(state_dict, "transformer.encoder.layers."),
        num_decoder_layers=layer_count(state_dict, "transformer.decoder.layers."),
        dim_feedforward=int(ffn),
        enc_n_points=int(enc_rows // (n_heads * num_levels)),
        dec_n_points=int(dec_rows // (n_heads * num_levels)),
        num_feature_levels=int(num_levels),
        num_queries=int(num_queries),
        num_classes=int(state_dict["class_embed.0.weight"].shape[0]),
        with_box_refine=bool(with_box_refine),
        two_stage=bool(two_stage),
        dilation=bool(args["dilation"]),
    )
    if "dropout" in args:
        fields["dropout"] = float(args["dropout"])
    return make_model_config(fields, source)


def make_model_config(fields: Mapping[str, Any], source: str = "checkpoint") -> ModelConfig:
    """`ModelConfig(**fields)`, with a message that names the checkpoint when the config rejects a value."""
    try:
        return ModelConfig(**fields)
    except (ValueError, ConfigError) as error:
        raise CheckpointError(f"{source}: cannot express this checkpoint as a ModelConfig: {error}") from None
