"""Convert checkpoints of the official implementation (fundamentalvision/Deformable-DETR): file <-> (ModelConfig, state_dict).

A pure converter: it reads and renames tensors and never builds a model
(`DeformableDETR.from_state_dict(*official_to_ours(path))` does, and `deformable_detr.load(path)` wraps both).
An official file is `torch.save({"model": state_dict, "optimizer": ..., "args": argparse.Namespace, ...})`,
read with `checkpoint.safe_load.load_torch_file` (tensors, plain containers and `argparse.Namespace` only: a
crafted file cannot run code). The layout and the rename rules are in docs/interop.md; in short
(official -> ours):

    backbone.0.body.X                              -> backbone.body.X
    transformer.encoder.layers.i.norm1 / norm2     -> .norm_attn / .norm_ffn
    transformer.decoder.layers.i.norm1/norm2/norm3 -> .norm_cross_attn / .norm_self_attn / .norm_ffn
    class_embed.j / bbox_embed.j                   -> class_heads.j / box_heads.j (de-aliased, see below)

Heads are saved aliased: a plain model stores one Linear under 6 names, box refinement stores
`transformer.decoder.bbox_embed.j` beside `bbox_embed.j` (same storage), two-stage also
`transformer.decoder.class_embed.j`. We keep one copy per distinct head and check that the dropped
copies hold the same values (a file whose "aliases" differ was edited, and loading it would silently
pick one). `ours_to_official` writes the aliases back.

The head count, DC5 and the two-stage query count are stored in no tensor: they come from the file's
`args` or from an explicit `config=`; a bare state dict without either is refused rather than guessed
(`official_config.py` reads the architecture; this module renames the tensors).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from deformable_detr.checkpoint.format import strip_ddp_prefix
from deformable_detr.checkpoint.safe_load import load_torch_file
from deformable_detr.errors import CheckpointError
from deformable_detr.interop.official_config import (
    check_position_embedding,
    config_from_official,
    drop_ignored,
    head_indices,
    head_tensors,
    same_tensors,
)
from deformable_detr.models.config import ModelConfig


def read_official_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an official `.pth` file without unpickling anything but tensors and `argparse.Namespace`.

    Args:
        path: a file written by the official `main.py` (dict with "model" and "args") or a plain state dict.

    Returns:
        (state_dict, args): the model's tensors under official key names, and `vars(args)` ({} if absent).

    Raises:
        CheckpointError: unreadable, or holds other pickled objects (refused, never executed), or no tensors.
    """
    path = os.fspath(path)
    return split_official_checkpoint(load_torch_file(path), source=path)


def split_official_checkpoint(obj: Any, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Separate an already-loaded official checkpoint into (state_dict, args dict).

    Args:
        obj: {"model": state_dict, "args": Namespace | dict, ...} or a state dict (name -> tensor).
        source: name used in error messages.

    Returns:
        (state_dict, args) as in `read_official_checkpoint`.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a dict with 'model' or a state dict, got {type(obj).__name__}")
    args: Any = {}
    if "model" in obj and isinstance(obj["model"], Mapping):
        args = obj.get("args") or {}
        obj = obj["model"]
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if not isinstance(args, Mapping):
        raise CheckpointError(f"{source}: 'args' is a {type(args).__name__}; expected argparse.Namespace or dict")
    state_dict = strip_ddp_prefix({key: value for key, value in obj.items() if isinstance(value, torch.Tensor)})
    if not state_dict:
        raise CheckpointError(f"{source}: no tensors found; expected a dict with 'model' or a state dict")
    return state_dict, dict(args)


def official_state_dict_to_ours(
    state_dict: Mapping[str, torch.Tensor],
    num_decoder_layers: int,
    with_box_refine: bool,
    two_stage: bool,
    source: str = "checkpoint",
) -> dict[str, torch.Tensor]:
    """Rename official keys to ours and keep one copy of each distinct prediction head.

    Args:
        state_dict: official key names.
        num_decoder_layers: decoder depth (number of per-layer heads without two-stage).
        with_box_refine: per-layer heads (kept j = 0..n-1, or 0..n with two-stage); else one shared head (j=0).
        two_stage: the file also has `transformer.decoder.class_embed.*` and an encoder-proposal head j = n.
        source: name used in error messages.

    Returns:
        State dict in our layout (docs/interop.md), ready for a strict load.

    Raises:
        CheckpointError: aliased copies of a head hold different values, or a needed head is absent.
    """
    state_dict = drop_ignored(state_dict)
    check_position_embedding(state_dict, {}, source)
    head_prefixes = (
        "class_embed.",
        "bbox_embed.",
        "transformer.decoder.class_embed.",
        "transformer.decoder.bbox_embed.",
    )
    ours = {_rename(key): value for key, value in state_dict.items() if not key.startswith(head_prefixes)}
    num_heads = num_decoder_layers + 1 if two_stage else num_decoder_layers
    for kind, ours_kind in (("class_embed", "class_heads"), ("bbox_embed", "box_heads")):
        heads = _distinct_heads(state_dict, kind, num_heads, with_box_refine, source)
        for j, tensors in heads.items():
            ours.update({f"{ours_kind}.{j}.{name}": value for name, value in tensors.items()})
    return ours


def _distinct_heads(
    state_dict: Mapping[str, torch.Tensor], kind: str, num_heads: int, with_box_refine: bool, source: str
) -> dict[int, dict[str, torch.Tensor]]:
    """One copy of each distinct `kind` head ("class_embed" / "bbox_embed"), after checking its aliases agree.

    Copies of head j live at `{kind}.j` and `transformer.decoder.{kind}.j`. With one shared head every copy of
    every j must equal head 0 and only j = 0 is kept; with per-layer heads the copies of each j must agree.
    """
    copies: dict[int, list[tuple[str, dict[str, torch.Tensor]]]] = {}
    for prefix in (f"{kind}.", f"transformer.decoder.{kind}."):
        for j in head_indices(state_dict, prefix):
            copies.setdefault(j, []).append((f"{prefix}{j}", head_tensors(state_dict, f"{prefix}{j}.")))
    extra = sorted(j for j in copies if j >= num_heads)
    if extra:
        raise CheckpointError(
            f"{source}: {kind} has heads {extra} beyond the {num_heads} this variant uses; "
            "check decoder depth / two_stage in the config"
        )
    kept = range(num_heads) if with_box_refine else range(1)
    for j in kept:
        if j not in copies:
            raise CheckpointError(f"{source}: '{kind}.{j}.*' is missing; the config expects {len(kept)} {kind} heads")
    groups = [copies[j] for j in kept] if with_box_refine else [[c for j in sorted(copies) for c in copies[j]]]
    for group in groups:
        first_name, first = group[0]
        for name, tensors in group[1:]:
            if not same_tensors(first, tensors):
                raise CheckpointError(
                    f"{source}: '{name}' differs from '{first_name}' but they should be the same head "
                    f"({'decoder alias' if with_box_refine else 'shared head'}); "
                    "the file was edited or the variant is wrong (with_box_refine?)"
                )
    return {j: copies[j][0][1] for j in kept}


_ENCODER_NORMS = {"norm1": "norm_attn", "norm2": "norm_ffn"}
_DECODER_NORMS = {"norm1": "norm_cross_attn", "norm2": "norm_self_attn", "norm3": "norm_ffn"}


def _rename(key: str) -> str:
    """Official name -> our name for everything but the prediction heads."""
    if key.startswith("backbone.0.body."):
        return "backbone.body." + key[len("backbone.0.body.") :]
    match = re.match(r"transformer\.(encoder|decoder)\.layers\.(\d+)\.(norm\d)\.(.*)", key)
    if match:
        part, index, norm, rest = match.groups()
        table = _ENCODER_NORMS if part == "encoder" else _DECODER_NORMS
        return f"transformer.{part}.layers.{index}.{table[norm]}.{rest}"
    return key


def official_to_ours(
    checkpoint: str | os.PathLike | Mapping[str, Any], config: ModelConfig | None = None, source: str | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Convert an official checkpoint to (ModelConfig, state dict in our layout).

    Args:
        checkpoint: path of an official `.pth` (dict with "model" and "args"), such a dict already loaded,
            or a bare official state dict (then `config` is required).
        config: the architecture, instead of reading it from keys, shapes and args (needed for a bare state
            dict, or to override the file's args).
        source: name used in error messages (default: the path, or "official state dict").

    Returns:
        (config, state_dict); `DeformableDETR.from_state_dict(config, state_dict)` builds the model.

    Raises:
        CheckpointError: unreadable or refused file, a value no tensor stores and no config given,
            unsupported content (learned position embedding, differing head aliases).
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        source = source or os.fspath(checkpoint)
        state_dict, args = read_official_checkpoint(checkpoint)
    else:
        source = source or "official state dict"
        state_dict, args = split_official_checkpoint(checkpoint, source)
    check_position_embedding(state_dict, args, source)
    if config is None:
        config = config_from_official(state_dict, args, source)
    ours = official_state_dict_to_ours(
        state_dict, config.num_decoder_layers, config.with_box_refine, config.two_stage, source
    )
    return config, ours


_OUR_ENCODER_NORMS = {ours: official for official, ours in _ENCODER_NORMS.items()}
_OUR_DECODER_NORMS = {ours: official for official, ours in _DECODER_NORMS.items()}


def ours_to_official(
    config: ModelConfig, state_dict: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Convert our (ModelConfig, state dict) to the official layout, aliases included, and its `args`.

    Args:
        config: the architecture.
        state_dict: our key layout (`DeformableDETR.state_dict()`).

    Returns:
        (official state dict, args dict): save as the official `main.py` does with
        `torch.save({"model": state_dict, "args": argparse.Namespace(**args)}, path)`. Head aliases are
        written as the official model holds them: every decoder layer (and, in two-stage, the encoder
        proposals) names the shared head, or its own head under box refinement, and
        `transformer.decoder.{bbox,class}_embed.j` repeat `bbox_embed.j` (box refine) and `class_embed.j`
        (two-stage).
    """
    official: dict[str, torch.Tensor] = {}
    heads: dict[str, dict[int, dict[str, torch.Tensor]]] = {"class_embed": {}, "bbox_embed": {}}
    for key, value in state_dict.items():
        match = re.match(r"(class_heads|box_heads)\.(\d+)\.(.+)", key)
        if match:
            kind = "class_embed" if match.group(1) == "class_heads" else "bbox_embed"
            heads[kind].setdefault(int(match.group(2)), {})[match.group(3)] = value
            continue
        if key.startswith("backbone.body."):
            official["backbone.0.body." + key[len("backbone.body.") :]] = value
            continue
        match = re.match(r"transformer\.(encoder|decoder)\.layers\.(\d+)\.(norm_[a-z_]+)\.(.*)", key)
        if match:
            part, index, norm, rest = match.groups()
            table = _OUR_ENCODER_NORMS if part == "encoder" else _OUR_DECODER_NORMS
            official[f"transformer.{part}.layers.{index}.{table[norm]}.{rest}"] = value
            continue
        official[key] = value
    num_predictions = config.num_decoder_layers + int(config.two_stage)
    for kind, by_index in heads.items():
        for j in range(num_predictions):
            tensors = by_index[j if config.with_box_refine else 0]
            prefixes = [f"{kind}.{j}."]
            if (kind == "bbox_embed" and config.with_box_refine) or (kind == "class_embed" and config.two_stage):
                prefixes.append(f"transformer.decoder.{kind}.{j}.")
            for prefix in prefixes:
                official.update({prefix + name: value for name, value in tensors.items()})
    args = dict(
        hidden_dim=config.d_model,
        nheads=config.n_heads,
        enc_layers=config.num_encoder_layers,
        dec_layers=config.num_decoder_layers,
        dim_feedforward=config.dim_feedforward,
        dropout=config.dropout,
        num_queries=config.num_queries,
        num_feature_levels=config.num_feature_levels,
        enc_n_points=config.enc_n_points,
        dec_n_points=config.dec_n_points,
        with_box_refine=config.with_box_refine,
        two_stage=config.two_stage,
        dilation=config.dilation,
        backbone=config.backbone,
        position_embedding="sine",
        masks=False,
    )
    return official, args
