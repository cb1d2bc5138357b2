"""ResNet backbone returning C3-C5 (or C5) feature maps with their padding masks, and the backbone contract.

Parameter names are torchvision's (`conv1`, `bn1`, `layer{s}.{b}.conv1`, `...downsample.{0,1}`), so
torchvision ImageNet weights and official Deformable DETR checkpoints load without renaming.

The backbone contract. `DeformableDETR(config, backbone=module)` accepts any `nn.Module` with
    num_channels: list[int]   channels C_l of each returned level, finest first;
    strides: list[int]        stride of each returned level w.r.t. the input image (e.g. [8, 16, 32]);
    forward(images (B, 3, H, W), padding_mask (B, H, W) bool True = padding)
        -> [(feature (B, C_l, H_l, W_l), mask (B, H_l, W_l) bool True = padding)] per level.
The detector projects every returned level to d_model and adds stride-2 levels on top of the last one
until it has `config.num_feature_levels`; a backbone returning more levels than that is refused.
`Backbone` below is the ResNet that fulfils it; `downsample_mask` gives the masks of any other one.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from deformable_detr.checkpoint.safe_load import load_torch_file
from deformable_detr.errors import CheckpointError, ConfigError

# Block type and blocks per stage (layer1..layer4) of each torchvision ResNet: the one table of them.
RESNETS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}


def check_resnet_fields(config) -> None:
    """Check a config's ResNet fields (`backbone`, `backbone_depths`, `backbone_base_width`; `ModelConfig` and
    `DetrConfig` both have them) in its `__post_init__`: a ConfigError naming the field, else `backbone_depths`
    becomes a tuple."""
    if config.backbone not in RESNETS:
        raise ConfigError(f"backbone={config.backbone!r} is unknown; choose one of {', '.join(RESNETS)}")
    if config.backbone_depths is not None:
        depths = tuple(config.backbone_depths)
        if len(depths) != 4 or any(not isinstance(d, int) or d < 1 for d in depths):
            raise ConfigError(
                f"backbone_depths={config.backbone_depths!r} must be 4 positive ints (blocks of layer1..layer4)"
            )
        object.__setattr__(config, "backbone_depths", depths)  # a frozen dataclass: a list from JSON -> tuple
    if config.backbone_base_width < 1:
        raise ConfigError(f"backbone_base_width={config.backbone_base_width} must be >= 1 (64 in torchvision)")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all four stored as buffers.

    As torchvision/DETR, with eps added before the rsqrt. A `num_batches_tracked` entry in a loaded
    state dict (torchvision files have one) is ignored.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(C,) scale and (C,) shift such that the layer computes x * scale + shift per channel."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()  # (C,)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W), x * scale + shift per channel."""
        scale, shift = self.scale_and_shift()
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def _conv_norm(x: torch.Tensor, conv: nn.Conv2d, norm: nn.Module) -> torch.Tensor:
    """norm(conv(x)) for a bias-free conv; a frozen norm is folded into the conv's weight and bias.

    Folding saves one full pass over the activation per layer (about a sixth of the ResNet-50 forward
    at 800x1066 on 2 CPU cores) and is exact up to float rounding; gradients still reach `conv.weight`.
    """
    if not isinstance(norm, FrozenBatchNorm2d):
        return norm(conv(x))
    scale, shift = norm.scale_and_shift()
    weight = conv.weight * scale.to(conv.weight.dtype)[:, None, None, None]  # (C_out, C_in, k, k)
    return F.conv2d(x, weight, shift.to(conv.weight.dtype), conv.stride, conv.padding, conv.dilation, conv.groups)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual (ResNet-18/34). Output width = `width`."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, dilation: int, norm_layer: type[nn.Module]):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, width, stride, dilation)
        self.bn1 = norm_layer(width)
        self.conv2 = _conv3x3(width, width, dilation=dilation)
        self.bn2 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, width, stride, norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else _conv_norm(x, self.downsample[0], self.downsample[1])
        out = self.relu(_conv_norm(x, self.conv1, self.bn1))
        out = _conv_norm(out, self.conv2, self.bn2)
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries stride and dilation), 1x1 expand x4, with a residual (ResNet-50/101)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, dilation: int, norm_layer: type[nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = norm_layer(width)
        self.conv2 = _conv3x3(width, width, stride, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = norm_layer(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, width * 4, stride, norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else _conv_norm(x, self.downsample[0], self.downsample[1])
        out = self.relu(_conv_norm(x, self.conv1, self.bn1))
        out = self.relu(_conv_norm(out, self.conv2, self.bn2))
        out = _conv_norm(out, self.conv3, self.bn3)
        return self.relu(out + residual)


def _downsample(in_channels: int, out_channels: int, stride: int, norm_layer: type[nn.Module]) -> nn.Module | None:
    """1x1 projection of the residual where the block changes stride or width, else None."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), norm_layer(out_channels))


class ResNet(nn.Module):
    """torchvision's ResNet without avgpool/fc: stem (conv1, bn1, maxpool) and layer1..layer4.

    Args:
        block: `BasicBlock` or `Bottleneck`.
        depths: blocks in layer1..layer4.
        base_width: stem channels and layer1 width (64 in torchvision); stage s has width base * 2**(s-1).
        dilation: DC5, as torchvision's replace_stride_with_dilation=[False, False, True]: layer4 has
            stride 1; its first block keeps dilation 1, the others use dilation 2.
        norm_layer: `FrozenBatchNorm2d` or `nn.BatchNorm2d`.
    """

    def __init__(
        self,
        block: type[nn.Module],
        depths: tuple[int, int, int, int],
        base_width: int = 64,
        dilation: bool = False,
        norm_layer: type[nn.Module] = FrozenBatchNorm2d,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = base_width
        self.out_channels = []  # C2..C5 widths
        for stage, num_blocks in enumerate(depths):
            width = base_width * 2**stage
            stride = 1 if stage == 0 or (stage == 3 and dilation) else 2
            later_dilation = 2 if stage == 3 and dilation else 1
            blocks = []
            for index in range(num_blocks):
                blocks.append(
                    block(
                        in_channels, width, stride if index == 0 else 1, 1 if index == 0 else later_dilation, norm_layer
                    )
                )
                in_channels = width * block.expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
            self.out_channels.append(in_channels)
        self.strides = [4, 8, 16, 16 if dilation else 32]  # C2..C5
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> [C2, C3, C4, C5], each (B, out_channels[i], H / strides[i], W / strides[i]) (ceil)."""
        x = self.maxpool(self.relu(_conv_norm(images, self.conv1, self.bn1)))
        features = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        return features


class Backbone(nn.Module):
    """ResNet body plus the downsampled padding masks of the levels the detector uses.

    Args:
        name: "resnet18" | "resnet34" (basic blocks) | "resnet50" | "resnet101" (bottlenecks).
        depths: blocks per stage.
        base_width: stem channels and layer1 width.
        return_interm_layers: True returns C3, C4, C5; False returns only C5.
        dilation: DC5 (C5 at stride 16).
        frozen_bn: FrozenBatchNorm2d instead of nn.BatchNorm2d.
        train_backbone: False freezes every parameter.
        freeze_stem_and_layer1: freeze conv1/bn1/layer1 (the paper's default with ImageNet weights).
    """

    def __init__(
        self,
        name: str,
        depths: tuple[int, int, int, int],
        base_width: int = 64,
        return_interm_layers: bool = True,
        dilation: bool = False,
        frozen_bn: bool = True,
        train_backbone: bool = True,
        freeze_stem_and_layer1: bool = True,
    ):
        super().__init__()
        block = BasicBlock if RESNETS[name][0] == "basic" else Bottleneck
        self.body = ResNet(block, depths, base_width, dilation, FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d)
        self.levels = [1, 2, 3] if return_interm_layers else [3]  # indices into C2..C5
        self.num_channels = [self.body.out_channels[i] for i in self.levels]
        self.strides = [self.body.strides[i] for i in self.levels]
        for name_, parameter in self.body.named_parameters():
            trainable_stage = name_.startswith(("layer2.", "layer3.", "layer4."))
            if not train_backbone or (freeze_stem_and_layer1 and not trainable_stage):
                parameter.requires_grad_(False)

    def forward(self, images: torch.Tensor, padding_mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Feature maps and their padding masks.

        Args:
            images: (B, 3, H, W) normalized.
            padding_mask: (B, H, W) bool, True = padding.

        Returns:
            [(feature (B, C_l, H_l, W_l), mask (B, H_l, W_l) bool True = padding)] for C3..C5 or C5;
            masks are nearest-neighbour downsampled from `padding_mask`, as in DETR.
        """
        features = self.body(images)
        return [(features[i], downsample_mask(padding_mask, features[i].shape[-2:])) for i in self.levels]


def downsample_mask(padding_mask: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """(B, H, W) bool -> (B, h, w) bool by nearest-neighbour interpolation (DETR's rule)."""
    return F.interpolate(padding_mask[None].float(), size=tuple(size)).to(torch.bool)[0]


def load_torchvision_weights(body: ResNet, path_or_state_dict: str | os.PathLike | dict) -> None:
    """Load a torchvision ImageNet ResNet file (e.g. resnet50-0676ba61.pth) into `body`, strictly.

    `fc.*` is dropped, and `*.num_batches_tracked` too when `body` uses FrozenBatchNorm2d.

    Raises:
        ValueError: one line listing missing, unexpected and mis-shaped keys.
    """
    if isinstance(path_or_state_dict, dict):
        state_dict, source = path_or_state_dict, "state dict"
    else:
        state_dict, source = load_torch_file(path_or_state_dict), str(path_or_state_dict)
    own = body.state_dict()
    state_dict = {
        k: v
        for k, v in state_dict.items()
        if not k.startswith("fc.") and (k in own or not k.endswith("num_batches_tracked"))
    }
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mis_shaped = sorted(
        f"{k} {tuple(v.shape)} (expected {tuple(own[k].shape)})"
        for k, v in state_dict.items()
        if k in own and v.shape != own[k].shape
    )
    if missing or unexpected or mis_shaped:
        raise CheckpointError(
            f"{source}: not a torchvision ResNet of this shape: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), mis-shaped {mis_shaped[:5]}; "
            "pass the matching torchvision resnet file"
        )
    body.load_state_dict(state_dict)


def check_backbone(backbone: nn.Module, num_feature_levels: int) -> nn.Module:
    """`backbone` if it fulfils the backbone contract (above) for a model of `num_feature_levels` levels, else a
    ConfigError saying what is missing."""
    name = type(backbone).__name__
    if not isinstance(backbone, nn.Module):
        raise ConfigError(
            f"backbone must be an nn.Module with num_channels, strides and forward(images, padding_mask); got {name}"
        )
    for attribute in ("num_channels", "strides"):
        values = getattr(backbone, attribute, None)
        if not isinstance(values, (list, tuple)) or not values or not all(isinstance(v, int) and v > 0 for v in values):
            raise ConfigError(
                f"backbone {name}.{attribute} = {values!r}; it must be a non-empty list of positive ints, "
                "one per returned feature level"
            )
    if len(backbone.num_channels) != len(backbone.strides):
        raise ConfigError(
            f"backbone {name} has {len(backbone.num_channels)} num_channels but {len(backbone.strides)} "
            "strides; give one of each per returned level"
        )
    if len(backbone.num_channels) > num_feature_levels:
        raise ConfigError(
            f"backbone {name} returns {len(backbone.num_channels)} levels, more than "
            f"num_feature_levels={num_feature_levels}; raise num_feature_levels or return fewer"
        )
    return backbone
