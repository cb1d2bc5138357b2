"""FLOP counting: the operator's registered formula, and how DETR's vs Deformable DETR's encoder cost grows."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from deformable_detr.experiments.scaling import count_flops
from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.models.detr import DETR
from deformable_detr.models.detr_config import DetrConfig
from deformable_detr.ops import multi_scale_deformable_attention
from deformable_detr.ops.flops import ms_deform_attn_flops, register_flop_formulas


def _op_inputs(B=2, Lq=7, M=3, D=4, P=2, shapes=((6, 5), (3, 3))):
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
    areas = spatial_shapes.prod(1)
    level_start_index = torch.cat((areas.new_zeros(1), areas.cumsum(0)[:-1]))
    L = len(shapes)
    value = torch.randn(B, int(areas.sum()), M, D, requires_grad=True)
    locations = torch.rand(B, Lq, M, L, P, 2, requires_grad=True)
    weights = torch.rand(B, Lq, M, L, P).softmax(-1).requires_grad_()
    return value, spatial_shapes, level_start_index, locations, weights


def test_fused_op_counts_its_formula_forward_and_backward():
    register_flop_formulas()
    inputs = _op_inputs()
    expected = 10 * 2 * 7 * 3 * 2 * 2 * 4  # 2 FLOPs x (4 corner + 1 weight) multiply-adds per (b, q, m, l, p, d)
    assert ms_deform_attn_flops(2, 7, 3, 2, 2, 4) == expected
    with FlopCounterMode(display=False) as counter:
        out = multi_scale_deformable_attention(*inputs, backend="cpu")
    assert counter.get_total_flops() == expected
    with FlopCounterMode(display=False) as counter:
        out.sum().backward()
    assert counter.get_total_flops() == 2 * expected


def test_reference_path_counts_the_bilinear_part():
    """grid_sample: 4 multiply-adds per sampled channel; the weighting is elementwise and not counted (8/10)."""
    register_flop_formulas()
    inputs = _op_inputs()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        multi_scale_deformable_attention(*inputs, backend="reference")
    assert counter.get_total_flops() == 8 * 2 * 7 * 3 * 2 * 2 * 4


def _exponent(model, small, large):
    a, b = count_flops(model, small), count_flops(model, large)
    return math.log(b["encoder"] / a["encoder"]) / math.log(b["tokens"] / a["tokens"]), b["tokens"] / a["tokens"]


@pytest.mark.slow
def test_detr_encoder_grows_quadratically_deformable_linearly():
    torch.manual_seed(0)
    detr = DETR(
        DetrConfig(
            backbone="resnet18",
            backbone_depths=(1, 1, 1, 1),
            backbone_base_width=8,
            d_model=32,
            n_heads=2,
            num_encoder_layers=1,
            num_decoder_layers=1,
            dim_feedforward=64,
            num_queries=5,
            num_classes=3,
            dilation=True,
        )
    ).eval()
    exponent, token_ratio = _exponent(detr, 512, 1024)  # 1024 -> 4096 tokens: global attention dominates
    assert token_ratio == 4
    assert 1.85 < exponent <= 2.0
    deformable = DeformableDETR(
        ModelConfig.preset(
            "tiny",
            backbone_base_width=8,
            d_model=32,
            n_heads=2,
            num_encoder_layers=1,
            num_decoder_layers=1,
            dim_feedforward=64,
            num_queries=5,
        )
    ).eval()
    exponent, token_ratio = _exponent(deformable, 128, 256)
    assert token_ratio == pytest.approx(4, rel=0.05)
    assert exponent == pytest.approx(1.0, abs=0.03)
