"""ModelConfig: validation messages, presets, JSON round trip."""

import dataclasses
import json

import pytest

from deformable_detr.models.config import PRESETS, ModelConfig


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(backbone="resnet152"), "backbone='resnet152' is unknown; choose one of resnet18, resnet34"),
        (
            dict(backbone_depths=(1, 1, 1)),
            r"backbone_depths = \(1, 1, 1\) \(tuple\): takes a list of 4 integers or None",
        ),
        (dict(backbone_depths=(1, 0, 1, 1)), "backbone_depths=.* must be 4 positive ints"),
        (dict(backbone_base_width=0), "backbone_base_width=0 must be >= 1"),
        (dict(num_feature_levels=2), "num_feature_levels=2 must be 1 .* or >= 3"),
        (dict(num_feature_levels=0), "num_feature_levels=0 must be 1"),
        (dict(d_model=48), r"d_model=48 must be a multiple of 32 \(the input projections use GroupNorm\(32\)\)"),
        (dict(n_heads=3), "d_model=256 must be divisible by n_heads=3"),
        (dict(num_queries=0), "num_queries=0 must be >= 1"),
        (dict(dec_n_points=0), "dec_n_points=0 must be >= 1"),
        (dict(dropout=1.0), r"dropout=1.0 must be in \[0, 1\)"),
    ],
)
def test_invalid_fields_raise_one_line_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        ModelConfig(**overrides)
    assert "\n" not in str(error.value)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(
        ValueError, match="unknown preset 'detr'; choose one of deformable-detr, deformable-detr-refine"
    ):
        ModelConfig.preset("detr")


def test_paper_presets_are_the_paper_variants_and_state_their_ap():
    expected = {
        "deformable-detr": ("44.5", dict()),
        "deformable-detr-refine": ("46.2", dict(with_box_refine=True)),
        "deformable-detr-two-stage": ("46.9", dict(with_box_refine=True, two_stage=True)),
        "deformable-detr-single-scale": ("39.4", dict(num_feature_levels=1)),
        "deformable-detr-single-scale-dc5": ("41.5", dict(num_feature_levels=1, dilation=True)),
    }
    for name, (ap, fields) in expected.items():
        assert f"{ap} AP" in PRESETS[name].__doc__
        assert ModelConfig.preset(name) == ModelConfig(**fields)
    default = ModelConfig()  # the reference implementation's defaults
    assert (default.backbone, default.num_feature_levels, default.d_model, default.n_heads) == ("resnet50", 4, 256, 8)
    assert (default.num_encoder_layers, default.num_decoder_layers, default.dim_feedforward) == (6, 6, 1024)
    assert (default.num_queries, default.num_classes, default.dropout, default.resnet_depths) == (
        300,
        91,
        0.1,
        (3, 4, 6, 3),
    )


def test_preset_overrides_and_every_preset_is_valid():
    config = ModelConfig.preset("tiny", num_queries=10, num_classes=3)
    assert (config.num_queries, config.num_classes, config.d_model) == (10, 3, 64)
    for name in PRESETS:
        assert isinstance(ModelConfig.preset(name), ModelConfig)
    with pytest.raises(TypeError):
        ModelConfig.preset("tiny", no_such_field=1)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().d_model = 128


def test_dict_round_trip_through_json_and_unknown_keys_rejected():
    config = ModelConfig.preset("tiny-two-stage")
    restored = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config and restored.backbone_depths == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="unknown ModelConfig field\\(s\\) aux_loss, masks; known fields:"):
        ModelConfig.from_dict({**config.to_dict(), "masks": False, "aux_loss": True})


def test_attention_backend_is_not_saved_but_old_files_with_it_load():
    config = ModelConfig.preset("tiny")
    assert "attention_backend" not in config.to_dict()
    assert ModelConfig.from_dict({**config.to_dict(), "attention_backend": "cpu"}) == config


def test_number_of_prediction_heads():
    assert ModelConfig().num_prediction_heads == 1
    assert ModelConfig(two_stage=True).num_prediction_heads == 1
    assert ModelConfig(with_box_refine=True).num_prediction_heads == 6
    assert ModelConfig(with_box_refine=True, two_stage=True).num_prediction_heads == 7
