"""DeformableDETR: outputs of every variant, state-dict layout and parameter counts, initialisation."""

import math

import pytest
import torch

from deformable_detr.models.config import ModelConfig
from deformable_detr.models.deformable_attention import MultiScaleDeformableAttention
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.pipeline.processor import PreprocessConfig


def _padded_batch(height=64, width=80):
    """images (2, 3, H, W) and padding_mask (2, H, W): image 1 is 48 x 56, padded right and bottom."""
    torch.manual_seed(0)
    images = torch.randn(2, 3, height, width)
    padding_mask = torch.zeros(2, height, width, dtype=torch.bool)
    padding_mask[1, 48:, :] = True
    padding_mask[1, :, 56:] = True
    images[padding_mask[:, None].expand_as(images)] = 0.0
    return images, padding_mask


def test_output_shapes_of_every_variant(variant_config):
    model = DeformableDETR(variant_config).eval()
    images, padding_mask = _padded_batch()
    with torch.no_grad():
        out = model(images, padding_mask)
    Q, K = variant_config.num_queries, variant_config.num_classes
    assert out["pred_logits"].shape == (2, Q, K) and out["pred_boxes"].shape == (2, Q, 4)
    assert len(out["aux_outputs"]) == variant_config.num_decoder_layers - 1
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (2, Q, K) and aux["pred_boxes"].shape == (2, Q, 4)
    assert torch.isfinite(out["pred_logits"]).all()
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    if variant_config.two_stage:
        levels = variant_config.num_feature_levels
        strides = [16 if variant_config.dilation else 32] if levels == 1 else [8, 16, 32, 64][:levels]
        S = sum(math.ceil(64 / s) * math.ceil(80 / s) for s in strides)
        assert out["enc_outputs"]["pred_logits"].shape == (2, S, K)
        assert out["enc_outputs"]["pred_boxes"].shape == (2, S, 4)
    else:
        assert "enc_outputs" not in out


def test_gradients_reach_every_trainable_parameter(make_config):
    model = DeformableDETR(
        make_config(with_box_refine=True, two_stage=True, backbone_frozen_bn=False, freeze_stem_and_layer1=False)
    ).train()
    images, padding_mask = _padded_batch()
    out = model(images, padding_mask)
    outputs = [out, out["enc_outputs"], *out["aux_outputs"]]
    sum(o["pred_logits"].sum() + o["pred_boxes"].sum() for o in outputs).backward()
    no_grad = {name for name, p in model.named_parameters() if p.requires_grad and p.grad is None}
    assert no_grad == set()


def test_dc5_single_scale_samples_a_stride_16_map(make_config):
    for dilation, expected in ((False, 2 * 3), (True, 4 * 5)):
        model = DeformableDETR(make_config(num_feature_levels=1, dilation=dilation, two_stage=True, num_queries=4))
        with torch.no_grad():
            out = model.eval()(torch.randn(1, 3, 64, 80))
        assert out["enc_outputs"]["pred_logits"].shape[1] == expected


def test_padding_mask_none_means_all_valid_and_images_are_independent(make_config):
    model = DeformableDETR(make_config(with_box_refine=True)).eval()
    images, _ = _padded_batch()
    with torch.no_grad():
        both = model(images)
        explicit = model(images, torch.zeros(2, 64, 80, dtype=torch.bool))
        first = model(images[:1])
    torch.testing.assert_close(both["pred_boxes"], explicit["pred_boxes"])
    torch.testing.assert_close(both["pred_logits"][:1], first["pred_logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both["pred_boxes"][:1], first["pred_boxes"], rtol=1e-5, atol=1e-5)


def test_attention_backend_reaches_every_attention_module(make_config):
    model = DeformableDETR(make_config())
    assert model.set_attention_backend("reference") is model
    attentions = [m for m in model.modules() if isinstance(m, MultiScaleDeformableAttention)]
    assert len(attentions) == 1 + 2 and {m.backend for m in attentions} == {"reference"}
    assert model.attention_backend == "reference"
    with pytest.raises(ValueError, match="attention backend 'cuda' is unknown; choose one of auto, reference"):
        model.set_attention_backend("cuda")


def test_from_state_dict_loads_strictly_in_eval_mode(make_config):
    source = DeformableDETR(make_config())
    categories = [{"id": k + 10, "name": f"c{k}"} for k in range(5)]
    model = DeformableDETR.from_state_dict(
        make_config(), source.state_dict(), source="x.pth", categories=categories, attention_backend="reference"
    )
    assert not model.training and model.attention_backend == "reference" and model.categories == categories
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    state = dict(source.state_dict())
    del state["query_embed.weight"]
    with pytest.raises(
        ValueError, match=r"x\.pth: checkpoint does not match the model: 1 missing \(query_embed\.weight\)"
    ):
        DeformableDETR.from_state_dict(make_config(), state, source="x.pth")


def test_model_carries_default_preprocessing_and_categories(make_config):
    model = DeformableDETR(make_config(num_classes=91))
    assert model.preprocess == PreprocessConfig() and model.categories[1] == {"id": 1, "name": "person"}
    with pytest.raises(ValueError, match="expected a list of 5 categories"):
        DeformableDETR(make_config(), categories=[{"id": 1, "name": "a"}])


# --- State-dict layout (docs/interop.md §2) and counts derived from docs/interop.md §3.3 ------------------
# Official counts include aliased copies of the heads; ours keeps each distinct head once:
#   plain / single-scale / DC5: 561 / 549 / 549 minus 5 aliased class heads (2 keys) and bbox heads (6 keys) = -40;
#   box refine: 597 minus the 36 `transformer.decoder.bbox_embed` aliases;
#   two-stage + refine: 630 minus 42 decoder bbox and 14 decoder class aliases;
#   two-stage without refine: 588 minus 6 * (2 + 6) aliased copies of the one head and its 14 decoder aliases.
EXPECTED_KEY_COUNTS = {
    "deformable-detr": 521,
    "deformable-detr-single-scale": 509,
    "deformable-detr-single-scale-dc5": 509,
    "deformable-detr-refine": 561,
    "deformable-detr-two-stage": 574,
}
# Unique parameter elements, docs/interop.md §3.3 (the README's 40/34/34/41/41M). FrozenBN holds buffers only.
EXPECTED_PARAMETERS_M = {
    "deformable-detr": 40.07,
    "deformable-detr-single-scale": 34.07,
    "deformable-detr-single-scale-dc5": 34.07,
    "deformable-detr-refine": 40.85,
    "deformable-detr-two-stage": 41.18,
}


def _meta_model(config):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return DeformableDETR(config)


@pytest.mark.parametrize("preset", sorted(EXPECTED_KEY_COUNTS))
def test_paper_variants_key_and_parameter_counts(preset):
    model = _meta_model(ModelConfig.preset(preset))
    assert len(model.state_dict()) == EXPECTED_KEY_COUNTS[preset]
    parameters = sum(p.numel() for p in model.parameters())
    assert round(parameters / 1e6, 2) == EXPECTED_PARAMETERS_M[preset]
    if preset == "deformable-detr":
        assert 39.8e6 <= parameters <= 40.2e6  # the paper's 40M


def test_two_stage_without_refine_key_count():
    assert len(_meta_model(ModelConfig(two_stage=True)).state_dict()) == 526


def _expected_transformer_and_heads(
    L=4, enc=6, dec=6, d=256, ffn=1024, M=8, P=4, Q=300, K=91, heads=1, two_stage=False
):
    """Key -> shape of everything but the backbone, written from docs/interop.md §2 and §3.2."""
    keys = {"transformer.level_embed": (L, d)}
    attention = {
        "sampling_offsets.weight": (M * L * P * 2, d),
        "sampling_offsets.bias": (M * L * P * 2,),
        "attention_weights.weight": (M * L * P, d),
        "attention_weights.bias": (M * L * P,),
        "value_proj.weight": (d, d),
        "value_proj.bias": (d,),
        "output_proj.weight": (d, d),
        "output_proj.bias": (d,),
    }
    ffn_keys = {"linear1.weight": (ffn, d), "linear1.bias": (ffn,), "linear2.weight": (d, ffn), "linear2.bias": (d,)}

    def norm(name):
        return {f"{name}.weight": (d,), f"{name}.bias": (d,)}

    for i in range(enc):
        prefix = f"transformer.encoder.layers.{i}."
        keys.update({prefix + "self_attn." + k: v for k, v in attention.items()})
        keys.update({prefix + k: v for k, v in {**norm("norm_attn"), **ffn_keys, **norm("norm_ffn")}.items()})
    for i in range(dec):
        prefix = f"transformer.decoder.layers.{i}."
        keys.update({prefix + "cross_attn." + k: v for k, v in attention.items()})
        keys.update(
            {
                prefix + "self_attn.in_proj_weight": (3 * d, d),
                prefix + "self_attn.in_proj_bias": (3 * d,),
                prefix + "self_attn.out_proj.weight": (d, d),
                prefix + "self_attn.out_proj.bias": (d,),
            }
        )
        keys.update(
            {
                prefix + k: v
                for k, v in {
                    **norm("norm_self_attn"),
                    **norm("norm_cross_attn"),
                    **ffn_keys,
                    **norm("norm_ffn"),
                }.items()
            }
        )
    if two_stage:
        keys.update(
            {
                "transformer.enc_output.weight": (d, d),
                "transformer.enc_output.bias": (d,),
                "transformer.enc_output_norm.weight": (d,),
                "transformer.enc_output_norm.bias": (d,),
                "transformer.pos_trans.weight": (2 * d, 2 * d),
                "transformer.pos_trans.bias": (2 * d,),
                "transformer.pos_trans_norm.weight": (2 * d,),
                "transformer.pos_trans_norm.bias": (2 * d,),
            }
        )
    else:
        keys.update(
            {
                "transformer.reference_points.weight": (2, d),
                "transformer.reference_points.bias": (2,),
                "query_embed.weight": (Q, 2 * d),
            }
        )
    for j in range(heads):
        keys.update({f"class_heads.{j}.weight": (K, d), f"class_heads.{j}.bias": (K,)})
        for k, out in enumerate((d, d, 4)):
            keys.update({f"box_heads.{j}.layers.{k}.weight": (out, d), f"box_heads.{j}.layers.{k}.bias": (out,)})
    return keys


@pytest.mark.parametrize(
    "preset, levels, heads, two_stage",
    [
        ("deformable-detr", 4, 1, False),
        ("deformable-detr-single-scale", 1, 1, False),
        ("deformable-detr-two-stage", 4, 7, True),
    ],
)
def test_state_dict_keys_and_shapes_follow_the_documented_layout(preset, levels, heads, two_stage):
    state = {k: tuple(v.shape) for k, v in _meta_model(ModelConfig.preset(preset)).state_dict().items()}
    expected = _expected_transformer_and_heads(L=levels, heads=heads, two_stage=two_stage)
    if levels == 4:
        expected.update({f"input_proj.{level}.0.weight": (256, c, 1, 1) for level, c in enumerate((512, 1024, 2048))})
        expected["input_proj.3.0.weight"] = (256, 2048, 3, 3)
    else:
        expected["input_proj.0.0.weight"] = (256, 2048, 1, 1)
    for level in range(levels):
        expected.update(
            {
                f"input_proj.{level}.0.bias": (256,),
                f"input_proj.{level}.1.weight": (256,),
                f"input_proj.{level}.1.bias": (256,),
            }
        )
    non_backbone = {k: v for k, v in state.items() if not k.startswith("backbone.body.")}
    assert non_backbone == expected
    assert len(state) - len(non_backbone) == 265


# --- Initialisation (reference implementation's rules) ---------------------------------------------------


def test_attention_init_survives_the_transformer_init(make_config):
    model = DeformableDETR(make_config())
    for module in model.modules():
        if isinstance(module, MultiScaleDeformableAttention):
            M, L, P = module.n_heads, module.n_levels, module.n_points
            assert (module.sampling_offsets.weight == 0).all()
            assert (module.attention_weights.weight == 0).all() and (module.attention_weights.bias == 0).all()
            ring = module.sampling_offsets.bias.view(M, L, P, 2)
            # M = 2 heads: angles 0 and pi -> directions (1, 0) and (-1, 0); point i at distance i + 1.
            for i in range(P):
                torch.testing.assert_close(ring[0, :, i], torch.tensor([[i + 1.0, 0.0]] * L))
                torch.testing.assert_close(ring[1, :, i], torch.tensor([[-(i + 1.0), 0.0]] * L), atol=1e-6, rtol=0)


def test_ring_directions_with_eight_heads(make_config):
    model = DeformableDETR(make_config(d_model=64, n_heads=8, num_encoder_layers=1))
    ring = model.transformer.encoder.layers[0].self_attn.sampling_offsets.bias.view(8, 4, 2, 2)[:, 0, 0]
    s = 1.0  # each direction divided by max(|cos|, |sin|): the ring is a square
    expected = torch.tensor([[s, 0], [s, s], [0, s], [-s, s], [-s, 0], [-s, -s], [0, -s], [s, -s]])
    torch.testing.assert_close(ring, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "refine, two_stage, expected_bias",
    [
        (False, False, [[0, 0, -2, -2]]),
        (True, False, [[0, 0, -2, -2], [0, 0, 0, 0]]),
        (True, True, [[0, 0, 0, 0]] * 3),
        (False, True, [[0, 0, 0, 0]]),
    ],
)
def test_head_init(make_config, refine, two_stage, expected_bias):
    model = DeformableDETR(make_config(with_box_refine=refine, two_stage=two_stage))
    prior = -math.log((1 - 0.01) / 0.01)
    assert len(model.class_heads) == len(model.box_heads) == len(expected_bias)
    for class_head, box_head, bias in zip(model.class_heads, model.box_heads, expected_bias):
        torch.testing.assert_close(class_head.bias, torch.full_like(class_head.bias, prior))
        assert (box_head.layers[-1].weight == 0).all()
        assert box_head.layers[-1].bias.tolist() == bias
    # Per-layer heads are copies of one initialised head, as the reference code's deepcopy clones,
    # but separate modules (no aliasing).
    if refine:
        torch.testing.assert_close(model.class_heads[0].weight, model.class_heads[1].weight)
        assert model.class_heads[0].weight.data_ptr() != model.class_heads[1].weight.data_ptr()


def test_projection_query_and_level_init(make_config):
    model = DeformableDETR(make_config())
    for projection in model.input_proj:
        assert (projection[0].bias == 0).all() and projection[0].weight.std() > 0
    assert (model.transformer.reference_points.bias == 0).all()
    assert model.transformer.level_embed.std() > 0.3  # N(0, 1)
    assert model.query_embed.weight.shape == (8, 64)


def test_postprocess_method_delegates(make_config):
    model = DeformableDETR(make_config()).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 128))
    detections = model.postprocess(out, torch.tensor([[480, 640]]), top_k=7)
    assert len(detections) == 1 and detections[0]["boxes"].shape == (7, 4)


@pytest.mark.slow
def test_torch_compile_matches_eager(make_config):
    model = DeformableDETR(make_config(with_box_refine=True, two_stage=True)).eval()
    images, padding_mask = _padded_batch()
    with torch.no_grad():
        eager = model(images, padding_mask)
        compiled = torch.compile(model)(images, padding_mask)
    torch.testing.assert_close(compiled["pred_logits"], eager["pred_logits"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(compiled["pred_boxes"], eager["pred_boxes"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        compiled["enc_outputs"]["pred_logits"], eager["enc_outputs"]["pred_logits"], rtol=1e-4, atol=1e-4
    )
