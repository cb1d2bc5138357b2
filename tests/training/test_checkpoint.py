"""Checkpoints: atomic write, RNG round trip, strict loading, and exact resume."""

import random

import numpy as np
import pytest
import torch

from deformable_detr.errors import CheckpointError
from deformable_detr.training import checkpoint as ckpt
from deformable_detr.training.engine import fit


def test_rng_state_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ckpt.atomic_save({"rng": ckpt.rng_state()}, tmp_path / "state.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    state = torch.load(tmp_path / "state.pth", weights_only=True)
    ckpt.set_rng_state(state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert [p.name for p in tmp_path.iterdir()] == ["state.pth"]  # no temp file left behind


def test_missing_checkpoint_message(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        ckpt.load_checkpoint(tmp_path / "nope.pth")


def test_resume_gives_identical_parameters(tiny_train_config, tmp_path):
    import dataclasses

    straight = fit(dataclasses.replace(tiny_train_config, output_dir=str(tmp_path / "a")), progress=False)
    split_dir = str(tmp_path / "b")
    fit(dataclasses.replace(tiny_train_config, output_dir=split_dir, epochs=1), progress=False)
    resumed = fit(dataclasses.replace(tiny_train_config, output_dir=split_dir), resume=True, progress=False)
    assert resumed.steps == straight.steps
    a = torch.load(tmp_path / "a" / "checkpoint.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pth", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    history = [line for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines() if line]
    assert len(history) == 2
