"""One strict-load error listing every missing, unexpected and mis-shaped key."""

from __future__ import annotations

import pytest
import torch

from deformable_detr.checkpoint.state_dict import CheckpointMismatchError, load_state_dict_strict
from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR


@pytest.fixture(scope="module")
def model():
    return DeformableDETR(ModelConfig.preset("tiny", num_classes=3, num_queries=5))


def test_mismatch_lists_missing_unexpected_and_mis_shaped(model):
    state = dict(model.state_dict())
    del state["transformer.level_embed"]
    state["foo.bar"] = torch.zeros(1)
    state["class_heads.0.weight"] = torch.zeros(7, 64)
    with pytest.raises(CheckpointMismatchError) as raised:
        load_state_dict_strict(model, state, "ckpt.pth")
    assert str(raised.value) == (
        "ckpt.pth: checkpoint does not match the model: 1 missing (transformer.level_embed); "
        "1 unexpected (foo.bar); 1 mis-shaped (class_heads.0.weight: checkpoint [7, 64] vs model [3, 64]); "
        "check that the config matches the checkpoint (or pass config=...)"
    )
    assert raised.value.missing == ["transformer.level_embed"] and raised.value.unexpected == ["foo.bar"]
    assert isinstance(raised.value, ValueError)


def test_mismatch_shortens_long_lists(model):
    state = {key: value for key, value in model.state_dict().items() if not key.startswith("backbone.")}
    twelve_then_count = r"\d+ missing \(backbone\.body\.\S+(, \S+){11}, \.\.\. and \d+ more\)"
    with pytest.raises(CheckpointMismatchError, match=twelve_then_count):
        load_state_dict_strict(model, state, "ckpt.pth")


def test_matching_state_dict_loads(model):
    target = DeformableDETR(model.config)
    load_state_dict_strict(target, model.state_dict(), "ckpt.pth")
    for key, value in model.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
