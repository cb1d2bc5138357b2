"""fit(): files written, time budget and step cap honoured, non-finite steps skipped then refused, grad accumulation."""

import dataclasses
import json
import math

import pytest
import torch

from deformable_detr.training import checkpoint as ckpt
from deformable_detr.training.criterion import SetCriterion
from deformable_detr.training.engine import fit
from deformable_detr.training.loop import NonFiniteLossError


def test_fit_writes_files_and_stops_at_max_steps(tiny_train_config):
    config = dataclasses.replace(tiny_train_config, epochs=3, max_steps=3, eval_every=1)
    result = fit(config, progress=False)
    assert result.steps == 3 and result.epochs == 2  # 2 steps per epoch: stops inside epoch 2
    out = result.output_dir
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1] and all("AP50" in r and "train_loss_giou_0" in r for r in records)
    assert records[1]["partial"] and "partial" not in records[0]
    for name in ("checkpoint.pth", "best.pth", "curves.png", "config.json"):
        assert (out / name).is_file(), name
    assert set(result.metrics) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    state = ckpt.load_checkpoint(out / "checkpoint.pth")["state"]
    assert (state["epoch"], state["batches_done"], state["step"]) == (
        1,
        1,
        3,
    )  # mid-epoch position, not "epoch finished"
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tmp") == []
    assert (out / "checkpoint.pth").stat().st_mode & 0o777 == (out / "config.json").stat().st_mode & 0o777


def test_time_budget_ends_training_cleanly(tiny_train_config):
    config = dataclasses.replace(tiny_train_config, epochs=50, max_minutes=1e-6)
    result = fit(config, progress=False)
    assert result.steps == 1 and result.epochs == 1 and "AP" in result.metrics
    again = fit(config, resume=True, progress=False)  # the budget is spent: no further step
    assert again.steps == 1


def _poison_from(monkeypatch, first_bad_call: int, last_bad_call: int = 10**9):
    original, calls = SetCriterion.forward, []

    def poisoned(self, outputs, targets):
        losses = original(self, outputs, targets)
        calls.append(1)
        if first_bad_call <= len(calls) - 1 <= last_bad_call:
            losses["loss_giou"] = losses["loss_giou"] * float("nan")
        return losses

    monkeypatch.setattr(SetCriterion, "forward", poisoned)
    return calls


def test_non_finite_step_is_skipped_with_a_warning(tiny_train_config, monkeypatch):
    _poison_from(monkeypatch, 1, 1)
    with pytest.warns(UserWarning, match=r"step 1: non-finite loss .*loss_giou=nan.*step skipped \(1 of at most"):
        result = fit(tiny_train_config, progress=False)
    assert result.steps == 4 and result.nonfinite_steps == 1
    model = ckpt.load_checkpoint(result.checkpoint)["model"]
    assert all(torch.isfinite(v).all() for v in model.values())


def test_too_many_non_finite_steps_stop_with_last_checkpoint_intact(tiny_train_config, monkeypatch):
    config = dataclasses.replace(tiny_train_config, checkpoint_every=1, max_nonfinite_steps=1, epochs=3)
    _poison_from(monkeypatch, 2)
    with pytest.warns(UserWarning, match="step 2: non-finite"):
        with pytest.raises(
            NonFiniteLossError, match=r"step 3: non-finite .*2 such steps \(max_nonfinite_steps = 1\).*intact"
        ):
            fit(config, progress=False)
    saved = ckpt.load_checkpoint(tiny_train_config.output_dir + "/checkpoint.pth")
    assert saved["state"]["step"] == 3 and all(torch.isfinite(v).all() for v in saved["model"].values())


@pytest.mark.parametrize("images, accum, steps_per_epoch", [(4, 3, 1), (6, 2, 2)])
def test_grad_accumulation_uses_every_batch(tiny_train_config, dataset16, monkeypatch, images, accum, steps_per_epoch):
    """2 batches < 3 micro-steps: one step of 2; 3 batches with 2 per step: steps of 2 and 1 (none dropped)."""
    calls = _poison_from(monkeypatch, math.inf)
    config = dataclasses.replace(
        tiny_train_config, data_dir=str(dataset16), grad_accum_steps=accum, max_train_images=images
    )
    result = fit(config, progress=False)
    assert result.steps == 2 * steps_per_epoch and len(calls) == 2 * images // 2


def test_time_budget_bar_survives_the_last_step_ending_past_the_budget(capsys):
    # the step that crosses the budget ends after it; tqdm drops a total that n overshoots, and a bar format
    # that formatted the total as a number then crashed the run at its very end
    from types import SimpleNamespace

    from deformable_detr.training.progress_bar import advance_bar, open_bar

    run = SimpleNamespace(
        progress=True,
        is_main=True,
        budget_seconds=10.0,
        total_steps=None,
        config=SimpleNamespace(max_steps=None, log_every=1),
        state=SimpleNamespace(train_seconds=3.0, step=1, epoch=0),
    )
    with open_bar(run) as bar:
        run.state.train_seconds, run.state.step = 12.6, 2
        advance_bar(run, bar, {"loss": 1.0}, 1e-3)
        assert bar.n == 10
    assert "10/10 s budget" in capsys.readouterr().err


def test_a_run_shorter_than_its_warmup_reaches_its_lr(tiny_train_config, caplog):
    from deformable_detr.training.callbacks import TrainCallback
    from deformable_detr.training.optim import OptimConfig

    class RecordLr(TrainCallback):
        lrs = []

        def after_step(self, run):
            self.lrs.append({g["name"]: g["lr"] for g in run.optimizer.param_groups})

    optim = OptimConfig(lr=1e-3, lr_backbone=1e-4, schedule="cosine", warmup_steps=100, min_lr_ratio=0.05)
    config = dataclasses.replace(tiny_train_config, optim=optim, epochs=5, max_steps=4)
    with caplog.at_level("INFO", logger="deformable_detr.training.setup"):
        fit(config, callbacks=[RecordLr()], progress=False)
    # 4 steps: the warm-up lasts ceil(4 / 8) = 1 step, so the first step runs at the full lr (cosine at 0)
    assert len(RecordLr.lrs) == 4
    assert RecordLr.lrs[0]["rest"] == pytest.approx(1e-3) and RecordLr.lrs[0]["backbone"] == pytest.approx(1e-4)
    assert "warm-up: 100 steps is more than an eighth of this 4-step run; it is shortened to 1 step," in caplog.text
