"""fit(): files written, time budget and step cap honoured, non-finite loss reported by step and term."""

import dataclasses
import json

import pytest
import torch

from deformable_detr.training.criterion import SetCriterion
from deformable_detr.training.engine import fit


def test_fit_writes_files_and_stops_at_max_steps(tiny_train_config):
    config = dataclasses.replace(tiny_train_config, epochs=3, max_steps=3, eval_every=1)
    result = fit(config, progress=False)
    assert result.steps == 3 and result.epochs == 2  # 2 steps per epoch: stops inside epoch 2
    out = result.output_dir
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1] and all("AP50" in r and "train_loss_giou_0" in r for r in records)
    for name in ("checkpoint.pth", "best.pth", "curves.png", "config.json"):
        assert (out / name).is_file(), name
    assert set(result.metrics) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}


def test_time_budget_ends_training_cleanly(tiny_train_config):
    config = dataclasses.replace(tiny_train_config, epochs=50, max_minutes=1e-6)
    result = fit(config, progress=False)
    assert result.steps == 1 and result.epochs == 1 and "AP" in result.metrics


def test_non_finite_loss_names_step_and_terms(tiny_train_config, monkeypatch):
    original = SetCriterion.forward

    def poisoned(self, outputs, targets):
        losses = original(self, outputs, targets)
        losses["loss_giou"] = losses["loss_giou"] * float("nan")
        return losses

    monkeypatch.setattr(SetCriterion, "forward", poisoned)
    with pytest.raises(FloatingPointError, match=r"step 0: loss is nan \(terms: .*loss_giou=nan"):
        fit(tiny_train_config, progress=False)
