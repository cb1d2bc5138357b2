"""Where the decoder's queries come from: learned embeddings, or the encoder's top-scoring proposals.

Three ways to start the decoder (`ModelConfig.query_selection`):
    "static": learned queries; each is [position | content] and its reference point is a linear map of
        the position (the paper's one-stage model).
    "pure":   two-stage (paper, appendix A.4): the top-K encoder proposals give the reference boxes, and
        their sine encoding, through `pos_trans`, gives both the query position and the content.
    "mixed":  DINO's mixed query selection: the top-K proposals give the reference boxes and the query
        position only; the content queries stay learned.
Extra queries (denoising, hybrid one-to-many) are appended through `Queries.cat` and kept apart from the
matching queries by the decoder's self-attention mask (`self_attention_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deformable_detr.models.position_encoding import sine_box_encoding


@dataclass
class Queries:
    """The decoder's input queries.

    target: (B, Lq, C) content.
    query_pos: (B, Lq, C) position, added to the self-attention queries/keys and cross-attention queries.
    reference_points: (B, Lq, 2) points (x, y) or (B, Lq, 4) boxes (cx, cy, w, h), in [0, 1] of the valid
        image region.
    """

    target: torch.Tensor
    query_pos: torch.Tensor
    reference_points: torch.Tensor

    def __len__(self) -> int:
        return self.target.shape[1]

    def cat(self, other: Queries) -> Queries:
        """These queries followed by `other` along Lq (the reference dimensions must agree)."""
        if self.reference_points.shape[-1] != other.reference_points.shape[-1]:
            raise ValueError(
                f"cannot join queries with {self.reference_points.shape[-1]}-d and "
                f"{other.reference_points.shape[-1]}-d reference points"
            )
        return Queries(
            torch.cat((self.target, other.target), 1),
            torch.cat((self.query_pos, other.query_pos), 1),
            torch.cat((self.reference_points, other.reference_points), 1),
        )


def static_queries(query_embed: torch.Tensor, reference_head: nn.Module, batch: int) -> Queries:
    """Learned queries, the same for every image.

    Args:
        query_embed: (Lq, 2C) [position | content].
        reference_head: Linear C -> 2 mapping a query position to its reference point (before sigmoid).
        batch: B.

    Returns:
        `Queries` with (B, Lq, 2) reference points.
    """
    d_model = query_embed.shape[1] // 2
    query_pos, target = query_embed.split(d_model, -1)  # (Lq, C) each
    query_pos = query_pos[None].expand(batch, -1, -1)  # (B, Lq, C)
    target = target[None].expand(batch, -1, -1)  # (B, Lq, C)
    return Queries(target, query_pos, reference_head(query_pos).sigmoid())


def top_proposals(enc_logits: torch.Tensor, enc_box_logits: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` encoder proposals with the highest class-0 logit, detached (the paper's top-K).

    Args:
        enc_logits: (B, S, K) class logits of every proposal (the proposal head is trained class-agnostic,
            every target labelled 0, so the first logit ranks objectness).
        enc_box_logits: (B, S, 4) inverse-sigmoid proposal boxes.
        count: K' <= S proposals to keep, in descending score order.

    Returns:
        (B, K', 4) inverse-sigmoid boxes, detached.
    """
    top = torch.topk(enc_logits[..., 0], count, dim=1)[1]  # (B, K')
    return torch.gather(enc_box_logits, 1, top[..., None].expand(-1, -1, 4)).detach()  # (B, K', 4)


def box_queries(
    boxes_cxcywh: torch.Tensor, pos_trans: nn.Module, pos_trans_norm: nn.Module, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Position and content of queries anchored on the given boxes (two-stage's sine -> Linear -> LayerNorm).

    Args:
        boxes_cxcywh: (B, N, 4) in [0, 1].
        pos_trans, pos_trans_norm: Linear 2C -> 2C and LayerNorm(2C).
        dtype: of the sine encoding (the memory's dtype).

    Returns:
        query_pos (B, N, C) and content (B, N, C).
    """
    d_model = pos_trans.in_features // 2
    box_encoding = sine_box_encoding(boxes_cxcywh, d_model // 2).to(dtype)  # (B, N, 2C)
    query_pos, content = pos_trans_norm(pos_trans(box_encoding)).split(d_model, -1)
    return query_pos, content


def proposal_queries(
    top_box_logits: torch.Tensor,
    pos_trans: nn.Module,
    pos_trans_norm: nn.Module,
    dtype: torch.dtype,
    content_embed: torch.Tensor | None = None,
) -> Queries:
    """Queries anchored on the selected proposals: "pure" (content from the boxes) or "mixed" (learned content).

    Args:
        top_box_logits: (B, Lq, 4) inverse-sigmoid boxes from `top_proposals`.
        pos_trans, pos_trans_norm: the two-stage box embedding (see `box_queries`).
        dtype: of the box encoding.
        content_embed: "mixed": (Lq, C) learned content queries; None = "pure".

    Returns:
        `Queries` with (B, Lq, 4) reference boxes.
    """
    reference_points = top_box_logits.sigmoid()
    query_pos, target = box_queries(reference_points, pos_trans, pos_trans_norm, dtype)
    if content_embed is not None:
        target = content_embed[None].expand(query_pos.shape[0], -1, -1).to(query_pos.dtype)  # (B, Lq, C)
    return Queries(target, query_pos, reference_points)


def self_attention_mask(
    num_one2one: int,
    num_one2many: int = 0,
    denoising_mask: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """Which query may not attend to which, for queries laid out [denoising | one-to-one | one-to-many].

    One-to-one (matching) queries see only each other; one-to-many (hybrid) queries only each other;
    denoising queries see the one-to-one queries and whatever `denoising_mask` allows among themselves
    (their own group), so no ground truth leaks into the matching queries.

    Args:
        num_one2one: Lq matching queries.
        num_one2many: hybrid-matching queries after them (0 = none).
        denoising_mask: (Ld, Ld) bool, True = blocked, among the denoising queries; None = no denoising.
        device: of the mask.

    Returns:
        (Ld + Lq + Lo, Ld + Lq + Lo) bool, True = may not attend (nn.MultiheadAttention's convention);
        None when there is only one kind of query (nothing to block).
    """
    num_denoising = 0 if denoising_mask is None else denoising_mask.shape[0]
    if num_denoising == 0 and num_one2many == 0:
        return None
    total = num_denoising + num_one2one + num_one2many
    mask = torch.zeros(total, total, dtype=torch.bool, device=device)
    matching = slice(num_denoising, num_denoising + num_one2one)
    one2many = slice(num_denoising + num_one2one, total)
    mask[num_denoising:, :num_denoising] = True  # matching and hybrid queries never see denoising ones
    mask[matching, one2many] = True
    mask[one2many, matching] = True
    if num_denoising:
        mask[:num_denoising, :num_denoising] = denoising_mask.to(device)
        mask[:num_denoising, one2many] = True
    return mask
