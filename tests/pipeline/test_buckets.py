"""Shape buckets: rounding, level sizes against a real backbone's arithmetic, and the choice of bucket."""

import pytest
import torch

from deformable_detr.models.detector import DeformableDETR
from deformable_detr.pipeline.buckets import choose_bucket, image_bucket, level_sizes, level_strides, round_up


@pytest.mark.parametrize(
    "value, multiple, expected", [(800, 64, 832), (832, 64, 832), (1, 64, 64), (1066, 64, 1088), (1066, 32, 1088)]
)
def test_round_up(value, multiple, expected):
    assert round_up(value, multiple) == expected


def test_image_bucket_and_level_strides():
    assert image_bucket(800, 1066, 64) == (832, 1088)
    assert image_bucket(750, 1333, 64) == (768, 1344)
    assert level_strides([8, 16, 32], 4) == [8, 16, 32, 64]  # one extra stride-2 level
    assert level_strides([8, 16, 16], 4) == [8, 16, 16, 32]  # DC5
    assert level_strides([32], 1) == [32]  # single scale (and DETR)
    # The docstring's example: 800x1066 -> bucket 832x1088 -> levels at strides 8..64.
    actual = [(100, 134), (50, 67), (25, 34), (13, 17)]
    assert level_sizes((832, 1088), [8, 16, 32, 64], actual) == [(104, 136), (52, 68), (26, 34), (13, 17)]


@pytest.mark.parametrize("dilation", [False, True])
def test_every_image_of_a_bucket_gets_the_same_level_sizes_and_they_hold_its_maps(make_config, dilation, one_thread):
    """Oracle: the level shapes a real backbone (+ the extra stride-2 level) produces for each image size."""
    torch.manual_seed(0)
    model = DeformableDETR(make_config(dilation=dilation)).eval()
    strides = level_strides(model.backbone.strides, model.config.num_feature_levels)
    step = 64
    padded = {}
    for height in (129, 150, 171, 192):  # all in the bucket 192 px
        for width in (130, 191):
            with torch.no_grad():
                sources, _ = model.image_features(torch.zeros(1, 3, height, width))
            actual = [tuple(source.shape[-2:]) for source in sources]
            sizes = level_sizes(image_bucket(height, width, step), strides, actual)
            assert all(h >= a_h and w >= a_w for (h, w), (a_h, a_w) in zip(sizes, actual))
            # exactly the bucket's own level sizes: the backbone never needed more
            assert sizes == [(-(-192 // s), -(-192 // s)) for s in strides]
            padded.setdefault(image_bucket(height, width, step), set()).add(tuple(sizes))
    assert list(padded) == [(192, 192)] and len(padded[192, 192]) == 1


def test_choose_bucket():
    landscape = (800, 1066)  # own bucket (832, 1088)
    assert choose_bucket(landscape, [], step=64, max_buckets=8) == (832, 1088)
    assert choose_bucket(landscape, [(1344, 1344), (832, 1088)], step=64, max_buckets=8) == (832, 1088)
    # A bucket in use that holds it with <= 25 % more pixels is reused: 832 * 1152 / (832 * 1088) = 1.06.
    assert choose_bucket(landscape, [(832, 1216), (832, 1152)], step=64, max_buckets=8) == (832, 1152)
    # One with more pixels (1344^2 / (832 * 1088) = 2.0) is not, while there is room for a new bucket ...
    assert choose_bucket(landscape, [(1344, 1344)], step=64, max_buckets=2) == (832, 1088)
    # ... and is when there is none; where none holds the image, it runs uncompiled (None).
    assert choose_bucket(landscape, [(1344, 1344)], step=64, max_buckets=1) == (1344, 1344)
    assert choose_bucket((1066, 800), [(832, 1088)], step=64, max_buckets=1) is None
