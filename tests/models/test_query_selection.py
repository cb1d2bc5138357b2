"""Query selection and the decoder seams: top-K vs a sort, the self-attention mask, extra queries that
cannot leak into the matching queries, look-forward-twice gradients."""

import pytest
import torch
from torch import nn

from deformable_detr.models.mlp import MLP
from deformable_detr.models.position_encoding import sine_position_encoding
from deformable_detr.models.query_selection import self_attention_mask, top_proposals
from deformable_detr.models.transformer import DeformableTransformer


def test_top_proposals_are_the_highest_class_0_scores_in_order():
    torch.manual_seed(0)
    logits = torch.randn(2, 20, 3)
    boxes = torch.randn(2, 20, 4, requires_grad=True)
    top = top_proposals(logits, boxes, 5)
    for b in range(2):
        order = sorted(range(20), key=lambda i: -float(logits[b, i, 0]))[:5]
        torch.testing.assert_close(top[b], boxes[b, order].detach(), rtol=0, atol=0)
    assert not top.requires_grad


def test_self_attention_mask_layout():
    denoising = torch.tensor([[False, False, True], [False, False, True], [True, True, False]])  # groups {0,1}, {2}
    mask = self_attention_mask(num_one2one=2, num_one2many=2, denoising_mask=denoising)
    assert mask.shape == (7, 7) and mask.dtype == torch.bool
    expected = torch.zeros(7, 7, dtype=torch.bool)
    expected[:3, :3] = denoising
    expected[3:, :3] = True  # matching and hybrid queries never see denoising queries
    expected[:3, 5:] = True  # denoising queries do not see hybrid ones
    expected[3:5, 5:] = True
    expected[5:, 3:5] = True  # one-to-one and one-to-many apart
    assert torch.equal(mask, expected)
    assert self_attention_mask(num_one2one=4) is None
    assert torch.equal(self_attention_mask(2, 1), torch.tensor([[0, 0, 1], [0, 0, 1], [1, 1, 0]], dtype=torch.bool))


def _transformer(two_stage, box_embedding=False):
    torch.manual_seed(0)
    transformer = DeformableTransformer(
        32, 2, 1, 2, 64, 0.0, 2, 2, 2, two_stage, num_queries=5, box_embedding=box_embedding
    ).eval()
    heads = (nn.Linear(32, 3), MLP(32, 32, 4, 3))
    box_heads = nn.ModuleList(MLP(32, 32, 4, 3) for _ in range(2))
    sources = [torch.randn(1, 32, 6, 7), torch.randn(1, 32, 3, 4)]
    masks = [torch.zeros(1, 6, 7, dtype=torch.bool), torch.zeros(1, 3, 4, dtype=torch.bool)]
    positions = [sine_position_encoding(m, 16) for m in masks]
    return transformer, heads, box_heads, (sources, masks, positions)


@pytest.mark.parametrize("two_stage", [False, True])
def test_blocked_extra_queries_do_not_change_the_matching_queries(two_stage):
    """The oracle: the same transformer without the extra queries."""
    transformer, heads, box_heads, inputs = _transformer(two_stage, box_embedding=not two_stage)
    query_embed = None if two_stage else torch.randn(5, 64)
    kwargs = dict(query_embed=query_embed, box_heads=box_heads, proposal_heads=heads if two_stage else None)
    extra = (torch.randn(1, 3, 32), torch.rand(1, 3, 4) * 0.5 + 0.25)
    mask = self_attention_mask(5, denoising_mask=torch.zeros(3, 3, dtype=torch.bool))
    with torch.no_grad():
        alone = transformer(*inputs, **kwargs)
        joined = transformer(*inputs, **kwargs, extra_queries=extra, self_attn_mask=mask)
        unmasked = transformer(*inputs, **kwargs, extra_queries=extra)
    for a, j, u in zip(alone.hidden_states, joined.hidden_states, unmasked.hidden_states):
        assert j.shape == (1, 8, 32)
        torch.testing.assert_close(j[:, 3:], a, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(u[:, 3:], a, atol=1e-3)  # without the mask the extras do leak
    assert joined.reference_points[0].shape[-1] == (4 if two_stage else 2)
    torch.testing.assert_close(joined.reference_points[0][:, :3], extra[1] if two_stage else extra[1][..., :2])


def test_look_forward_twice_changes_gradients_not_values():
    transformer, heads, box_heads, inputs = _transformer(True)

    def run(look_forward_twice):
        for p in box_heads.parameters():
            p.grad = None
        out = transformer(*inputs, box_heads=box_heads, proposal_heads=heads, look_forward_twice=look_forward_twice)
        # the box prediction of the last layer, relative to its reference, as the detector computes it
        last = box_heads[1](out.hidden_states[1]) + torch.logit(out.reference_points[1].clamp(1e-5, 1 - 1e-5))
        last.sigmoid().sum().backward()
        return out, box_heads[0].layers[-1].weight.grad

    plain, grad_plain = run(False)
    twice, grad_twice = run(True)
    for a, b in zip(plain.reference_points, twice.reference_points):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Without it, layer 1's loss reaches layer 0's box head only through the detached sampling: no gradient.
    assert grad_plain is None or grad_plain.abs().sum() == 0
    assert grad_twice is not None and grad_twice.abs().sum() > 0
