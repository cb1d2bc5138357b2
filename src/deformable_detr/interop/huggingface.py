"""Convert Hugging Face `DeformableDetrForObjectDetection` weights: file <-> (ModelConfig, state_dict).

A pure converter: it never builds a model (`DeformableDETR.from_state_dict(*transformers_to_ours(...))` does;
`deformable_detr.load(hf_dir)` wraps both). Accepted: a `save_pretrained` directory (config.json +
model.safetensors / pytorch_model.bin, possibly sharded), an HF state dict with its config, or an HF model
instance. `transformers` itself is never imported here: files are read with safetensors or
`checkpoint.safe_load.load_torch_file`.

Keys are first renamed to the official layout (`interop.huggingface_names`; docs/interop.md, applied in
reverse), then
`official.official_state_dict_to_ours` finishes the job, so both converters share one de-aliasing. HF quirks
handled here (docs/interop.md):

- two file generations: v4 names (`backbone.conv_encoder.model.`, `layers.N.fc1`, decoder `self_attn.out_proj`)
  and v5 names (`backbone.model.`, `layers.N.mlp.fc1`, `self_attn.o_proj`);
- the native HF ResNet names (`embedder.embedder.convolution`, `encoder.stages.{s-1}.layers.{b}.layer.{c-1}`,
  `shortcut`) besides timm's torchvision names;
- q/k/v projections of the decoder self-attention split into three Linears (we concatenate them back into
  `nn.MultiheadAttention.in_proj_*`, rows q, k, v);
- `save_pretrained` omits tied copies of the heads: only `class_embed.0` / `bbox_embed.0` (shared heads and the
  class heads that HF ties under box refinement), or only `model.decoder.{class,bbox}_embed.j`;
- two-stage takes its query count from `two_stage_num_proposals`, not `num_queries`;
- a native ResNet silently ignores `dilation=True` (DC5 needs timm), so such a model is loaded without DC5;
- `pixel_mask` is 1 = valid pixel; our `padding_mask` is True = padding (`padding_mask = ~pixel_mask.bool()`).

The head count is stored in no tensor, so a state dict without its HF config is refused unless `config=` is given.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from deformable_detr.checkpoint.safe_load import read_weights
from deformable_detr.errors import CheckpointError
from deformable_detr.interop.huggingface_names import fill_tied_heads, hf_name, transformers_state_dict_to_official
from deformable_detr.interop.official import official_state_dict_to_ours, ours_to_official
from deformable_detr.interop.official_config import backbone_from_state_dict, make_model_config
from deformable_detr.models.config import ModelConfig

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def read_transformers_directory(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a `save_pretrained` directory: (state_dict with HF names, config.json as a dict).

    Args:
        directory: holds config.json and model.safetensors, pytorch_model.bin or a sharded index of either.

    Returns:
        (state_dict, config_dict). Nothing is unpickled beyond tensors (`weights_only=True`).
    """
    directory = os.fspath(directory)
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path}: not found; pass a directory written by save_pretrained")
    config = read_json(config_path)
    for name in _WEIGHT_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return read_weights(path), config
    for name in _SHARD_INDEXES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            weight_map = read_json(path).get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{path}: no 'weight_map' object; expected a sharded-weights index")
            shards = sorted(set(weight_map.values()))
            state_dict: dict[str, torch.Tensor] = {}
            for shard in shards:
                state_dict.update(read_weights(os.path.join(directory, shard)))
            return state_dict, config
    raise FileNotFoundError(f"{directory}: no weights found; expected one of {list(_WEIGHT_FILES + _SHARD_INDEXES)}")


def read_json(path: str) -> dict[str, Any]:
    """A JSON object from `path`; CheckpointError naming the file when it is not one."""
    try:
        with open(path) as file:
            data = json.load(file)
    except ValueError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def config_from_transformers(
    hf_config: Any, official_state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> ModelConfig:
    """Translate an HF `DeformableDetrConfig` (object or config.json dict) into our `ModelConfig`.

    Args:
        hf_config: the HF config; sizes come from it, the backbone's depth and width from the weights.
        official_state_dict: the weights, already renamed to the official layout (for the backbone).
        source: name used in error messages.

    Returns:
        ModelConfig.
    """
    if hasattr(hf_config, "to_dict"):
        num_labels = hf_config.num_labels
        hf_config = hf_config.to_dict()
    else:
        hf_config = dict(hf_config)
        num_labels = _num_labels(hf_config, official_state_dict, source)
    get = hf_config.get
    if get("position_embedding_type", "sine") != "sine":
        raise CheckpointError(
            f"{source}: position_embedding_type={get('position_embedding_type')!r} is not supported; use 'sine'"
        )
    if get("activation_function", "relu") != "relu":
        raise CheckpointError(
            f"{source}: activation_function={get('activation_function')!r} is not supported; use 'relu'"
        )
    for ours, (enc, dec, default) in {
        "n_heads": ("encoder_attention_heads", "decoder_attention_heads", 8),
        "dim_feedforward": ("encoder_ffn_dim", "decoder_ffn_dim", 1024),
    }.items():
        if get(enc, default) != get(dec, default):
            raise CheckpointError(
                f"{source}: {enc}={get(enc)} differs from {dec}={get(dec)}; {ours} must be the same for both"
            )
    backbone_config = get("backbone_config") or {}
    is_timm = backbone_config.get("model_type") == "timm_backbone" or (
        not backbone_config and get("use_timm_backbone", True)
    )
    dilation = bool(get("dilation", False)) or backbone_config.get("output_stride") == 16
    if dilation and not is_timm:
        warnings.warn(
            f"{source}: dilation=True is ignored by HF's native ResNet backbone (DC5 needs timm); "
            "loading without DC5 so outputs match the HF model",
            stacklevel=3,
        )
        dilation = False
    if backbone_config.get("downsample_in_bottleneck"):
        raise CheckpointError(
            f"{source}: backbone_config.downsample_in_bottleneck=True is not supported "
            "(the stride must be on the 3x3 conv, as in torchvision)"
        )
    two_stage = bool(get("two_stage", False))
    fields = dict(
        backbone_from_state_dict(official_state_dict, "backbone.0.body."),
        d_model=int(get("d_model", 256)),
        n_heads=int(get("encoder_attention_heads", 8)),
        num_encoder_layers=int(get("encoder_layers", 6)),
        num_decoder_layers=int(get("decoder_layers", 6)),
        dim_feedforward=int(get("encoder_ffn_dim", 1024)),
        enc_n_points=int(get("encoder_n_points", 4)),
        dec_n_points=int(get("decoder_n_points", 4)),
        num_feature_levels=int(get("num_feature_levels", 4)),
        num_queries=int(get("two_stage_num_proposals", 300) if two_stage else get("num_queries", 300)),
        num_classes=int(num_labels),
        with_box_refine=bool(get("with_box_refine", False)),
        two_stage=two_stage,
        dilation=dilation,
        dropout=float(get("dropout", 0.1)),
    )
    return make_model_config(fields, source)


def _num_labels(hf_config: Mapping[str, Any], official_state_dict: Mapping[str, torch.Tensor], source: str) -> int:
    """The class count of a config.json: its id2label's length, else num_labels, else the class head's rows.

    transformers >= 5 writes neither id2label nor num_labels for a model left at the default 2 labels, so
    the weights say it; without a class head either, transformers' own default, 2.
    """
    id2label, num_labels = hf_config.get("id2label"), hf_config.get("num_labels")
    if isinstance(id2label, Mapping) and id2label:
        return len(id2label)
    if num_labels is not None:
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise CheckpointError(f"{source}: config.json num_labels = {num_labels!r}; expected an integer >= 1")
        return num_labels
    for key, value in official_state_dict.items():
        if re.fullmatch(r"(transformer\.decoder\.)?class_embed\.\d+\.weight", key) and value.dim() == 2:
            return int(value.shape[0])  # (K, C)
    return 2  # PretrainedConfig's default num_labels


def transformers_to_ours(
    checkpoint: Any, hf_config: Any = None, config: ModelConfig | None = None, source: str | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Convert Hugging Face `DeformableDetrForObjectDetection` weights to (ModelConfig, state dict in our layout).

    Args:
        checkpoint: a `save_pretrained` directory (config.json + weights), a weights file (model.safetensors /
            pytorch_model.bin; its config.json is read when it sits beside it), an HF state dict (v4 or v5
            names), or an HF model instance (its `config` is used).
        hf_config: the HF `DeformableDetrConfig` (object or config.json dict) when `checkpoint` carries none.
        config: our `ModelConfig`, used instead of any HF config.
        source: name used in error messages.

    Returns:
        (config, state_dict). `DeformableDETR.from_state_dict(config, state_dict)`, given images and
        `padding_mask = ~pixel_mask.bool()`, reproduces the HF model's logits and boxes.

    Raises:
        CheckpointError: no config at all (the head count is in no tensor: pass `config=`), keys or
            options we cannot express (learned position embedding, non-ReLU activation, ...).
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        path = os.fspath(checkpoint)
        source = source or path
        if os.path.isdir(path):
            state_dict, file_config = read_transformers_directory(path)
        elif os.path.isfile(path):
            state_dict = read_weights(path)
            beside = os.path.join(os.path.dirname(path), "config.json")
            file_config = read_json(beside) if os.path.isfile(beside) else None
        else:
            raise FileNotFoundError(f"{path}: no such file or directory; pass an HF save_pretrained directory")
        hf_config = hf_config if hf_config is not None else file_config
    elif isinstance(checkpoint, torch.nn.Module):
        source = source or type(checkpoint).__name__
        state_dict = checkpoint.state_dict()
        hf_config = hf_config if hf_config is not None else getattr(checkpoint, "config", None)
    elif isinstance(checkpoint, Mapping):
        source = source or "transformers state dict"
        state_dict = dict(checkpoint)
    else:
        raise CheckpointError(
            f"expected an HF model, a state dict, a weights file or a directory, got {type(checkpoint).__name__}"
        )

    official = transformers_state_dict_to_official(state_dict, source)
    if "transformer.level_embed" not in official:
        raise CheckpointError(f"{source}: 'model.level_embed' is missing: not a Deformable DETR state dict")
    if config is None:
        if hf_config is None:
            raise CheckpointError(
                f"{source}: no HF config.json with these weights, and the head count (and DC5, two-stage "
                "proposal count) is stored in no tensor; pass config=ModelConfig(...) describing the model"
            )
        config = config_from_transformers(hf_config, official, source)
    fill_tied_heads(official, config.num_decoder_layers + int(config.two_stage))
    ours = official_state_dict_to_ours(
        official, config.num_decoder_layers, config.with_box_refine, config.two_stage, source
    )
    return config, ours


def ours_to_transformers(
    config: ModelConfig, state_dict: Mapping[str, torch.Tensor], categories: list[dict[str, Any]] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Convert our (ModelConfig, state dict) to a Hugging Face `DeformableDetrForObjectDetection` state dict and config.

    The backbone is written with HF's native ResNet names (`use_timm_backbone=False`), so `transformers` can build
    the model without timm. Save the result as a folder HF reads:

        hf_state, hf_config = ours_to_transformers(model.config, model.state_dict(), model.categories)
        safetensors.torch.save_file({k: v.contiguous() for k, v in hf_state.items()}, "hf/model.safetensors")
        json.dump(hf_config, open("hf/config.json", "w"))      # DeformableDetrForObjectDetection.from_pretrained("hf/")

    Args:
        config: the architecture; DC5 (`dilation=True`) cannot be expressed with HF's native ResNet.
        state_dict: our key layout.
        categories: [{"id", "name"}] in label order, written as `id2label`; None = "LABEL_k".

    Returns:
        (hf_state_dict, hf_config_dict). Every tensor is its own copy (safetensors refuses shared storage),
        every head is written once per name, as an HF model instance holds them.

    Raises:
        CheckpointError: DC5, which HF builds only with a timm backbone.
    """
    if config.dilation:
        raise CheckpointError(
            "DC5 (dilation=True) cannot be written for Hugging Face's native ResNet; HF builds DC5 "
            "only with a timm backbone"
        )
    official, _ = ours_to_official(config, state_dict)
    hf_state: dict[str, torch.Tensor] = {}
    for key, value in official.items():
        if key.endswith("num_batches_tracked"):  # trainable BatchNorm counters; HF's backbone BN is frozen
            continue
        match = re.fullmatch(r"transformer\.decoder\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)", key)
        if match:
            index, tensor = match.groups()
            for name, part in zip("qkv", value.chunk(3, dim=0)):  # rows q, k, v
                hf_state[f"model.decoder.layers.{index}.self_attn.{name}_proj.{tensor}"] = part.clone()
            continue
        hf_state[hf_name(key)] = value.detach().clone()
    width = config.backbone_base_width
    bottleneck = "layer1.0.conv3.weight" in {k[len("backbone.0.body.") :] for k in official}
    labels = (
        [c["name"] for c in categories] if categories is not None else [f"LABEL_{k}" for k in range(config.num_classes)]
    )
    hf_config = {
        "model_type": "deformable_detr",
        "architectures": ["DeformableDetrForObjectDetection"],
        "use_timm_backbone": False,
        "use_pretrained_backbone": False,
        "backbone_config": {
            "model_type": "resnet",
            "layer_type": "bottleneck" if bottleneck else "basic",
            "embedding_size": width,
            "hidden_sizes": [width * 2**stage * (4 if bottleneck else 1) for stage in range(4)],
            "depths": list(config.resnet_depths),
            "out_features": ["stage2", "stage3", "stage4"] if config.num_feature_levels > 1 else ["stage4"],
            "downsample_in_bottleneck": False,
        },
        "d_model": config.d_model,
        "encoder_layers": config.num_encoder_layers,
        "decoder_layers": config.num_decoder_layers,
        "encoder_attention_heads": config.n_heads,
        "decoder_attention_heads": config.n_heads,
        "encoder_ffn_dim": config.dim_feedforward,
        "decoder_ffn_dim": config.dim_feedforward,
        "encoder_n_points": config.enc_n_points,
        "decoder_n_points": config.dec_n_points,
        "num_feature_levels": config.num_feature_levels,
        "num_queries": config.num_queries,
        "two_stage_num_proposals": config.num_queries,
        "with_box_refine": config.with_box_refine,
        "two_stage": config.two_stage,
        "dilation": False,
        "dropout": config.dropout,
        "activation_function": "relu",
        "position_embedding_type": "sine",
        "id2label": {str(k): name for k, name in enumerate(labels)},
        "label2id": {name: k for k, name in enumerate(labels)},
    }
    return hf_state, hf_config
