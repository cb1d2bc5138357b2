"""Hugging Face `DeformableDetrForObjectDetection` key names <-> the official layout, one tensor name at a time.

The renaming half of `interop.huggingface` (which reads the files and maps the configs): HF keys of either
file generation (v4: `backbone.conv_encoder.model.`, `layers.N.fc1`, `self_attn.out_proj`; v5:
`backbone.model.`, `layers.N.mlp.fc1`, `self_attn.o_proj`) and the native HF ResNet names
(`embedder.embedder.convolution`, `encoder.stages.{s-1}.layers.{b}.layer.{c-1}`, `shortcut`) go to the
official names and back (docs/interop.md). The decoder self-attention's q/k/v projections are three Linears
in HF and one `in_proj` in the official layout (rows q, k, v); HF's `save_pretrained` omits tied head copies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from deformable_detr.errors import CheckpointError


def v5_name(key: str) -> str:
    """Rename a v4-era HF key to its transformers 5.x name (docs/interop.md §4.2)."""
    key = key.replace("model.backbone.conv_encoder.model.", "model.backbone.model.")
    key = key.replace("model.backbone.conv_encoder.", "model.backbone.")
    key = re.sub(r"(\.layers\.\d+)\.fc([12])\.", r"\1.mlp.fc\2.", key)
    key = re.sub(r"(decoder\.layers\.\d+\.self_attn)\.out_proj\.", r"\1.o_proj.", key)
    return key


def backbone_name(rest: str) -> str:
    """HF native ResNet name (after `model.backbone.model.`) -> torchvision name; timm names pass unchanged."""
    match = re.fullmatch(r"embedder\.embedder\.(convolution|normalization)\.(.+)", rest)
    if match:
        module, tensor = match.groups()
        return f"{'conv1' if module == 'convolution' else 'bn1'}.{tensor}"
    match = re.fullmatch(
        r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(?:layer\.(\d+)|(shortcut))\.(convolution|normalization)\.(.+)", rest
    )
    if match:
        stage, block, conv, shortcut, module, tensor = match.groups()
        prefix = f"layer{int(stage) + 1}.{block}."
        if shortcut:
            return f"{prefix}downsample.{0 if module == 'convolution' else 1}.{tensor}"
        name = "conv" if module == "convolution" else "bn"
        return f"{prefix}{name}{int(conv) + 1}.{tensor}"
    return rest


_ENCODER_LAYER = {
    "self_attn_layer_norm": "norm1",
    "final_layer_norm": "norm2",
    "mlp.fc1": "linear1",
    "mlp.fc2": "linear2",
}
_DECODER_LAYER = {
    "encoder_attn_layer_norm": "norm1",
    "self_attn_layer_norm": "norm2",
    "final_layer_norm": "norm3",
    "mlp.fc1": "linear1",
    "mlp.fc2": "linear2",
    "encoder_attn": "cross_attn",
    "self_attn.o_proj": "self_attn.out_proj",
}


def official_name(key: str) -> str:
    """One v5 HF key -> official key (q/k/v projections are merged separately)."""
    if key.startswith("model.backbone.model."):
        return "backbone.0.body." + backbone_name(key[len("model.backbone.model.") :])
    if key.startswith("model.query_position_embeddings."):
        return "query_embed." + key[len("model.query_position_embeddings.") :]
    if key.startswith("model.input_proj."):
        return key[len("model.") :]
    match = re.fullmatch(r"model\.(encoder|decoder)\.layers\.(\d+)\.(.+)", key)
    if match:
        part, index, rest = match.groups()
        for hf, official in (_ENCODER_LAYER if part == "encoder" else _DECODER_LAYER).items():
            if rest.startswith(hf + "."):
                rest = official + rest[len(hf) :]
                break
        return f"transformer.{part}.layers.{index}.{rest}"
    if key.startswith("model."):
        return "transformer." + key[len("model.") :]
    return key  # class_embed.*, bbox_embed.*


def transformers_state_dict_to_official(
    state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename an HF state dict (v4 or v5 names) to the official layout.

    Args:
        state_dict: `DeformableDetrForObjectDetection` tensors, possibly without the tied copies HF omits.
        source: name used in error messages.

    Returns:
        Official-layout state dict; decoder self-attention q/k/v are concatenated into in_proj_{weight,bias}
        ([3C, C] / [3C], rows q, k, v). Omitted tied heads stay omitted (see `huggingface.transformers_to_ours`).
    """
    official: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for hf_key, value in state_dict.items():
        key = v5_name(hf_key)
        if re.match(r"model\.(backbone\.)?position_embedding\.", key):
            raise CheckpointError(
                f"{source}: '{hf_key}': learned position embedding (position_embedding_type='learned') "
                "is not supported; only the sine embedding is"
            )
        match = re.fullmatch(r"model\.decoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key)
        if match:
            index, projection, tensor = match.groups()
            qkv.setdefault(f"transformer.decoder.layers.{index}.self_attn.in_proj_{tensor}", {})[projection] = value
            continue
        official[official_name(key)] = value
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(
                f"{source}: {key}: decoder self-attention has only {sorted(parts)} of q/k/v projections"
            )
        official[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)  # (3C, C) or (3C,)
    return official


def fill_tied_heads(official: dict[str, torch.Tensor], num_heads: int) -> None:
    """Give every head j < num_heads a copy, following HF's tie rule `{kind}.(j>0) -> {kind}.0`.

    `save_pretrained` drops tied names; a head that has neither `{kind}.j` nor `transformer.decoder.{kind}.j`
    was tied to head 0 in the saved model.
    """
    for kind in ("class_embed", "bbox_embed"):
        head0 = {k[len(f"{kind}.0.") :]: v for k, v in official.items() if k.startswith(f"{kind}.0.")}
        if not head0:
            continue
        for j in range(1, num_heads):
            if not any(k.startswith((f"{kind}.{j}.", f"transformer.decoder.{kind}.{j}.")) for k in official):
                official.update({f"{kind}.{j}.{name}": value for name, value in head0.items()})


def _nativebackbone_name(name: str) -> str:
    """torchvision ResNet name -> HF native ResNet name (the inverse of `backbone_name`)."""
    if name.startswith(("conv1.", "bn1.")):
        module, tensor = name.split(".", 1)
        return f"embedder.embedder.{'convolution' if module == 'conv1' else 'normalization'}.{tensor}"
    match = re.fullmatch(r"layer(\d)\.(\d+)\.(?:(conv|bn)(\d)|downsample\.(\d))\.(.+)", name)
    if match is None:
        raise CheckpointError(f"backbone key '{name}' has no Hugging Face ResNet name")
    stage, block, kind, conv, downsample, tensor = match.groups()
    prefix = f"encoder.stages.{int(stage) - 1}.layers.{block}."
    if downsample is not None:
        return f"{prefix}shortcut.{'convolution' if downsample == '0' else 'normalization'}.{tensor}"
    return f"{prefix}layer.{int(conv) - 1}.{'convolution' if kind == 'conv' else 'normalization'}.{tensor}"


def hf_name(key: str) -> str:
    """One official key -> HF (transformers 5.x) key; the decoder's in_proj is split separately."""
    if key.startswith("backbone.0.body."):
        return "model.backbone.model." + _nativebackbone_name(key[len("backbone.0.body.") :])
    if key.startswith("query_embed."):
        return "model.query_position_embeddings." + key[len("query_embed.") :]
    if key.startswith("input_proj."):
        return "model." + key
    match = re.fullmatch(r"transformer\.(encoder|decoder)\.layers\.(\d+)\.(.+)", key)
    if match:
        part, index, rest = match.groups()
        for hf, official in (_ENCODER_LAYER if part == "encoder" else _DECODER_LAYER).items():
            if rest.startswith(official + "."):
                rest = hf + rest[len(official) :]
                break
        return f"model.{part}.layers.{index}.{rest}"
    if key.startswith("transformer."):
        return "model." + key[len("transformer.") :]
    return key  # class_embed.*, bbox_embed.*
