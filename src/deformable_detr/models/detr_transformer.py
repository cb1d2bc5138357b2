"""DETR's transformer: post-norm encoder and decoder layers with global multi-head attention (sine positions
added to queries and keys at every layer), as facebookresearch/detr's `transformer.py`. Shapes: B batch,
S = H_5 * W_5 positions of the C5 map, C = d_model, Lq queries.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class EncoderLayer(nn.Module):
    """Post-norm: x = norm1(x + attn(x + pos, x + pos, x)); x = norm2(x + ffn(x))."""

    def __init__(self, d_model: int, n_heads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """src, pos (B, S, C); padding_mask (B, S) bool True = padding -> (B, S, C)."""
        query = src + pos
        attended = self.self_attn(query, query, src, key_padding_mask=padding_mask, need_weights=False)[0]
        src = self.norm1(src + self.dropout(attended))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class DecoderLayer(nn.Module):
    """Post-norm: self-attention among queries, cross-attention to the encoder memory, FFN."""

    def __init__(self, d_model: int, n_heads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm_self_attn, self.norm_cross_attn, self.norm_ffn = (nn.LayerNorm(d_model) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        target: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        padding_mask: torch.Tensor,
    ) -> torch.Tensor:
        """target, query_pos (B, Lq, C); memory, pos (B, S, C); padding_mask (B, S) -> (B, Lq, C)."""
        query = target + query_pos
        attended = self.self_attn(query, query, target, need_weights=False)[0]
        target = self.norm_self_attn(target + self.dropout(attended))
        attended = self.cross_attn(
            target + query_pos, memory + pos, memory, key_padding_mask=padding_mask, need_weights=False
        )[0]
        target = self.norm_cross_attn(target + self.dropout(attended))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(target))))
        return self.norm_ffn(target + self.dropout(ffn))


class Encoder(nn.Module):
    """A stack of post-norm encoder layers (no final norm, as DETR)."""

    def __init__(self, num_layers: int, layer: EncoderLayer):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, src: torch.Tensor, pos: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """src, pos (B, S, C); padding_mask (B, S) -> memory (B, S, C)."""
        for layer in self.layers:
            src = layer(src, pos, padding_mask)
        return src


class Decoder(nn.Module):
    """A stack of post-norm decoder layers; the shared final LayerNorm is applied to every layer's output."""

    def __init__(self, num_layers: int, layer: DecoderLayer, d_model: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self, query_pos: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, padding_mask: torch.Tensor
    ) -> torch.Tensor:
        """query_pos (B, Lq, C); memory, pos (B, S, C) -> (num_layers, B, Lq, C) normalized hidden states."""
        target = torch.zeros_like(query_pos)  # DETR starts the content from zeros
        hidden_states = []
        for layer in self.layers:
            target = layer(target, query_pos, memory, pos, padding_mask)
            hidden_states.append(self.norm(target))
        return torch.stack(hidden_states)


class DetrTransformer(nn.Module):
    """DETR's encoder-decoder; parameters with more than one dimension are xavier-uniform (as DETR)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        num_encoder_layers: int,
        num_decoder_layers: int,
        dim_feedforward: int,
        dropout: float,
    ):
        super().__init__()
        self.encoder = Encoder(num_encoder_layers, EncoderLayer(d_model, n_heads, dim_feedforward, dropout))
        self.decoder = Decoder(num_decoder_layers, DecoderLayer(d_model, n_heads, dim_feedforward, dropout), d_model)
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)

    def forward(
        self, source: torch.Tensor, padding_mask: torch.Tensor, pos: torch.Tensor, query_embed: torch.Tensor
    ) -> torch.Tensor:
        """Encode the feature map, decode the queries.

        Args:
            source: (B, C, H_5, W_5) projected C5 map. padding_mask: (B, H_5, W_5) bool, True = padding.
            pos: (B, C, H_5, W_5) sine positions. query_embed: (Lq, C) learned query positions.

        Returns:
            (num_decoder_layers, B, Lq, C) hidden states of every decoder layer.
        """
        src = source.flatten(2).transpose(1, 2)  # (B, S, C)
        pos = pos.flatten(2).transpose(1, 2)  # (B, S, C)
        mask = padding_mask.flatten(1)  # (B, S)
        memory = self.encoder(src, pos, mask)
        query_pos = query_embed[None].expand(src.shape[0], -1, -1)  # (B, Lq, C)
        return self.decoder(query_pos, memory, pos, mask)
