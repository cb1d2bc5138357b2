"""`--init` weight transfer (class heads remapped by name, everything else strict) and the weight EMA.

Oracles: the source's own tensors (reused ones must be equal), the fresh model's focal prior bias
(-log(99)) for new classes, and an EMA computed by hand from the raw weights after each step.
"""

import dataclasses
import math

import pytest
import torch

from deformable_detr.checkpoint.state_dict import CheckpointMismatchError
from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.training.ema import ModelEMA
from deformable_detr.training.warm_start import category_mapping, transfer_weights


def tiny_config(**overrides):
    values = dict(
        backbone="resnet18",
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
        dropout=0.0,
    )
    return ModelConfig(**{**values, **overrides})


SOURCE = [
    {"id": 1, "name": "circle"},
    {"id": 2, "name": "square"},
    {"id": 3, "name": "Star"},
    {"id": 4, "name": "ring"},
]
TARGET = [
    {"id": 10, "name": "hexagon"},
    {"id": 11, "name": "star"},
    {"id": 12, "name": "arrow"},
    {"id": 13, "name": "circle"},
    {"id": 14, "name": "moon"},
    {"id": 15, "name": "x"},
]


def _pair(**variant):
    torch.manual_seed(0)
    source = DeformableDETR(tiny_config(num_classes=len(SOURCE), **variant))
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(torch.randn_like(parameter))  # "trained": differs from any fresh init
    torch.manual_seed(1)
    target = DeformableDETR(dataclasses.replace(source.config, num_classes=len(TARGET)))
    return source, target


def test_category_mapping_by_name():
    assert category_mapping(SOURCE, TARGET) == {1: 2, 3: 0}  # star <- Star, circle <- circle


@pytest.mark.parametrize("variant", [{}, {"with_box_refine": True}, {"with_box_refine": True, "two_stage": True}])
def test_reused_tensors_equal_the_source_and_heads_are_remapped(variant):
    source, target = _pair(**variant)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    summary = transfer_weights(target, source.state_dict(), SOURCE, TARGET, source="src.pth")
    loaded, original = target.state_dict(), source.state_dict()
    heads = [k for k in loaded if k.startswith("class_heads.")]
    assert summary.reinitialised == len(heads) and summary.reused == len(loaded) - len(heads)
    for key, value in loaded.items():
        if key not in heads:
            torch.testing.assert_close(value, original[key], rtol=0, atol=0)
    encoder_head = f"class_heads.{source.config.num_prediction_heads - 1}." if variant.get("two_stage") else None
    for key in heads:
        assert loaded[key].shape[0] == len(TARGET)
        torch.testing.assert_close(loaded[key][1], original[key][2], rtol=0, atol=0)  # star <- Star
        torch.testing.assert_close(loaded[key][3], original[key][0], rtol=0, atol=0)  # circle <- circle
        for row in (2, 4, 5):  # new classes keep the fresh initialisation
            torch.testing.assert_close(loaded[key][row], fresh[key][row], rtol=0, atol=0)
        if key.endswith("bias"):
            assert loaded[key][5].item() == pytest.approx(-math.log(99), abs=1e-6)  # focal prior 0.01
        if encoder_head and key.startswith(encoder_head):
            torch.testing.assert_close(loaded[key][0], original[key][0], rtol=0, atol=0)  # objectness row kept
    assert summary.mapping == {
        "hexagon": None,
        "star": "Star",
        "arrow": None,
        "circle": "circle",
        "moon": None,
        "x": None,
    }
    line = summary.format()
    assert "\n" not in line and "2 matched by name" in line and "4 new" in line and "src.pth" in line


def test_denoising_label_embedding_is_remapped_like_the_class_heads():
    # A model trained with denoising has a (K + 1, C) label embedding; its class rows follow the category
    # mapping and its padding row (the last) is kept, so `--init` works across class counts.
    source, target = _pair(two_stage=True, with_box_refine=True, denoising=True)
    fresh = target.state_dict()["label_embed.weight"].clone()
    summary = transfer_weights(target, source.state_dict(), SOURCE, TARGET)
    loaded, original = target.state_dict()["label_embed.weight"], source.state_dict()["label_embed.weight"]
    assert loaded.shape == (len(TARGET) + 1, original.shape[1]) and original.shape[0] == len(SOURCE) + 1
    torch.testing.assert_close(loaded[1], original[2], rtol=0, atol=0)  # star <- Star
    torch.testing.assert_close(loaded[3], original[0], rtol=0, atol=0)  # circle <- circle
    torch.testing.assert_close(loaded[-1], original[-1], rtol=0, atol=0)  # padding row
    for row in (0, 2, 4, 5):
        torch.testing.assert_close(loaded[row], fresh[row], rtol=0, atol=0)
    heads = [k for k in target.state_dict() if k.startswith("class_heads.")]
    assert summary.reinitialised == len(heads) + 1


def test_same_classes_reuse_every_tensor():
    source, _ = _pair()
    target = DeformableDETR(source.config)
    summary = transfer_weights(target, source.state_dict(), SOURCE, SOURCE)
    assert summary.reinitialised == 0
    for key, value in target.state_dict().items():
        torch.testing.assert_close(value, source.state_dict()[key], rtol=0, atol=0)


def test_other_architecture_is_one_strict_error():
    source, _ = _pair()
    other = DeformableDETR(tiny_config(num_classes=len(TARGET), d_model=64))
    with pytest.raises(CheckpointMismatchError, match="shape"):
        transfer_weights(other, source.state_dict(), SOURCE, TARGET)


def test_ema_equals_hand_computed_average():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    decay, warmup = 0.9, 3
    ema = ModelEMA(model, decay, warmup_steps=warmup)
    expected = {k: v.clone().double() for k, v in model.state_dict().items()}
    for step in range(1, 8):
        optimizer.zero_grad()
        model(torch.randn(5, 3)).square().sum().backward()
        optimizer.step()
        d = decay * (1 - math.exp(-step / warmup))
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                expected[key] = d * expected[key] + (1 - d) * value.double()
            else:
                expected[key] = value.clone()
        ema.update(model)
    for key, value in ema.module.state_dict().items():
        torch.testing.assert_close(
            value.double(),
            expected[key].to(value.device).double() if value.dtype.is_floating_point else expected[key].double(),
            rtol=1e-6,
            atol=1e-7,
        )
    assert ema.module.state_dict()["1.num_batches_tracked"].item() == 7
    restored = ModelEMA(model, decay, warmup)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 7
    torch.testing.assert_close(restored.module.state_dict()["0.weight"], ema.module.state_dict()["0.weight"])
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(model, 1.0)
