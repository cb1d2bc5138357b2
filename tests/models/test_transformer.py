"""Deformable transformer: reference points, valid ratios, proposals (hand-worked), padding invariance."""

import math

import pytest
import torch
from torch import nn

from deformable_detr.models.decoder import inverse_sigmoid
from deformable_detr.models.encoder import encoder_reference_points
from deformable_detr.models.mlp import MLP
from deformable_detr.models.position_encoding import sine_position_encoding
from deformable_detr.models.transformer import DeformableTransformer, encoder_proposals, valid_ratios_of


def test_valid_ratios_read_the_first_row_and_column():
    mask = torch.zeros(2, 4, 5, dtype=torch.bool)
    mask[1, 3:, :] = True  # 3 valid rows
    mask[1, :, 2:] = True  # 2 valid columns
    torch.testing.assert_close(valid_ratios_of(mask), torch.tensor([[1.0, 1.0], [2 / 5, 3 / 4]]))


def test_encoder_reference_points_hand_worked():
    # Level 0: 2 x 4 map, 2 valid columns (w ratio 0.5). Level 1: 1 x 2 map, 1 valid column (0.5).
    valid_ratios = torch.tensor([[[0.5, 1.0], [0.5, 1.0]]])  # (B=1, L=2, 2) as (w, h)
    points = encoder_reference_points([(2, 4), (1, 2)], valid_ratios)  # (1, 10, 2, 2)
    assert points.shape == (1, 8 + 2, 2, 2)
    # Level-0 pixel (row 1, col 1): centre (1.5, 1.5) px; normalized by the valid size (2, 2) -> (0.75, 0.75);
    # on each level scaled back by that level's valid ratio -> (0.375, 0.75).
    torch.testing.assert_close(points[0, 1 * 4 + 1], torch.tensor([[0.375, 0.75], [0.375, 0.75]]))
    # Level-1 pixel (0, 0): centre (0.5, 0.5) px of a valid 1 x 1 region -> (0.5, 0.5) -> (0.25, 0.5).
    torch.testing.assert_close(points[0, 8], torch.tensor([[0.25, 0.5], [0.25, 0.5]]))


def test_encoder_proposals_hand_worked():
    # Level 0: 2 x 2 map whose right column is padding; level 1: 1 x 1 map, valid.
    padding_mask = torch.tensor([[False, True, False, True, False]])
    logits, valid = encoder_proposals(padding_mask, [(2, 2), (1, 1)], torch.float32)
    assert logits.shape == (1, 5, 4) and valid.shape == (1, 5, 1)
    assert valid[0, :, 0].tolist() == [True, False, True, False, True]
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    torch.testing.assert_close(logits[0, 0], torch.tensor([logit(0.5), logit(0.25), logit(0.05), logit(0.05)]))
    torch.testing.assert_close(logits[0, 2], torch.tensor([logit(0.5), logit(0.75), logit(0.05), logit(0.05)]))
    torch.testing.assert_close(logits[0, 4], torch.tensor([logit(0.5), logit(0.5), logit(0.1), logit(0.1)]))
    assert torch.isinf(logits[0, 1]).all() and torch.isinf(logits[0, 3]).all()
    # A proposal with a coordinate outside (0.01, 0.99) is invalid too: centre 0.5 / 60 < 0.01.
    logits, valid = encoder_proposals(torch.zeros(1, 60, dtype=torch.bool), [(1, 60)], torch.float32)
    assert not valid[0, 0, 0] and valid[0, 1, 0] and torch.isinf(logits[0, 0]).all()


def test_inverse_sigmoid_clamps_at_1e_5():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0, 1.5, -0.5])
    expected = torch.tensor([math.log(1e-5), math.log(1 / 3), 0.0, -math.log(1e-5), -math.log(1e-5), math.log(1e-5)])
    torch.testing.assert_close(inverse_sigmoid(x), expected)


def _transformer_with_heads(two_stage, refine, levels):
    torch.manual_seed(0)
    d_model, layers = 32, 2
    transformer = DeformableTransformer(d_model, 2, 2, layers, 64, 0.0, levels, 2, 2, two_stage, num_queries=6).eval()
    count = layers + int(two_stage) if refine else 1
    class_heads = nn.ModuleList(nn.Linear(d_model, 3) for _ in range(count))
    box_heads = nn.ModuleList(MLP(d_model, d_model, 4, 3) for _ in range(count))
    with torch.no_grad():
        for parameter in transformer.parameters():  # move everything off its (partly zero) init
            parameter.add_(0.1 * torch.randn_like(parameter))
        if two_stage:  # padded pixels then score class_heads.bias[0], below most real pixels
            transformer.enc_output.bias.zero_()
            transformer.enc_output_norm.bias.zero_()
    query_embed = torch.randn(6, 2 * d_model)
    return transformer, query_embed, class_heads, box_heads


@pytest.mark.parametrize(
    "levels, refine, two_stage",
    [(1, False, False), (3, False, False), (4, True, False), (3, True, True), (3, False, True)],
)
def test_outputs_for_an_image_do_not_depend_on_padding_around_it(levels, refine, two_stage):
    """An image alone == the same image padded (garbage in the padding) inside a bigger batch."""
    transformer, query_embed, class_heads, box_heads = _transformer_with_heads(two_stage, refine, levels)
    alone_shapes = [(8, 10), (4, 5), (2, 3), (1, 2)][:levels]
    padded_shapes = [(11, 14), (6, 7), (3, 4), (2, 2)][:levels]
    torch.manual_seed(1)
    alone_sources, padded_sources, alone_masks, padded_masks = [], [], [], []
    for (h, w), (hp, wp) in zip(alone_shapes, padded_shapes):
        source = torch.randn(1, 32, h, w)
        padded = torch.randn(2, 32, hp, wp)  # image 1 is another image; image 0's padding is garbage
        padded[0, :, :h, :w] = source[0]
        mask = torch.zeros(2, hp, wp, dtype=torch.bool)
        mask[0, h:, :] = True
        mask[0, :, w:] = True
        alone_sources.append(source)
        padded_sources.append(padded)
        alone_masks.append(torch.zeros(1, h, w, dtype=torch.bool))
        padded_masks.append(mask)

    def run(sources, masks):
        positions = [sine_position_encoding(m, 16) for m in masks]
        with torch.no_grad():
            return transformer(
                sources,
                masks,
                positions,
                None if two_stage else query_embed,
                box_heads=box_heads if refine else None,
                proposal_heads=(class_heads[-1], box_heads[-1]) if two_stage else None,
            )

    alone, padded = run(alone_sources, alone_masks), run(padded_sources, padded_masks)
    for a, p in zip(alone.hidden_states, padded.hidden_states):
        torch.testing.assert_close(p[:1], a, rtol=1e-4, atol=1e-4)
    for a, p in zip(alone.reference_points, padded.reference_points):
        torch.testing.assert_close(p[:1], a, rtol=1e-4, atol=1e-5)
    if two_stage:
        valid = ~torch.cat([m.flatten(1) for m in padded_masks], 1)[0]
        torch.testing.assert_close(padded.enc_logits[0, valid], alone.enc_logits[0], rtol=1e-4, atol=1e-4)
