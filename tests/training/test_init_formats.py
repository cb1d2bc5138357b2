"""`--init` from every format `deformable_detr.load` reads, onto a dataset with another class count.

Oracle: the source model's own tensors (for converted formats, the converter round trip of those
tensors is exact): every non-head tensor equal, heads of the new shape, a name-matched row copied.
(The Hugging Face folder is in tests/interop/test_init_transformers.py, next to its reference model.)
"""

import argparse
import dataclasses

import pytest
import torch

from deformable_detr.interop.official import ours_to_official
from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.training.config import TrainConfig
from deformable_detr.training.warm_start import init_model_config, prepare_model

SOURCE_NAMES = ["person", "bicycle", "car"]
TARGET = [
    {"id": 1, "name": "car"},
    {"id": 2, "name": "kite"},
    {"id": 3, "name": "dog"},
    {"id": 4, "name": "cat"},
    {"id": 5, "name": "bus"},
]


def _source(two_stage: bool) -> DeformableDETR:
    torch.manual_seed(0)
    config = ModelConfig(
        backbone="resnet50",
        backbone_depths=(1, 1, 1, 1),
        backbone_base_width=8,
        d_model=32,
        n_heads=2,
        enc_n_points=2,
        dec_n_points=2,
        num_encoder_layers=1,
        num_decoder_layers=2,
        dim_feedforward=64,
        num_queries=8,
        num_classes=len(SOURCE_NAMES),
        with_box_refine=two_stage,
        two_stage=two_stage,
    )
    model = DeformableDETR(config, categories=[{"id": i + 1, "name": n} for i, n in enumerate(SOURCE_NAMES)])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def _write(source: DeformableDETR, fmt: str, tmp_path):
    if fmt == "training-checkpoint":
        path = tmp_path / "checkpoint.pth"
        torch.save(
            {
                "model": source.state_dict(),
                "config": TrainConfig(model=source.config).to_dict(),
                "categories": source.categories,
            },
            path,
        )
    elif fmt == "run-folder":
        path = tmp_path / "run"
        path.mkdir()
        torch.save(
            {
                "model": source.state_dict(),
                "config": TrainConfig(model=source.config).to_dict(),
                "categories": source.categories,
            },
            path / "best.pth",
        )
    elif fmt == "pretrained":
        path = tmp_path / "pretrained"
        source.save_pretrained(path)
    else:
        state, args = ours_to_official(source.config, source.state_dict())
        path = tmp_path / "official.pth"
        torch.save({"model": state, "args": argparse.Namespace(**args)}, path)
    return path


@pytest.mark.parametrize(
    "fmt, two_stage",
    [
        ("training-checkpoint", False),
        ("run-folder", False),
        ("pretrained", False),
        ("official", False),
        pytest.param("training-checkpoint", True, marks=pytest.mark.slow),
        pytest.param("official", True, marks=pytest.mark.slow),
    ],
)
def test_init_from_each_format(tmp_path, fmt, two_stage):
    source = _source(two_stage)
    path = _write(source, fmt, tmp_path)
    config = init_model_config(TrainConfig(init=str(path)), num_classes=len(TARGET))
    assert config.model == dataclasses.replace(source.config, num_classes=len(TARGET))  # architecture from the file
    model = DeformableDETR(config.model)
    lines = prepare_model(model, config, TARGET)
    assert len(lines) == 1 and str(path) in lines[0]
    named = fmt != "official"  # official files carry no category names (COCO's are assumed for 91 classes only)
    expected = source.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("class_heads."):
            torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
            continue
        assert value.shape[0] == len(TARGET)
        encoder_head = two_stage and key.startswith(f"class_heads.{source.config.num_prediction_heads - 1}.")
        if encoder_head:  # class-agnostic proposal scores: row 0 (objectness) is kept
            torch.testing.assert_close(value[0], expected[key][0], rtol=0, atol=0)
        elif named:
            torch.testing.assert_close(value[0], expected[key][2], rtol=0, atol=0)  # car <- car
        else:
            assert "none matched by name" in lines[0]


def test_init_from_the_other_family_brings_its_loss(tmp_path):
    # --init with a DETR checkpoint under a Deformable DETR preset (e.g. `finetune`) trains DETR with DETR's
    # softmax-loss weights, and the other way round, as --model does.
    from deformable_detr.models.detr import DETR, DetrConfig
    from deformable_detr.registry import default_loss_config

    torch.manual_seed(0)
    detr = DETR(DetrConfig.preset("detr-tiny"))
    detr.save_pretrained(tmp_path / "detr")
    config = init_model_config(TrainConfig.preset("finetune", init=str(tmp_path / "detr")), num_classes=len(TARGET))
    assert isinstance(config.model, DetrConfig) and config.loss == default_loss_config(config.model)
    assert (config.loss.cost_class, config.loss.loss_ce) == (1.0, 1.0)  # DETR's paper values
    assert config.optim == TrainConfig.preset("finetune").optim  # the rest of the recipe stays

    source = _source(two_stage=False)
    path = _write(source, "pretrained", tmp_path)
    detr_recipe = TrainConfig.preset("detr-demo", init=str(path))
    config = init_model_config(detr_recipe, num_classes=len(TARGET))
    assert isinstance(config.model, ModelConfig) and config.loss == default_loss_config(config.model)
    # the same family keeps the recipe's own loss
    config = init_model_config(TrainConfig.preset("demo", init=str(path)), num_classes=len(TARGET))
    assert config.loss == TrainConfig.preset("demo").loss
