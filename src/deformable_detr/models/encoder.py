"""Deformable transformer encoder: every pixel of every level attends to a few sampled points.

Post-norm layers (attention -> add -> LayerNorm -> FFN -> add -> LayerNorm), ReLU, dropout, as
the paper's reference implementation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deformable_detr.models.deformable_attention import MultiScaleDeformableAttention


class DeformableEncoderLayer(nn.Module):
    """Multi-scale deformable self-attention over the flattened levels, then a 2-layer FFN.

    Args:
        d_model: C.
        n_levels, n_heads, n_points: L, M, P of the attention.
        dim_feedforward: FFN hidden width.
        dropout: after attention, inside the FFN and after it.
        backend: attention operator backend.
    """

    def __init__(
        self,
        d_model: int,
        n_levels: int,
        n_heads: int,
        n_points: int,
        dim_feedforward: int,
        dropout: float,
        backend: str = "auto",
    ):
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(d_model, n_levels, n_heads, n_points, backend=backend)
        self.dropout_attn = nn.Dropout(dropout)
        self.norm_attn = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout_hidden = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout_ffn = nn.Dropout(dropout)
        self.norm_ffn = nn.LayerNorm(d_model)

    def forward(
        self,
        features: torch.Tensor,
        position: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """One encoder layer.

        Args:
            features: (B, S, C) all levels flattened level by level.
            position: (B, S, C) sine position + level embedding, added to the attention query only.
            reference_points: (B, S, L, 2) each pixel's centre (x, y) in [0, 1], as seen on every level.
            spatial_shapes: (L, 2) int64 (H_l, W_l).
            level_start_index: (L,) int64.
            padding_mask: (B, S) bool, True = padding; None = all valid.

        Returns:
            (B, S, C).
        """
        attended = self.self_attn(
            features + position, reference_points, features, spatial_shapes, level_start_index, padding_mask
        )
        features = self.norm_attn(features + self.dropout_attn(attended))
        hidden = self.dropout_hidden(F.relu(self.linear1(features)))  # (B, S, dim_feedforward)
        return self.norm_ffn(features + self.dropout_ffn(self.linear2(hidden)))


def encoder_reference_points(spatial_shapes: list[tuple[int, int]], valid_ratios: torch.Tensor) -> torch.Tensor:
    """The centre of every pixel of every level, normalized so each level's valid region spans [0, 1].

    A pixel (i, j) of level l sits at ((j + 0.5) / (r_x,l W_l), (i + 0.5) / (r_y,l H_l)), r = valid ratio
    of its own level; it is then looked up on every level m at that position times r_m (so the same
    image point is sampled on each level's padded map).

    Args:
        spatial_shapes: [(H_l, W_l)] per level.
        valid_ratios: (B, L, 2) (w, h) fraction of each level that is not padding.

    Returns:
        (B, S, L, 2) (x, y), in [0, 1] over each level's padded map.
    """
    dtype, device = valid_ratios.dtype, valid_ratios.device
    points = []
    for level, (height, width) in enumerate(spatial_shapes):
        # arange + 0.5, not linspace: the ONNX export of a 1-step linspace divides by zero on 1-pixel levels.
        y, x = torch.meshgrid(
            torch.arange(height, dtype=dtype, device=device) + 0.5,
            torch.arange(width, dtype=dtype, device=device) + 0.5,
            indexing="ij",
        )
        y = y.reshape(-1)[None] / (valid_ratios[:, None, level, 1] * height)  # (B, H_l*W_l)
        x = x.reshape(-1)[None] / (valid_ratios[:, None, level, 0] * width)  # (B, H_l*W_l)
        points.append(torch.stack((x, y), -1))  # (B, H_l*W_l, 2)
    points = torch.cat(points, 1)  # (B, S, 2)
    return points[:, :, None] * valid_ratios[:, None]  # (B, S, L, 2)


class DeformableEncoder(nn.Module):
    """A stack of `DeformableEncoderLayer`s sharing the pixel reference points."""

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        n_levels: int,
        n_heads: int,
        n_points: int,
        dim_feedforward: int,
        dropout: float,
        backend: str = "auto",
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(
                d_model,
                n_levels=n_levels,
                n_heads=n_heads,
                n_points=n_points,
                dim_feedforward=dim_feedforward,
                dropout=dropout,
                backend=backend,
            )
            for _ in range(num_layers)
        )

    def forward(
        self,
        features: torch.Tensor,
        position: torch.Tensor,
        spatial_shapes_list: list[tuple[int, int]],
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        valid_ratios: torch.Tensor,
        padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Encode the flattened multi-scale features.

        Args:
            features: (B, S, C) projected backbone features, flattened level by level.
            position: (B, S, C) sine position + level embedding.
            spatial_shapes_list: [(H_l, W_l)] as Python ints.
            spatial_shapes: (L, 2) int64, the same as a tensor.
            level_start_index: (L,) int64.
            valid_ratios: (B, L, 2) (w, h) valid fraction per level.
            padding_mask: (B, S) bool, True = padding; None = all valid.

        Returns:
            memory (B, S, C).
        """
        reference_points = encoder_reference_points(spatial_shapes_list, valid_ratios)  # (B, S, L, 2)
        for layer in self.layers:
            features = layer(
                features,
                position=position,
                reference_points=reference_points,
                spatial_shapes=spatial_shapes,
                level_start_index=level_start_index,
                padding_mask=padding_mask,
            )
        return features
