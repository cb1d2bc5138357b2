"""Sine positional encodings: of feature-map pixels (DETR's) and of boxes (two-stage queries).

The learnable per-level embedding that is added to the pixel encoding lives in the transformer
(`transformer.level_embed`), next to the flattening of the levels.
"""

from __future__ import annotations

import math

import torch


def _sine_features(positions: torch.Tensor, num_feats: int, temperature: float) -> torch.Tensor:
    """(...,) float32 positions -> (..., num_feats): [sin(p / t_0), cos(p / t_0), sin(p / t_1), cos(p / t_1), ...].

    t_k = temperature ** (2k / num_feats), as in "Attention Is All You Need".
    """
    exponents = 2 * (torch.arange(num_feats, dtype=torch.float32, device=positions.device) // 2) / num_feats
    angles = positions[..., None] / temperature**exponents  # (..., num_feats)
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_position_encoding(
    padding_mask: torch.Tensor,
    num_feats: int,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
    offset: float = 0.5,
) -> torch.Tensor:
    """DETR's normalized 2-D sine encoding of every pixel, counting only valid (unpadded) pixels.

    Position along each axis is the count of valid pixels up to and including this one, minus `offset`,
    divided by the valid extent of that row/column (+1e-6), times `scale`. Deformable DETR subtracts 0.5
    (pixel centres of the valid region map to (0, 2*pi)); DETR subtracts nothing (they map to (0, 2*pi]).

    Args:
        padding_mask: (B, H, W) bool, True = padding.
        num_feats: features per axis (d_model / 2); must be even.
        temperature: frequency base, 10000 as in DETR.
        scale: 2*pi as in DETR.
        offset: 0.5 as in Deformable DETR (the default), 0.0 as in DETR.

    Returns:
        (B, 2 * num_feats, H, W) float32: channels [y features, x features].
    """
    valid = (~padding_mask).to(torch.float32)
    y_embed = valid.cumsum(1)  # (B, H, W)
    x_embed = valid.cumsum(2)  # (B, H, W)
    eps = 1e-6  # as DETR
    y_embed = (y_embed - offset) / (y_embed[:, -1:, :] + eps) * scale
    x_embed = (x_embed - offset) / (x_embed[:, :, -1:] + eps) * scale
    encoding = torch.cat(
        (_sine_features(y_embed, num_feats, temperature), _sine_features(x_embed, num_feats, temperature)), dim=-1
    )  # (B, H, W, 2*num_feats)
    return encoding.permute(0, 3, 1, 2)  # (B, 2*num_feats, H, W)


def sine_box_encoding(
    boxes_cxcywh: torch.Tensor, num_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> torch.Tensor:
    """Sine encoding of each box coordinate, concatenated (the two-stage query position input).

    Args:
        boxes_cxcywh: (B, Lq, 4) normalized to [0, 1].
        num_feats: features per coordinate (d_model / 2).

    Returns:
        (B, Lq, 4 * num_feats) float32, coordinate-major: [cx features, cy, w, h].
    """
    return _sine_features(boxes_cxcywh.float() * scale, num_feats, temperature).flatten(-2)
