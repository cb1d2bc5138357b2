"""What a checkpoint path holds, recognised from its content (never from the file name alone).

    "training-checkpoint"  a file written by `deformable-detr train` (checkpoint.pth / best.pth: a dict with
                           "model" and "config"), or its run folder (best.pth, else checkpoint.pth)
    "pretrained"           a `save_pretrained` directory (config.json + model.safetensors + preprocess.json
                           + categories.json), or its model.safetensors
    "official"             a checkpoint of fundamentalvision/Deformable-DETR (dict with "model" and "args")
    "transformers"         a Hugging Face directory (config.json with model_type "deformable_detr" +
                           model.safetensors / pytorch_model.bin), or its weights file
    "state-dict"           a bare state dict (ours, official or HF names) or safetensors file

These are the building blocks of `deformable_detr.load` and of `train --init`; they read only what they must
(a config.json, the keys of a dict already loaded) and never build a model. A state dict saved from a
`DistributedDataParallel` wrapper has every key prefixed `module.`; `strip_ddp_prefix` removes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deformable_detr.errors import CheckpointError

FORMATS = ("training-checkpoint", "pretrained", "official", "transformers", "state-dict")
RUN_CHECKPOINTS = ("best.pth", "checkpoint.pth")  # in a run folder, the first one present is loaded
# The files of a `save_pretrained` folder.
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PREPROCESS_NAME = "preprocess.json"
CATEGORIES_NAME = "categories.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
DDP_PREFIX = "module."


@dataclass(frozen=True)
class CheckpointInfo:
    """Where a model's weights came from: `format` (one of FORMATS), the `path` read, a one-line `description`."""

    format: str
    path: str
    description: str


def strip_ddp_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """`state_dict` without the `module.` that `DistributedDataParallel.state_dict()` puts before every key.

    Only a prefix on every key is removed (a model of ours has no top-level submodule named `module`, so a
    prefix on some keys only is a foreign layout, left for the strict load to report).

    Args:
        state_dict: name -> tensor (or any value).

    Returns:
        A new dict, keys without the prefix when every key had it, else the same keys.
    """
    if state_dict and all(key.startswith(DDP_PREFIX) for key in state_dict):
        return {key[len(DDP_PREFIX) :]: value for key, value in state_dict.items()}
    return dict(state_dict)


def run_checkpoint(folder: str | os.PathLike) -> str | None:
    """The checkpoint a run folder is loaded from: best.pth, else checkpoint.pth; None when it holds neither."""
    for name in RUN_CHECKPOINTS:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def is_pretrained_directory(directory: str | os.PathLike) -> bool:
    """True when `directory` looks like `save_pretrained` output: config.json (ours, not HF's) + model.safetensors."""
    config_path = os.path.join(directory, CONFIG_NAME)
    if not (os.path.isfile(config_path) and os.path.isfile(os.path.join(directory, WEIGHTS_NAME))):
        return False
    try:
        with open(config_path) as file:
            config = json.load(file)
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "model_type" not in config and "d_model" in config


def hf_model_config(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's config.json when it is a Hugging Face Deformable DETR folder (has "model_type"), else None.

    Raises:
        CheckpointError: config.json is not JSON, names another HF model type, or has no weights beside it.
    """
    config_path = os.path.join(directory, CONFIG_NAME)
    if not os.path.isfile(config_path):
        return None
    try:
        with open(config_path) as file:
            data = json.load(file)
    except ValueError as error:
        raise CheckpointError(f"{config_path}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or "model_type" not in data:
        return None
    if data["model_type"] != "deformable_detr":
        raise CheckpointError(
            f"{config_path}: model_type is {data['model_type']!r}, not 'deformable_detr'; only Hugging Face "
            "DeformableDetrForObjectDetection weights can be loaded"
        )
    if not any(os.path.isfile(os.path.join(directory, name)) for name in HF_WEIGHTS):
        raise CheckpointError(
            f"{directory}: Hugging Face config.json but no weights; expected one of {list(HF_WEIGHTS)}"
        )
    return data


def torch_file_format(obj: Mapping[str, Any]) -> str:
    """ "training-checkpoint", "official" or "state-dict" for what a `torch.save` file held (a dict)."""
    model_entry = obj.get("model")
    if isinstance(model_entry, Mapping) and isinstance(obj.get("config"), Mapping):
        return "training-checkpoint"
    if isinstance(model_entry, Mapping) and "args" in obj:
        return "official"
    return "state-dict"


def key_layout(state_dict: Mapping[str, Any]) -> str | None:
    """ "ours", "official" or "transformers" from the key names (after `strip_ddp_prefix`), or None."""
    keys = set(state_dict)
    if "transformer.level_embed" in keys and any(key.startswith("class_heads.") for key in keys):
        return "ours"
    if "transformer.level_embed" in keys:
        return "official"
    if "model.level_embed" in keys:
        return "transformers"
    return None
