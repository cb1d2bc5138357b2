"""Save and load our own detectors (`DeformableDETR`, `DETR`) as a directory (the model's own format; see docs/interop.md).

    out/config.json          config.to_dict(): the architecture (a DETR config says "architecture": "detr")
    out/model.safetensors    the weights (tensors only: loading cannot run code)
    out/preprocess.json      PreprocessConfig.to_dict(): normalisation and resizing
    out/categories.json      [{"id": int, "name": str}] in label order

    model.save_pretrained("out/")
    model = DeformableDETR.from_pretrained("out/")      # or deformable_detr.load("out/")

Loading is strict: every key and shape must match the config. Directories written before preprocess.json
and categories.json existed still load, with the paper's preprocessing and default categories and one warning.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from deformable_detr.checkpoint.files import write_atomic
from deformable_detr.checkpoint.format import (
    CATEGORIES_NAME,
    CONFIG_NAME,
    PREPROCESS_NAME,
    WEIGHTS_NAME,
    CheckpointInfo,
)
from deformable_detr.checkpoint.safe_load import read_weights
from deformable_detr.errors import ConfigError
from deformable_detr.pipeline.categories import check_categories
from deformable_detr.pipeline.processor import PreprocessConfig


def save_pretrained(model, directory: str | os.PathLike) -> None:
    """Write `model`'s config, weights, preprocessing and categories to `directory` (created if needed).

    Each file is written to a temporary name and renamed, so a crash never leaves a half-written file;
    existing files of the same names are replaced.

    Args:
        model: a detector (`DeformableDETR` or `DETR`): `config`, `preprocess`, `categories`, `state_dict()`.
        directory: destination folder.
    """
    from safetensors.torch import save_file

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    write_atomic(Path(directory) / WEIGHTS_NAME, lambda path: save_file(tensors, path, metadata={"format": "pt"}))
    for name, content in (
        (CONFIG_NAME, model.config.to_dict()),
        (PREPROCESS_NAME, model.preprocess.to_dict()),
        (CATEGORIES_NAME, model.categories),
    ):
        write_atomic(Path(directory) / name, lambda path, content=content: _write_json(path, content))


def from_pretrained(directory: str | os.PathLike, model_class: type, attention_backend: str | None = None):
    """Build a detector from a `save_pretrained` directory (`DeformableDETR/DETR.from_pretrained` call this).

    Args:
        directory: holds config.json, model.safetensors and (since they exist) preprocess.json, categories.json.
        model_class: the class to build (`DeformableDETR` or `DETR`: its `config_class` reads config.json), passed
            in so that this module imports no model.
        attention_backend: operator backend for every attention layer; None = "auto".

    Returns:
        `model_class` in eval mode on the CPU; its `checkpoint_info` names the folder (format "pretrained").

    Raises:
        FileNotFoundError: config.json or model.safetensors is missing.
        CheckpointError: the weights are unreadable or do not fit the config (all listed).
        ConfigError: config.json, preprocess.json or categories.json holds unknown fields or bad values.
    """
    directory = os.fspath(directory)
    config_path = os.path.join(directory, CONFIG_NAME)
    weights_path = os.path.join(directory, WEIGHTS_NAME)
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: not found; pass a directory written by save_pretrained")
    config = read_json(config_path, model_class.config_class.from_dict)
    missing = [name for name in (PREPROCESS_NAME, CATEGORIES_NAME) if not os.path.isfile(os.path.join(directory, name))]
    if missing:
        warnings.warn(
            f"{directory}: no {' or '.join(missing)} (written by an older version); using the paper's preprocessing "
            "and default category names; save it again with save_pretrained to store them",
            stacklevel=2,
        )
    preprocess = None
    if PREPROCESS_NAME not in missing:
        preprocess = read_json(os.path.join(directory, PREPROCESS_NAME), PreprocessConfig.from_dict)
    categories = None
    if CATEGORIES_NAME not in missing:
        path = os.path.join(directory, CATEGORIES_NAME)
        categories = read_json(path, lambda value: check_categories(value, config.num_classes, source=path))
    model = model_class.from_state_dict(
        config,
        read_weights(weights_path),
        source=weights_path,
        preprocess=preprocess,
        categories=categories,
        attention_backend=attention_backend,
    )
    model.checkpoint_info = CheckpointInfo("pretrained", directory, "save_pretrained folder")
    return model


def read_json(path: str, parse) -> Any:
    """`parse(json.load(path))`, with errors naming the file."""
    try:
        with open(path) as file:
            data = json.load(file)
    except ValueError as error:
        raise ConfigError(f"{path}: not valid JSON ({error}); rewrite it with save_pretrained") from None
    try:
        return parse(data)
    except (TypeError, ValueError) as error:
        message = str(error)
        raise ConfigError(message if message.startswith(path) else f"{path}: {message}") from None


def _write_json(path: str, content: Any) -> None:
    with open(path, "w") as file:
        json.dump(content, file, indent=2, sort_keys=True)
        file.write("\n")
