"""Loading Hugging Face Deformable DETR weights: parity with `transformers` on every variant HF supports.

Not tested: single-scale DC5. HF builds DC5 only with a timm backbone (timm is not installed here), and its
native ResNet silently ignores `dilation=True` (docs/interop.md §6).
"""

from __future__ import annotations

import re

import pytest
import torch
from hf_reference import VARIANTS, assert_same_outputs, hf_outputs, make_hf_model, reference, transformers

import deformable_detr
from deformable_detr.errors import CheckpointError
from deformable_detr.interop.huggingface import ours_to_transformers, transformers_to_ours
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.pipeline.processor import PreprocessConfig


def load_transformers(checkpoint, **kwargs):
    """Converter + the one build-and-load step, as `deformable_detr.load` does for a folder."""
    return DeformableDETR.from_state_dict(*transformers_to_ours(checkpoint, **kwargs))


def _ours(model, images, pixel_mask):
    with torch.no_grad():
        return model(images, padding_mask=~pixel_mask.bool())  # HF pixel_mask 1 = valid; ours True = padding


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_from_transformers_instance_matches_hf(variant, batch):
    hf_model, expected = reference(variant)
    model = load_transformers(hf_model)
    assert model.config.two_stage == hf_model.config.two_stage
    assert model.config.with_box_refine == hf_model.config.with_box_refine
    assert model.config.n_heads == 4 and model.config.backbone_depths == (1, 2, 1, 1)
    assert_same_outputs(_ours(model, *batch), expected)


@pytest.mark.parametrize("variant", ["multi-scale", "box-refine", "two-stage"])
def test_from_transformers_directory_without_tied_copies(variant, batch, tmp_path):
    """save_pretrained drops tied head copies (docs/interop.md §4.2); the loader restores them as HF does."""
    hf_model, expected = reference(variant)
    hf_model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "model.safetensors")
    assert len(saved) < len(hf_model.state_dict())  # some aliases really are omitted
    model = deformable_detr.load(tmp_path)
    assert model.checkpoint_info.format == "transformers"
    assert model.preprocess == PreprocessConfig() and model.categories[0] == {"id": 1, "name": "class_1"}
    assert_same_outputs(_ours(model, *batch), expected)


def _v4_name(key: str) -> str:
    """transformers 5.x key -> v4-era key (docs/interop.md §4.2), the inverse of what 5.x does on load."""
    key = key.replace("model.backbone.model.", "model.backbone.conv_encoder.model.")
    key = re.sub(r"(\.layers\.\d+)\.mlp\.fc([12])\.", r"\1.fc\2.", key)
    return re.sub(r"(decoder\.layers\.\d+\.self_attn)\.o_proj\.", r"\1.out_proj.", key)


def test_from_transformers_v4_names(batch):
    """v4-era names (the SenseTime/* hub files): conv_encoder, layers.N.fc1, decoder self_attn.out_proj."""
    hf_model, expected = reference("box-refine")
    state_dict = {_v4_name(key): value for key, value in hf_model.state_dict().items()}
    assert any(".conv_encoder." in key for key in state_dict) and any(".out_proj." in key for key in state_dict)
    model = load_transformers(state_dict, hf_config=hf_model.config)
    assert_same_outputs(_ours(model, *batch), expected)


def test_bare_state_dict_is_refused_without_a_config(batch):
    """No tensor stores the head count: a state dict without its HF config is refused, not guessed."""
    hf_model, expected = reference("box-refine")
    with pytest.raises(CheckpointError, match="no HF config.json .* pass config=ModelConfig"):
        transformers_to_ours(hf_model.state_dict())
    config, _ = transformers_to_ours(hf_model)
    model = load_transformers(hf_model.state_dict(), config=config)
    assert_same_outputs(_ours(model, *batch), expected)


def test_from_transformers_two_stage_query_count():
    """HF two-stage keeps `two_stage_num_proposals` proposals and ignores `num_queries` (docs/interop.md §6)."""
    hf_model = make_hf_model("two-stage", num_heads=8)
    hf_model.config.num_queries = 123
    assert transformers_to_ours(hf_model)[0].num_queries == hf_model.config.two_stage_num_proposals


def test_from_transformers_rejects_learned_position_embedding():
    state_dict = {"model.position_embedding.row_embeddings.weight": torch.zeros(50, 16)}
    with pytest.raises(ValueError, match="learned position embedding"):
        load_transformers(state_dict)


def test_from_transformers_rejects_foreign_state_dict():
    with pytest.raises(ValueError, match="'model.level_embed'.* is missing: not a Deformable DETR state dict"):
        load_transformers({"encoder.weight": torch.zeros(1)})


def _save_hf_folder(folder, config, state_dict, categories=None):
    import json

    from safetensors.torch import save_file

    hf_state, hf_config = ours_to_transformers(config, state_dict, categories)
    folder.mkdir()
    save_file(hf_state, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ours_to_transformers_round_trip_is_read_by_hf(variant, batch, tmp_path):
    """HF -> ours -> HF folder -> transformers' own from_pretrained reproduces the original HF outputs."""
    hf_model, expected = reference(variant)
    config, ours = transformers_to_ours(hf_model)
    _save_hf_folder(tmp_path / "hf", config, ours)
    reloaded = transformers.DeformableDetrForObjectDetection.from_pretrained(tmp_path / "hf").eval()
    assert_same_outputs(hf_outputs(reloaded, *batch), expected)


def test_our_own_model_runs_in_hf(batch, tmp_path):
    """A model of ours (basic-block ResNet, trainable BatchNorm, two-stage) written for HF gives our outputs there."""
    from deformable_detr.models.config import ModelConfig

    torch.manual_seed(0)
    config = ModelConfig.preset(
        "tiny-two-stage", d_model=32, n_heads=4, dim_feedforward=48, num_queries=7, num_classes=3
    )
    model = DeformableDETR(config).eval()
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.add_(0.02 * torch.randn_like(value))
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    _save_hf_folder(tmp_path / "hf", config, model.state_dict(), categories)
    hf_model = transformers.DeformableDetrForObjectDetection.from_pretrained(tmp_path / "hf").eval()
    assert hf_model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert_same_outputs(_ours(model, *batch), hf_outputs(hf_model, *batch))


def test_dc5_cannot_be_written_for_hf_native_resnet():
    from deformable_detr.models.config import ModelConfig

    with pytest.raises(CheckpointError, match="DC5 .* only with a timm backbone"):
        ours_to_transformers(ModelConfig(num_feature_levels=1, dilation=True), {})
