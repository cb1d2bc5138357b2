"""Sine position encodings against hand-computed values."""

import math

import torch

from deformable_detr.models.position_encoding import sine_box_encoding, sine_position_encoding


def test_pixel_encoding_counts_only_valid_pixels():
    # 2 x 3 map whose last column is padding: the valid region is 2 x 2.
    padding_mask = torch.tensor([[[False, False, True], [False, False, True]]])
    encoding = sine_position_encoding(padding_mask, num_feats=4)  # (1, 8, 2, 3)
    assert encoding.shape == (1, 8, 2, 3) and encoding.dtype == torch.float32
    for i in range(2):
        for j in range(2):
            y = (i + 1 - 0.5) / (2 + 1e-6) * 2 * math.pi  # valid rows above and including i, minus 0.5
            x = (j + 1 - 0.5) / (2 + 1e-6) * 2 * math.pi
            # temperature 10000, 4 features per axis: frequencies 1, 1, 1/100, 1/100
            expected = [
                math.sin(y),
                math.cos(y),
                math.sin(y / 100),
                math.cos(y / 100),
                math.sin(x),
                math.cos(x),
                math.sin(x / 100),
                math.cos(x / 100),
            ]
            torch.testing.assert_close(encoding[0, :, i, j], torch.tensor(expected), rtol=0, atol=1e-5)


def test_detr_pixel_encoding_has_no_half_pixel_offset():
    """offset=0 (DETR's PositionEmbeddingSine): the last valid row/column sits at 2*pi, not 2*pi * (n - 0.5) / n."""
    padding_mask = torch.tensor([[[False, False, True]]])  # 1 x 3, valid region 1 x 2
    encoding = sine_position_encoding(
        padding_mask, num_feats=2, offset=0.0
    )  # (1, 4, 1, 3): [sin y, cos y, sin x, cos x]
    y = 1 / (1 + 1e-6) * 2 * math.pi
    for j in range(2):
        x = (j + 1) / (2 + 1e-6) * 2 * math.pi
        expected = torch.tensor([math.sin(y), math.cos(y), math.sin(x), math.cos(x)])
        torch.testing.assert_close(encoding[0, :, 0, j], expected, rtol=0, atol=1e-5)


def test_pixel_encoding_of_an_image_equals_its_padded_copy_on_the_valid_region():
    alone = sine_position_encoding(torch.zeros(1, 5, 7, dtype=torch.bool), num_feats=16)
    padded_mask = torch.ones(1, 9, 12, dtype=torch.bool)
    padded_mask[:, :5, :7] = False
    padded = sine_position_encoding(padded_mask, num_feats=16)
    torch.testing.assert_close(padded[..., :5, :7], alone)


def test_box_encoding_is_coordinate_major_sin_cos_pairs():
    boxes = torch.tensor([[[0.1, 0.2, 0.3, 0.4]]])
    encoding = sine_box_encoding(boxes, num_feats=4)  # (1, 1, 16)
    expected = []
    for value in (0.1, 0.2, 0.3, 0.4):
        angle = value * 2 * math.pi
        expected += [math.sin(angle), math.cos(angle), math.sin(angle / 100), math.cos(angle / 100)]
    torch.testing.assert_close(encoding[0, 0], torch.tensor(expected), rtol=0, atol=1e-6)
