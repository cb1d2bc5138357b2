"""Shape buckets: the few padded input shapes a compiled transformer is specialised to.

A compiled (CUDA-graphed) transformer runs one set of input shapes; real images come in many sizes
(every aspect ratio gives another resized width). So a batch's per-level feature maps are padded up to
a bucket: the largest resized image side rounded up to a multiple of `step` pixels, and level l padded
to ceil(bucket side / stride_l) (never below the level's real size). Images whose sizes round to the
same bucket reuse one compiled graph; the padding is masked, and the transformer's outputs do not
depend on it (see `deformable_detr.pipeline.run`).

    image_bucket(800, 1066, 64)                             # (832, 1088)
    level_strides([8, 16, 32], 4)                           # [8, 16, 32, 64]
    level_sizes((832, 1088), [8, 16, 32, 64], actual)       # [(104, 136), (52, 68), (26, 34), (13, 17)]
    choose_bucket((800, 1066), compiled, step=64, max_buckets=8)
"""

from __future__ import annotations

from collections.abc import Sequence

# Reuse an already compiled bucket holding the image when it has at most this many times the pixels
# of the image's own bucket, rather than compile another (a compile costs ~1 min, 25 % more pixels
# cost ~25 % of a fast forward).
REUSE_SLACK = 1.25


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of `multiple` (>= 1) that is >= `value`."""
    return -(-value // multiple) * multiple


def image_bucket(height: int, width: int, step: int) -> tuple[int, int]:
    """(height, width) of a resized image rounded up to multiples of `step` pixels."""
    return round_up(height, step), round_up(width, step)


def level_strides(backbone_strides: Sequence[int], num_levels: int) -> list[int]:
    """Stride of each of `num_levels` feature levels: the backbone's, then each extra level twice the previous
    (the extra levels are stride-2 convolutions on the last one)."""
    strides = list(backbone_strides)[:num_levels]
    while len(strides) < num_levels:
        strides.append(2 * strides[-1])
    return strides


def level_sizes(
    bucket: tuple[int, int], strides: Sequence[int], actual: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Per level, the padded (H_l, W_l) for an image bucket.

    Args:
        bucket: (H_b, W_b) image bucket in pixels.
        strides: per level, its stride in pixels (`level_strides`).
        actual: per level, the largest (H_l, W_l) of the batch's maps.

    Returns:
        per level (max(ceil(H_b / s_l), H_l), max(ceil(W_b / s_l), W_l)): a ResNet level of an image of
        h <= H_b rows has ceil(h / s_l) <= ceil(H_b / s_l) rows, so this is the bucket's own size; the
        maximum only matters for a backbone with other size arithmetic.
    """
    return [
        (max(-(-bucket[0] // stride), height), max(-(-bucket[1] // stride), width))
        for stride, (height, width) in zip(strides, actual)
    ]


def choose_bucket(
    size: tuple[int, int],
    compiled: Sequence[tuple[int, int]],
    step: int,
    max_buckets: int,
    slack: float = REUSE_SLACK,
) -> tuple[int, int] | None:
    """The image bucket a batch whose largest resized image is `size` runs in.

    In order: the size's own bucket if already in use; else the smallest bucket in use that holds the
    size, if it has at most `slack` times the pixels of the own bucket; else the own bucket (a new one)
    while fewer than `max_buckets` are in use; else the smallest bucket in use that holds the size;
    else None (run uncompiled).

    Args:
        size: (h, w) of the batch, the maxima over its resized images, pixels.
        compiled: image buckets already in use.
        step: bucket granularity in pixels.
        max_buckets: most buckets ever in use.
        slack: see above.

    Returns:
        (H_b, W_b), or None.
    """
    own = image_bucket(*size, step)
    if own in compiled:
        return own
    holding = [b for b in compiled if b[0] >= size[0] and b[1] >= size[1]]
    smallest = min(holding, key=lambda b: (b[0] * b[1], b)) if holding else None
    if smallest is not None and smallest[0] * smallest[1] <= slack * own[0] * own[1]:
        return smallest
    if len(compiled) < max_buckets:
        return own
    return smallest
