"""Deformable transformer decoder: object queries attend to each other, then sample the encoder memory.

Each layer: self-attention (nn.MultiheadAttention, query position added to queries and keys) ->
add -> LayerNorm -> deformable cross-attention around the query's reference point/box -> add ->
LayerNorm -> FFN -> add -> LayerNorm. With iterative box refinement each layer's box head moves
the reference box that the next layer samples around.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deformable_detr.models.deformable_attention import MultiScaleDeformableAttention


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """log(x / (1 - x)) with x clamped to [0, 1] and both terms to >= eps (1e-5, as the reference code)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class DeformableDecoderLayer(nn.Module):
    """Query self-attention, multi-scale deformable cross-attention into the memory, FFN.

    Args:
        d_model: C.
        n_levels, n_heads, n_points: L, M, P of the cross-attention (M also for self-attention).
        dim_feedforward: FFN hidden width.
        dropout: inside both attentions' outputs and the FFN (and on self-attention weights, as the
            reference code's nn.MultiheadAttention).
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
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.dropout_self_attn = nn.Dropout(dropout)
        self.norm_self_attn = nn.LayerNorm(d_model)
        self.cross_attn = MultiScaleDeformableAttention(d_model, n_levels, n_heads, n_points, backend=backend)
        self.dropout_cross_attn = nn.Dropout(dropout)
        self.norm_cross_attn = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout_hidden = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout_ffn = nn.Dropout(dropout)
        self.norm_ffn = nn.LayerNorm(d_model)

    def forward(
        self,
        target: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        memory: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        padding_mask: torch.Tensor | None,
        self_attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One decoder layer.

        Args:
            target: (B, Lq, C) query content.
            query_pos: (B, Lq, C) query position, added to self-attention queries/keys and cross-attention queries.
            reference_points: (B, Lq, L, 2) points (x, y) or (B, Lq, L, 4) boxes (cx, cy, w, h), in [0, 1]
                over each level's padded map.
            memory: (B, S, C) encoder output.
            spatial_shapes: (L, 2) int64.
            level_start_index: (L,) int64.
            padding_mask: (B, S) bool, True = padding; None = all valid.
            self_attn_mask: (Lq, Lq) bool, True = query i may not attend to query j; None = all see all.

        Returns:
            (B, Lq, C).
        """
        query = target + query_pos
        attended = self.self_attn(query, query, target, attn_mask=self_attn_mask, need_weights=False)[0]  # (B, Lq, C)
        target = self.norm_self_attn(target + self.dropout_self_attn(attended))
        attended = self.cross_attn(
            target + query_pos,
            reference_points,
            memory,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            padding_mask=padding_mask,
        )
        target = self.norm_cross_attn(target + self.dropout_cross_attn(attended))
        hidden = self.dropout_hidden(F.relu(self.linear1(target)))  # (B, Lq, dim_feedforward)
        return self.norm_ffn(target + self.dropout_ffn(self.linear2(hidden)))


class DeformableDecoder(nn.Module):
    """A stack of `DeformableDecoderLayer`s, optionally refining the reference boxes layer by layer."""

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
            DeformableDecoderLayer(
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
        target: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        memory: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        valid_ratios: torch.Tensor,
        padding_mask: torch.Tensor | None,
        box_heads: nn.ModuleList | None = None,
        self_attn_mask: torch.Tensor | None = None,
        look_forward_twice: bool = False,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Decode the queries.

        Args:
            target: (B, Lq, C) initial query content.
            query_pos: (B, Lq, C) query position.
            reference_points: (B, Lq, 2) points (x, y) or (B, Lq, 4) boxes (cx, cy, w, h), normalized to the
                valid image region.
            memory: (B, S, C) encoder output.
            spatial_shapes: (L, 2) int64.
            level_start_index: (L,) int64.
            valid_ratios: (B, L, 2) (w, h) valid fraction per level.
            padding_mask: (B, S) bool, True = padding; None = all valid.
            box_heads: with iterative refinement, head i (C -> 4 box logits delta) moves the reference after
                layer i: new = sigmoid(delta + inverse_sigmoid(reference)), detached (only x, y for 2-d
                points, which then become 4-d boxes). None keeps the references fixed.
            self_attn_mask: (Lq, Lq) bool, True = may not attend (e.g. matching queries may not see
                denoising queries); None = every query sees every query.
            look_forward_twice: DINO's look forward twice: the reference returned for layer i + 1 is the
                refined box of layer i *before* the detach, so layer i + 1's box loss also trains layer i's
                box head. Values are unchanged; layers still sample around the detached box.

        Returns:
            hidden_states: per layer, (B, Lq, C).
            reference_points: per layer, the (B, Lq, 2 | 4) reference that layer sampled around (and that
                its box prediction is relative to), normalized to the valid image region.
        """
        hidden_states, references = [], []
        returned_reference = reference_points  # what the layer's box prediction is relative to
        for index, layer in enumerate(self.layers):
            ratios = valid_ratios if reference_points.shape[-1] == 2 else torch.cat((valid_ratios, valid_ratios), -1)
            sampled_reference = reference_points[:, :, None] * ratios[:, None]  # (B, Lq, L, 2 | 4)
            target = layer(
                target,
                query_pos,
                sampled_reference,
                memory,
                spatial_shapes=spatial_shapes,
                level_start_index=level_start_index,
                padding_mask=padding_mask,
                self_attn_mask=self_attn_mask,
            )
            hidden_states.append(target)
            references.append(returned_reference)
            if box_heads is not None:
                box_delta = box_heads[index](target)  # (B, Lq, 4)
                if reference_points.shape[-1] == 4:
                    refined = box_delta + inverse_sigmoid(reference_points)
                else:
                    refined = torch.cat(
                        (box_delta[..., :2] + inverse_sigmoid(reference_points), box_delta[..., 2:]), -1
                    )
                refined = refined.sigmoid()
                reference_points = refined.detach()
                returned_reference = refined if look_forward_twice else reference_points
        return hidden_states, references
