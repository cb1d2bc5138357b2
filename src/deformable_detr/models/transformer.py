"""Deformable transformer: flatten the levels, encode, pick the queries (learned or two-stage), decode.

Two-stage (paper, appendix A.4): every encoder pixel proposes a box around itself (size 0.05 * 2^l on
level l); a class head scores them, a box head refines them, and the top `num_queries` proposals
become the decoder's reference boxes and, through their sine encoding, its queries (see
`query_selection.py` for the ways queries are chosen).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deformable_detr.errors import ModelInputError
from deformable_detr.models.decoder import DeformableDecoder
from deformable_detr.models.deformable_attention import MultiScaleDeformableAttention
from deformable_detr.models.encoder import DeformableEncoder
from deformable_detr.models.query_selection import Queries, box_queries, proposal_queries, static_queries, top_proposals


@dataclass
class TransformerOutput:
    """What the detection heads need.

    hidden_states: per decoder layer, (B, Lq, C).
    reference_points: per decoder layer, the (B, Lq, 2 | 4) reference its boxes are relative to.
    enc_logits: two-stage only, (B, S, K) class logits of every encoder proposal.
    enc_box_logits: two-stage only, (B, S, 4) inverse-sigmoid boxes of every proposal (+inf where invalid).
    """

    hidden_states: list[torch.Tensor]
    reference_points: list[torch.Tensor]
    enc_logits: torch.Tensor | None = None
    enc_box_logits: torch.Tensor | None = None


def valid_ratios_of(padding_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, H_l, W_l) bool True = padding -> (B, 2) (w, h) fraction of valid columns/rows (first row/column)."""
    height, width = padding_mask.shape[-2:]
    valid_height = (~padding_mask[:, :, 0]).sum(1)  # (B,)
    valid_width = (~padding_mask[:, 0, :]).sum(1)  # (B,)
    return torch.stack((valid_width.to(dtype) / width, valid_height.to(dtype) / height), -1)


def encoder_proposals(
    padding_mask: torch.Tensor, spatial_shapes: list[tuple[int, int]], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """One box per encoder pixel: centred on it, 0.05 * 2^l wide and high on level l.

    Args:
        padding_mask: (B, S) bool, True = padding.
        spatial_shapes: [(H_l, W_l)].
        dtype: of the returned proposals.

    Returns:
        proposal_logits: (B, S, 4) inverse-sigmoid (cx, cy, w, h) normalized to the valid region;
            +inf where padded or where any coordinate is outside (0.01, 0.99).
        valid: (B, S, 1) bool, False where the proposal is set to +inf.
    """
    batch = padding_mask.shape[0]
    proposals = []
    start = 0
    for level, (height, width) in enumerate(spatial_shapes):
        level_mask = padding_mask[:, start : start + height * width].view(batch, height, width)
        valid_height = (~level_mask[:, :, 0]).sum(1)  # (B,)
        valid_width = (~level_mask[:, 0, :]).sum(1)  # (B,)
        y, x = torch.meshgrid(
            torch.arange(height, dtype=dtype, device=padding_mask.device),  # not linspace: see encoder
            torch.arange(width, dtype=dtype, device=padding_mask.device),
            indexing="ij",
        )
        grid = torch.stack((x, y), -1)  # (H_l, W_l, 2)
        valid_size = torch.stack((valid_width, valid_height), -1).view(batch, 1, 1, 2)
        centres = (grid[None] + 0.5) / valid_size  # (B, H_l, W_l, 2)
        sizes = torch.full_like(centres, 0.05 * 2.0**level)
        proposals.append(torch.cat((centres, sizes), -1).view(batch, height * width, 4))
        start += height * width
    proposals = torch.cat(proposals, 1)  # (B, S, 4)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)  # (B, S, 1)
    valid = valid & ~padding_mask[..., None]
    proposal_logits = torch.log(proposals / (1 - proposals)).masked_fill(~valid, float("inf"))
    return proposal_logits, valid


class DeformableTransformer(nn.Module):
    """Level embedding, encoder, query initialisation (learned or two-stage) and decoder.

    Args:
        d_model, n_heads, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout: sizes.
        num_feature_levels: L.
        enc_n_points, dec_n_points: sampling points per head and level.
        two_stage: queries from encoder proposals (adds enc_output/pos_trans layers) instead of
            learned reference points.
        num_queries: two-stage only: proposals kept.
        backend: attention operator backend.
        box_embedding: also give a one-stage transformer the `pos_trans` box embedding, so extra
            queries anchored on boxes (denoising) get a position (two-stage always has it).
    """

    def __init__(
        self,
        d_model: int = 256,
        n_heads: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
        dec_n_points: int = 4,
        two_stage: bool = False,
        num_queries: int = 300,
        backend: str = "auto",
        *,
        box_embedding: bool = False,
    ):
        super().__init__()
        self.d_model = d_model
        self.two_stage = two_stage
        self.num_queries = num_queries
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self.encoder = DeformableEncoder(
            num_layers=num_encoder_layers,
            d_model=d_model,
            n_levels=num_feature_levels,
            n_heads=n_heads,
            n_points=enc_n_points,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            backend=backend,
        )
        self.decoder = DeformableDecoder(
            num_layers=num_decoder_layers,
            d_model=d_model,
            n_levels=num_feature_levels,
            n_heads=n_heads,
            n_points=dec_n_points,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            backend=backend,
        )
        if two_stage:
            self.enc_output = nn.Linear(d_model, d_model)
            self.enc_output_norm = nn.LayerNorm(d_model)
        if two_stage or box_embedding:
            self.pos_trans = nn.Linear(2 * d_model, 2 * d_model)
            self.pos_trans_norm = nn.LayerNorm(2 * d_model)
        if not two_stage:
            self.reference_points = nn.Linear(d_model, 2)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """The reference code's init: xavier-uniform for every matrix outside the deformable attentions
        (which keep their own init), level_embed ~ N(0, 1)."""
        attention_params = {
            id(p) for m in self.modules() if isinstance(m, MultiScaleDeformableAttention) for p in m.parameters()
        }
        for parameter in self.parameters():
            if parameter.dim() > 1 and id(parameter) not in attention_params:
                nn.init.xavier_uniform_(parameter)
        if not self.two_stage:
            nn.init.constant_(self.reference_points.bias, 0.0)
        nn.init.normal_(self.level_embed)

    def forward(
        self,
        sources: list[torch.Tensor],
        masks: list[torch.Tensor],
        positions: list[torch.Tensor],
        query_embed: torch.Tensor | None = None,
        box_heads: nn.ModuleList | None = None,
        proposal_heads: tuple[nn.Module, nn.Module] | None = None,
        *,
        content_embed: torch.Tensor | None = None,
        num_queries: int | None = None,
        extra_queries: tuple[torch.Tensor, torch.Tensor] | None = None,
        self_attn_mask: torch.Tensor | None = None,
        look_forward_twice: bool = False,
    ) -> TransformerOutput:
        """Encode the levels and decode the queries.

        Args:
            sources: per level, (B, C, H_l, W_l) projected features.
            masks: per level, (B, H_l, W_l) bool, True = padding.
            positions: per level, (B, C, H_l, W_l) sine position encoding.
            query_embed: (Lq, 2C) learned queries, [position | content]; not with two-stage.
            box_heads: decoder box heads for iterative refinement (see `DeformableDecoder`), or None.
            proposal_heads: two-stage only: (class head C -> K, box head C -> 4) scoring and refining
                the encoder proposals.
            content_embed: two-stage only: (Lq, C) learned content queries ("mixed" query selection);
                None = content from the proposals ("pure").
            num_queries: two-stage only: proposals to keep (default: the constructor's `num_queries`).
            extra_queries: (content (B, Ld, C), boxes_cxcywh (B, Ld, 4)) queries placed before the
                selected ones, positioned by the `pos_trans` box embedding and anchored on the boxes
                (their centres for a one-stage transformer, whose references are points).
            self_attn_mask: (Ld + Lq, Ld + Lq) bool, True = may not attend, for the decoder's self-attention.
            look_forward_twice: see `DeformableDecoder`.

        Returns:
            `TransformerOutput`; hidden states and references cover [extra | selected] queries.
        """
        spatial_shapes_list = [tuple(source.shape[-2:]) for source in sources]
        memory_input = torch.cat([s.flatten(2).transpose(1, 2) for s in sources], 1)  # (B, S, C)
        padding_mask = torch.cat([m.flatten(1) for m in masks], 1)  # (B, S)
        position = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[level][None, None] for level, p in enumerate(positions)], 1
        )  # (B, S, C)
        if torch.jit.is_tracing():  # ONNX export: sizes are traced 0-d tensors; keep them dynamic in the graph
            spatial_shapes = torch.stack([torch._shape_as_tensor(s)[-2:] for s in sources]).to(memory_input.device)
        else:
            spatial_shapes = torch.as_tensor(
                spatial_shapes_list, dtype=torch.long, device=memory_input.device
            )  # (L, 2)
        level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))  # (L,)
        # Geometry in float32 at least (as the reference code), also under bf16 autocast.
        geometry_dtype = torch.promote_types(memory_input.dtype, torch.float32)
        valid_ratios = torch.stack([valid_ratios_of(m, geometry_dtype) for m in masks], 1)  # (B, L, 2)

        memory = self.encoder(
            memory_input,
            position=position,
            spatial_shapes_list=spatial_shapes_list,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            valid_ratios=valid_ratios,
            padding_mask=padding_mask,
        )  # (B, S, C)

        enc_logits = enc_box_logits = None
        if self.two_stage:
            if proposal_heads is None:
                raise ValueError("two-stage transformer needs proposal_heads=(class_head, box_head)")
            count = num_queries or self.num_queries
            if memory.shape[1] < count:
                raise ModelInputError(
                    f"two-stage: the image has {memory.shape[1]} feature pixels, fewer than "
                    f"num_queries={count}; use larger images or fewer queries"
                )
            enc_logits, enc_box_logits = self.score_proposals(
                memory, padding_mask, spatial_shapes_list, geometry_dtype, proposal_heads
            )
            queries = proposal_queries(
                top_proposals(enc_logits, enc_box_logits, count),
                self.pos_trans,
                self.pos_trans_norm,
                memory.dtype,
                content_embed,
            )
        else:
            if query_embed is None:
                raise ValueError("transformer needs query_embed (Lq, 2 * d_model) when not two-stage")
            queries = static_queries(query_embed, self.reference_points, memory.shape[0])
        if extra_queries is not None:
            queries = self.anchored_queries(*extra_queries, dtype=memory.dtype).cat(queries)

        hidden_states, references = self.decoder(
            queries.target,
            query_pos=queries.query_pos,
            reference_points=queries.reference_points,
            memory=memory,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            valid_ratios=valid_ratios,
            padding_mask=padding_mask,
            box_heads=box_heads,
            self_attn_mask=self_attn_mask,
            look_forward_twice=look_forward_twice,
        )
        return TransformerOutput(hidden_states, references, enc_logits, enc_box_logits)

    def score_proposals(
        self,
        memory: torch.Tensor,
        padding_mask: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
        dtype: torch.dtype,
        proposal_heads: tuple[nn.Module, nn.Module],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two-stage: class logits and refined boxes of every encoder proposal.

        Args:
            memory: (B, S, C) encoder output.
            padding_mask: (B, S) bool, True = padding.
            spatial_shapes: [(H_l, W_l)].
            dtype: of the proposal geometry (float32 at least).
            proposal_heads: (class head C -> K, box head C -> 4).

        Returns:
            enc_logits (B, S, K) and enc_box_logits (B, S, 4) inverse-sigmoid (+inf where invalid).
        """
        class_head, box_head = proposal_heads
        proposal_logits, valid = encoder_proposals(padding_mask, spatial_shapes, dtype)
        proposal_features = self.enc_output_norm(self.enc_output(memory.masked_fill(~valid, 0.0)))  # (B, S, C)
        return class_head(proposal_features), box_head(proposal_features) + proposal_logits

    def anchored_queries(self, content: torch.Tensor, boxes_cxcywh: torch.Tensor, dtype: torch.dtype) -> Queries:
        """Queries with the given content, positioned by the box embedding and anchored on the boxes.

        Args:
            content: (B, N, C).
            boxes_cxcywh: (B, N, 4) in [0, 1].
            dtype: of the box encoding.

        Returns:
            `Queries` with (B, N, 4) reference boxes, or (B, N, 2) box centres for a one-stage transformer.
        """
        if not hasattr(self, "pos_trans"):
            raise ValueError(
                "queries anchored on boxes need the box embedding: build the transformer with "
                "two_stage=True or box_embedding=True"
            )
        query_pos, _ = box_queries(boxes_cxcywh, self.pos_trans, self.pos_trans_norm, dtype)
        reference_points = boxes_cxcywh if self.two_stage else boxes_cxcywh[..., :2]
        return Queries(content, query_pos, reference_points)
