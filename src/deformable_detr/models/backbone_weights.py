"""ImageNet ResNet weights for the backbone (`train --backbone-weights FILE`), from three layouts.

- torchvision (`resnet50-0676ba61.pth`) and timm (`resnet50.a1_in1k`, `pytorch_model.bin` or
  `model.safetensors`): the same names (`conv1`, `bn1`, `layer{s}.{b}.conv{i}`, `...downsample.{0,1}`,
  `fc`), which are ours.
- Hugging Face `ResNetModel` / `ResNetForImageClassification` (`microsoft/resnet-50`):
  `[resnet.]embedder.embedder.{convolution,normalization}` -> `conv1` / `bn1`,
  `[resnet.]encoder.stages.{s}.layers.{b}.layer.{i}.{convolution,normalization}` -> `layer{s+1}.{b}.conv{i+1}` / `bn{i+1}`,
  `...shortcut.{convolution,normalization}` -> `...downsample.{0,1}`.
The classifier (`fc`, `classifier`, `head`) is dropped; everything else loads strictly. A file for
another depth is one error naming both depths.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from .backbone import ResNet

_HF_STEM = re.compile(r"^(?:resnet\.)?embedder\.embedder\.(convolution|normalization)\.(.+)$")
_HF_BLOCK = re.compile(
    r"^(?:resnet\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\.(layer\.(\d+)|shortcut)\.(convolution|normalization)\.(.+)$"
)
_CLASSIFIER = ("fc.", "classifier.", "head.", "resnet.pooler", "pooler.")


def read_backbone_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a .pth/.bin (weights_only) or .safetensors file, unwrapped from a `state_dict`/`model` key."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not path.is_file():
            raise CheckpointError(f"{path}: backbone weights file not found")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(
                f"{path}: cannot read safetensors ({error}); pass a torchvision/timm/HF ResNet file"
            ) from None
    else:
        from ..checkpoint.safe_load import load_torch_file

        state = load_torch_file(path)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors; pass a torchvision/timm/HF ResNet weights file")
    return state


def to_torchvision_names(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict with torchvision names and no classifier, layout name "torchvision/timm" or "huggingface")."""
    if any(_HF_STEM.match(k) or _HF_BLOCK.match(k) for k in state):
        renamed = {}
        for key, value in state.items():
            if stem := _HF_STEM.match(key):
                renamed[f"{'conv1' if stem[1] == 'convolution' else 'bn1'}.{stem[2]}"] = value
            elif block := _HF_BLOCK.match(key):
                stage, index, part, conv_index, kind, leaf = block.groups()
                prefix = f"layer{int(stage) + 1}.{index}."
                if part == "shortcut":
                    name = prefix + ("downsample.0" if kind == "convolution" else "downsample.1")
                else:
                    name = prefix + (
                        f"conv{int(conv_index) + 1}" if kind == "convolution" else f"bn{int(conv_index) + 1}"
                    )
                renamed[f"{name}.{leaf}"] = value
            elif not key.startswith(_CLASSIFIER):
                renamed[key] = value  # left for the strict check to report
        return renamed, "huggingface"
    return {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER)}, "torchvision/timm"


def describe_resnet(state: dict[str, torch.Tensor]) -> str:
    """ "resnet50 (bottleneck, 3-4-6-3, width 64)"-style description of a torchvision-named state dict."""
    depths = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{s}.")}) for s in range(1, 5))
    bottleneck = any(k.endswith("conv3.weight") for k in state)
    width = state["conv1.weight"].shape[0] if "conv1.weight" in state else "?"
    name = {
        (2, 2, 2, 2): "resnet18",
        (3, 4, 6, 3): "resnet50" if bottleneck else "resnet34",
        (3, 4, 23, 3): "resnet101",
        (3, 8, 36, 3): "resnet152",
    }.get(depths, "resnet")
    return f"{name} ({'bottleneck' if bottleneck else 'basic'} blocks, {'-'.join(map(str, depths))}, width {width})"


def load_backbone_weights(body: ResNet, path: str | os.PathLike) -> str:
    """Load ImageNet ResNet weights of any layout above into `body`, strictly; returns the layout name.

    Raises:
        CheckpointError: unreadable file, or weights of another depth/width (one line naming both).
    """
    state, layout = to_torchvision_names(read_backbone_file(path))
    own = body.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mis_shaped = sorted(k for k, v in state.items() if k in own and v.shape != own[k].shape)
    if missing or unexpected or mis_shaped:
        raise CheckpointError(
            f"{path}: holds a {describe_resnet(state)} ({layout} layout), but the model's backbone is a "
            f"{describe_resnet(own)}: {len(missing)} missing, {len(unexpected)} unexpected, {len(mis_shaped)} mis-shaped "
            f"tensors (e.g. {(missing + unexpected + mis_shaped)[:3]}); pass the file of the model's depth or choose a "
            "model preset with this backbone"
        )
    body.load_state_dict(state)
    return layout
