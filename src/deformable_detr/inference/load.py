"""`deformable_detr.load`: one function that turns any weights people have into a ready detector (a `Detector`:
`DeformableDETR`, or `DETR` for a DETR training run or save_pretrained folder; `deformable_detr.registry` picks).

    model = deformable_detr.load("runs/demo")                        # a training run folder
    model = deformable_detr.load("r50_deformable_detr-checkpoint.pth", device="cuda")
    model.checkpoint_info.format                                     # "official"

Formats, recognised from the content (never from the file name alone) by `deformable_detr.checkpoint.format`,
which lists them; docs/interop.md describes each. A bare state dict needs `config=`, since the head count, DC5
and the two-stage query count are stored in no tensor. A state dict saved from a `DistributedDataParallel`
wrapper (every key prefixed `module.`) loads as the model it wraps.

Every file is read without running code (safetensors, or `torch.load(weights_only=True)`), tensors are read
onto the CPU and then moved to `device` (a checkpoint saved on a GPU loads on a CPU-only machine), and the
format found is logged (logger "deformable_detr.inference.load", INFO) and kept in `model.checkpoint_info`.
Official and HF weights get the paper's preprocessing and, with 91 classes, COCO's category names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from deformable_detr.checkpoint.files import verify_checksum
from deformable_detr.checkpoint.format import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointInfo,
    hf_model_config,
    is_pretrained_directory,
    key_layout,
    run_checkpoint,
    strip_ddp_prefix,
    torch_file_format,
)
from deformable_detr.checkpoint.safe_load import load_torch_file, read_weights
from deformable_detr.errors import CheckpointError
from deformable_detr.interop.official import split_official_checkpoint
from deformable_detr.models.pretrained import read_json
from deformable_detr.pipeline.contract import Detector
from deformable_detr.pipeline.processor import PreprocessConfig
from deformable_detr.registry import (
    ARCHITECTURES,
    DEFORMABLE_DETR,
    AnyModelConfig,
    architecture_of,
    model_class,
    model_config_from_dict,
)
from deformable_detr.util.devices import checked_device

logger = logging.getLogger(__name__)

_EXPECTED = (
    "expected a training checkpoint (checkpoint.pth / best.pth) or its run folder, a save_pretrained folder, "
    "an official Deformable-DETR .pth, or a Hugging Face folder / model.safetensors"
)


def check_exists(path: str | os.PathLike) -> str:
    """`path` as a str if it exists; else the FileNotFoundError `load` raises (for commands that check up front).

    Raises:
        FileNotFoundError: one line naming `path` and the formats `load` reads.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or folder; {_EXPECTED}")
    return path


def load(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    attention_backend: str | None = None,
    config: AnyModelConfig | None = None,
    compile: bool = False,
) -> Detector:
    """Load a detector (Deformable DETR or DETR) from any supported file or folder, ready for inference.

    Args:
        path: a file or folder in one of the formats above.
        device: where the model runs ("cpu", "cuda", "cuda:1", ...).
        attention_backend: operator backend of every attention layer ("auto", "reference", "cpu", "triton");
            None = "auto". Never read from the file: it is a runtime choice.
        config: the architecture (`ModelConfig` or `DetrConfig`), for files that do not determine it (bare state
            dicts); for other formats it replaces what the file says.
        compile: make `model.predict` run through torch.compile (CUDA graphs on a GPU, shape buckets;
            see `deformable_detr.pipeline.compiled.compile_inference`); it compiles lazily, on first use.

    Returns:
        the detector the file describes (`DeformableDETR`, or `DETR` for DETR runs and folders; the class
        `deformable_detr.registry` maps the config to), in eval mode on `device`, with `preprocess`, `categories` and `checkpoint_info` (a
        `CheckpointInfo`: the format found, the file read) set (and `compiled_inference` with `compile`).

    Raises:
        CheckpointError: unreadable, refused (a pickle that would run code) or unrecognised file, a file
            that does not determine the architecture and no `config`, or weights that do not fit.
        ConfigError: an unknown device or attention backend.
        FileNotFoundError: `path` does not exist.
    """
    device = checked_device(device)
    path = check_exists(path)
    model, info = _load_cpu(path, config)
    if attention_backend is not None:
        model.set_attention_backend(attention_backend)
    model.checkpoint_info = info
    logger.info("%s: loaded as %s (%s)", info.path, info.format, info.description)
    model = model.to(device)
    if compile:
        from deformable_detr.pipeline.compiled import compile_inference  # imports torch._dynamo: only when asked

        compile_inference(model)
    return model


def _load_cpu(path: str, config: AnyModelConfig | None) -> tuple[Detector, CheckpointInfo]:
    """(model on the CPU, info) for an existing path."""
    if os.path.isdir(path):
        return _load_directory(path, config)
    if path.endswith(".safetensors"):
        return _load_safetensors(path, config)
    return _load_torch(path, config)


def _load_directory(path: str, config: AnyModelConfig | None) -> tuple[Detector, CheckpointInfo]:
    if hf_model_config(path) is not None:
        return _from_transformers(path, config, "Hugging Face folder")
    if is_pretrained_directory(path):
        saved = read_json(os.path.join(path, CONFIG_NAME), model_config_from_dict)  # which class to build
        model = model_class(saved).from_pretrained(path)
        if config is not None:
            model = model_class(config).from_state_dict(
                config, model.state_dict(), source=path, preprocess=model.preprocess, categories=model.categories
            )
        return model, CheckpointInfo("pretrained", path, "save_pretrained folder")
    candidate = run_checkpoint(path)
    if candidate is not None:
        return _load_torch(candidate, config)
    raise CheckpointError(f"{path}: folder holds no recognised weights; {_EXPECTED}")


def _from_transformers(path: str, config: AnyModelConfig | None, what: str) -> tuple[Detector, CheckpointInfo]:
    model_config, state_dict = _converter("from_transformers", config, path)(path, config=config)
    hf_config = hf_model_config(path if os.path.isdir(path) else os.path.dirname(path) or ".")
    model = model_class(model_config).from_state_dict(
        model_config,
        state_dict,
        source=path,
        preprocess=PreprocessConfig(),
        categories=_hf_categories(hf_config, model_config.num_classes),
    )
    return model, CheckpointInfo("transformers", path, what)


def _hf_categories(hf_config: Mapping[str, Any] | None, num_classes: int) -> list[dict[str, Any]] | None:
    """Categories from an HF config's id2label (label k = id k), unless it holds only generic "LABEL_k" names."""
    id2label = (hf_config or {}).get("id2label") or {}
    try:
        names = {int(key): str(value) for key, value in id2label.items()}
    except (TypeError, ValueError):
        return None
    if sorted(names) != list(range(num_classes)) or all(name == f"LABEL_{k}" for k, name in names.items()):
        return None  # the model's defaults: COCO's names for 91 classes
    return [{"id": k, "name": names[k]} for k in range(num_classes)]


def _load_safetensors(path: str, config: AnyModelConfig | None) -> tuple[Detector, CheckpointInfo]:
    directory = os.path.dirname(path) or "."
    if os.path.basename(path) == WEIGHTS_NAME:
        if hf_model_config(directory) is not None:
            return _from_transformers(path, config, "Hugging Face model.safetensors with its config.json")
        if is_pretrained_directory(directory):
            return _load_directory(directory, config)
    return _from_bare_state_dict(read_weights(path), path, config)


def _load_torch(path: str, config: AnyModelConfig | None) -> tuple[Detector, CheckpointInfo]:
    obj = load_torch_file(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict; {_EXPECTED}")
    kind = torch_file_format(obj)
    if kind == "training-checkpoint":
        return _from_training_checkpoint(obj, path, config)
    if kind == "official":
        to_ours = _converter("from_official", config, path)
        model_config, state_dict = to_ours(obj, config=config, source=path)  # strips a DDP prefix too
        model = model_class(model_config).from_state_dict(model_config, state_dict, source=path)
        return model, CheckpointInfo("official", path, "official Deformable-DETR checkpoint")
    model_entry = obj.get("model")
    state_dict = model_entry if isinstance(model_entry, Mapping) else obj
    if os.path.basename(path) == "pytorch_model.bin" and hf_model_config(os.path.dirname(path) or ".") is not None:
        return _from_transformers(path, config, "Hugging Face pytorch_model.bin with its config.json")
    return _from_bare_state_dict(state_dict, path, config)


def _from_training_checkpoint(
    state: Mapping[str, Any], path: str, config: AnyModelConfig | None
) -> tuple[Detector, CheckpointInfo]:
    """A `deformable-detr train` checkpoint: {"model", "config": TrainConfig dict, "categories"?, "preprocess"?,
    "checksum"?}; a stored checksum is verified, a DDP `module.` prefix on the model's keys removed."""
    state = verify_checksum(dict(state), path)
    train_config = state["config"]
    if config is None:
        if not isinstance(train_config.get("model"), Mapping):
            raise CheckpointError(f"{path}: 'config' has no 'model' entry; not written by `deformable-detr train`")
        try:
            config = model_config_from_dict(dict(train_config["model"]))  # Deformable DETR or DETR
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{path}: config.model: {error}") from None
    preprocess = _training_preprocess(state, train_config, path)
    categories = state.get("categories")
    model = model_class(config).from_state_dict(
        config,
        strip_ddp_prefix(state["model"]),
        source=path,
        preprocess=preprocess,
        categories=list(categories) if categories is not None else None,
    )
    epoch = state.get("epoch", (state.get("state") or {}).get("epoch"))
    return model, CheckpointInfo(
        "training-checkpoint", path, "training checkpoint" + (f" after {epoch} epoch(s)" if epoch is not None else "")
    )


def _training_preprocess(state: Mapping[str, Any], train_config: Mapping[str, Any], path: str) -> PreprocessConfig:
    """The checkpoint's "preprocess", else the evaluation sizes of its TrainConfig (val_size / max_size)."""
    if isinstance(state.get("preprocess"), Mapping):
        try:
            return PreprocessConfig.from_dict(dict(state["preprocess"]))
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{path}: preprocess: {error}") from None
    min_size = train_config.get("val_size") or max(train_config.get("train_scales") or [800])
    max_size = train_config.get("max_size") or 1333
    try:
        return PreprocessConfig(min_size=int(min_size), max_size=max(int(max_size), int(min_size)))
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: config: cannot derive the preprocessing ({error})") from None


def _from_bare_state_dict(
    state_dict: Mapping[str, Any], path: str, config: AnyModelConfig | None
) -> tuple[Detector, CheckpointInfo]:
    """A state dict with no config beside it: its layout is recognised from the key names; `config` is required."""
    state_dict = strip_ddp_prefix(state_dict)
    if config is not None and architecture_of(config).name != DEFORMABLE_DETR:  # DETR: our key names, checked strictly
        model = model_class(config).from_state_dict(config, state_dict, source=path)
        return model, CheckpointInfo("state-dict", path, "bare state dict with this package's key names")
    layout = key_layout(state_dict)
    if layout is None:
        raise CheckpointError(f"{path}: no Deformable DETR weights recognised (no 'level_embed' key); {_EXPECTED}")
    names = {"ours": "this package's", "official": "official", "transformers": "Hugging Face"}[layout]
    if config is None:
        raise CheckpointError(
            f"{path}: a bare state dict with {names} key names and no config; the head count (and DC5, two-stage "
            "query count) is stored in no tensor, so the architecture cannot be read from it: "
            "pass config=ModelConfig(...) describing the model"
        )
    if layout == "official":
        to_ours = _converter("from_official", config, path)
        config, state_dict = to_ours(split_official_checkpoint(state_dict, path)[0], config=config, source=path)
    elif layout == "transformers":
        config, state_dict = _converter("from_transformers", config, path)(state_dict, config=config, source=path)
    model = model_class(config).from_state_dict(config, state_dict, source=path)
    return model, CheckpointInfo("state-dict", path, f"bare state dict with {names} key names")


def _converter(kind: str, config: AnyModelConfig | None, path: str):
    """The registry's `from_official` / `from_transformers` converter of `config`'s architecture (Deformable DETR's
    without a config), or a one-line CheckpointError where that architecture has none (DETR)."""
    architecture = ARCHITECTURES[DEFORMABLE_DETR] if config is None else architecture_of(config)
    converter = getattr(architecture, kind)
    if converter is None:
        source = {"from_official": "an official Deformable-DETR", "from_transformers": "a Hugging Face"}[kind]
        raise CheckpointError(
            f"{path}: {source} checkpoint cannot load as {architecture.name!r} (config={type(config).__name__}); "
            "it holds Deformable DETR weights: pass a ModelConfig or no config"
        )
    return converter
