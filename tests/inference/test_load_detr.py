"""deformable_detr.load of DETR weights: the registry's class (DETR, never DeformableDETR) from every format
DETR has (training checkpoint, run folder, save_pretrained folder, bare state dict with a DetrConfig).

Oracle: the forward of the DETR that was saved, on the same input, equal bit for bit.
"""

from __future__ import annotations

import pytest
import torch

import deformable_detr
from deformable_detr.errors import CheckpointError, ConfigError
from deformable_detr.interop.official import ours_to_official
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.models.detr import DETR
from deformable_detr.pipeline.contract import Detector
from deformable_detr.pipeline.processor import PreprocessConfig
from tiny_models import SHAPES, tiny_config, write_detr_run

IMAGES = torch.linspace(-1, 1, 2 * 3 * 48 * 40).reshape(2, 3, 48, 40)


def _same_as(loaded, saved: DETR) -> None:
    assert type(loaded) is DETR and isinstance(loaded, Detector)
    assert loaded.config == saved.config and not loaded.training
    with torch.no_grad():
        got, expected = loaded(IMAGES), saved(IMAGES)
    assert torch.equal(got["pred_logits"], expected["pred_logits"])
    assert torch.equal(got["pred_boxes"], expected["pred_boxes"])


def test_detr_training_checkpoint_and_run_folder_load_as_detr(tmp_path, one_thread):
    """Kills the mutant "a DETR checkpoint built as DeformableDETR": the class must come from the saved config."""
    folder, saved = write_detr_run(tmp_path / "run")
    for path in (folder, folder / "best.pth"):
        model = deformable_detr.load(path)
        _same_as(model, saved)
        assert model.checkpoint_info.format == "training-checkpoint"
        assert [c["name"] for c in model.categories] == SHAPES
        assert model.preprocess == PreprocessConfig(min_size=64, max_size=96)  # the run's val_size / max_size


def test_detr_save_pretrained_round_trip(tmp_path, one_thread):
    _, saved = write_detr_run(tmp_path / "run")
    saved.preprocess = PreprocessConfig(min_size=72, max_size=100)
    saved.save_pretrained(tmp_path / "pretrained")
    for model in (deformable_detr.load(tmp_path / "pretrained"), DETR.from_pretrained(tmp_path / "pretrained")):
        _same_as(model, saved)
        assert model.checkpoint_info.format == "pretrained"
        assert model.preprocess == saved.preprocess and model.categories == saved.categories
    with pytest.raises(ConfigError, match=r"config\.json.*architecture"):  # DETR's folder is no Deformable DETR
        DeformableDETR.from_pretrained(tmp_path / "pretrained")


def test_detr_bare_state_dict_loads_with_its_config(tmp_path, one_thread):
    _, saved = write_detr_run(tmp_path / "run")
    torch.save(saved.state_dict(), tmp_path / "weights.pth")
    model = deformable_detr.load(tmp_path / "weights.pth", config=saved.config)
    _same_as(model, saved)
    assert model.checkpoint_info.format == "state-dict"


def test_deformable_weights_refuse_a_detr_config_in_one_line(tmp_path, one_thread):
    _, detr = write_detr_run(tmp_path / "run")
    deformable = DeformableDETR(tiny_config(num_classes=6)).eval()
    official, args = ours_to_official(deformable.config, deformable.state_dict())
    torch.save({"model": official, "args": args}, tmp_path / "official.pth")
    with pytest.raises(CheckpointError, match=r"official\.pth: an official Deformable-DETR checkpoint cannot load as"):
        deformable_detr.load(tmp_path / "official.pth", config=detr.config)
