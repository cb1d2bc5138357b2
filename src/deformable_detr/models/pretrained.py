"""Save and load our own `DeformableDETR` as a directory: config.json + model.safetensors.

safetensors holds only tensors (no pickle), so loading a file cannot run code; config.json is
`ModelConfig.to_dict()`. Loading is strict: every key and shape must match the config.

    save_pretrained(model, "out/")        # or model.save_pretrained("out/")
    model = from_pretrained("out/")       # or DeformableDETR.from_pretrained("out/")
"""

from __future__ import annotations

import json
import os

from deformable_detr.models.config import ModelConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_pretrained(model, directory: str | os.PathLike) -> None:
    """Write `model`'s config and weights to `directory` (created if needed).

    Args:
        model: a `DeformableDETR`; its `config` must be a `ModelConfig`.
        directory: destination; config.json and model.safetensors are overwritten.
    """
    from safetensors.torch import save_file

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(tensors, os.path.join(directory, WEIGHTS_NAME), metadata={"format": "pt"})
    with open(os.path.join(directory, CONFIG_NAME), "w") as file:
        json.dump(model.config.to_dict(), file, indent=2, sort_keys=True)
        file.write("\n")


def from_pretrained(directory: str | os.PathLike):
    """Build a `DeformableDETR` from a `save_pretrained` directory.

    Args:
        directory: holds config.json (`ModelConfig.to_dict()`) and model.safetensors.

    Returns:
        DeformableDETR in eval mode.

    Raises:
        FileNotFoundError: a file is missing. ValueError: unknown config fields.
        CheckpointMismatchError: the weights do not fit the config (all problems listed at once).
    """
    from safetensors.torch import load_file

    from deformable_detr.models.state_dict import load_state_dict_strict
    from deformable_detr.models.detector import DeformableDETR

    directory = os.fspath(directory)
    config_path = os.path.join(directory, CONFIG_NAME)
    weights_path = os.path.join(directory, WEIGHTS_NAME)
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: not found; pass a directory written by save_pretrained")
    with open(config_path) as file:
        try:
            config = ModelConfig.from_dict(json.load(file))
        except ValueError as error:
            raise ValueError(f"{config_path}: {error}") from error
    model = DeformableDETR(config)
    load_state_dict_strict(model, load_file(weights_path, device="cpu"), weights_path)
    return model.eval()
