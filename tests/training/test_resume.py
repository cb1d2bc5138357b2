"""Exact resume: a run interrupted anywhere (mid-step, mid-evaluation, mid-checkpoint-write, at a random
moment, by SIGKILL) and resumed ends with the same weights, optimizer state and metrics, bit for bit, as
a run never interrupted; with a time budget, the same given the same step count (a fake clock)."""

import dataclasses
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.training.config import TrainConfig
from deformable_detr.training.criterion import SetCriterion
from deformable_detr.training.engine import fit
from deformable_detr.training.optim import OptimConfig

HERE = Path(__file__).parent


def _config(data_dir, out, **overrides) -> TrainConfig:
    """Tiny model with dropout (so the RNG state matters), 8 steps per epoch, 2 epochs, evaluated each epoch."""
    model = ModelConfig.preset(
        "tiny",
        backbone_base_width=8,
        d_model=32,
        n_heads=2,
        enc_n_points=2,
        dec_n_points=2,
        num_encoder_layers=1,
        num_decoder_layers=2,
        dim_feedforward=64,
        num_queries=10,
        dropout=0.1,
    )
    config = TrainConfig(
        model=model,
        optim=OptimConfig(lr=1e-3, lr_backbone=1e-3, warmup_steps=2),
        data_dir=str(data_dir),
        output_dir=str(out),
        train_scales=(56, 64),
        max_size=80,
        crop_resize=(48,),
        crop_size=(32, 48),
        val_size=64,
        epochs=2,
        batch_size=2,
        eval_every=1,
        workers=0,
        threads=1,
        seed=0,
        log_every=1,
        checkpoint_every=3,
    )
    return dataclasses.replace(config, **overrides)


def _fake_clock():
    ticks = itertools.count()
    return lambda: next(ticks) * 0.5


def _assert_same_run(reference: Path, resumed: Path) -> None:
    a = torch.load(reference / "checkpoint.pth", weights_only=True)
    b = torch.load(resumed / "checkpoint.pth", weights_only=True)
    assert a["state"]["step"] == b["state"]["step"] and a["state"]["epoch"] == b["state"]["epoch"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for index, slots in a["optimizer"]["state"].items():
        for name, value in slots.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), (index, name)
    best_a = torch.load(reference / "best.pth", weights_only=True)
    best_b = torch.load(resumed / "best.pth", weights_only=True)
    assert best_a["step"] == best_b["step"] and all(
        torch.equal(best_a["model"][k], best_b["model"][k]) for k in best_a["model"]
    )

    def records(folder):
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "train_seconds"} for line in lines]

    assert records(reference) == records(resumed)
    assert [p.name for p in resumed.iterdir() if p.name.endswith(".tmp")] == []


class _Interrupt(BaseException):
    """Stands in for a kill in the in-process test (not an Exception, so nothing catches it)."""


def _interrupt_on_call(monkeypatch, owner, name, n):
    original, calls = getattr(owner, name), itertools.count(1)

    def wrapper(*args, **kwargs):
        if next(calls) == n:
            raise _Interrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def test_interrupted_mid_step_and_mid_evaluation_resumes_bit_for_bit(dataset16, tmp_path, monkeypatch, one_thread):
    """In process: 4 steps per epoch, stopped inside step 4 (after the checkpoint of step 3), then inside the
    first evaluation; each time resumed."""
    config = _config(dataset16, tmp_path / "reference", max_train_images=8)
    fit(config, progress=False)
    resumed = dataclasses.replace(config, output_dir=str(tmp_path / "resumed"))
    for owner, name, n, resume in ((SetCriterion, "forward", 4, False), (DeformableDETR, "postprocess", 1, True)):
        with monkeypatch.context() as patch:
            _interrupt_on_call(patch, owner, name, n)
            with pytest.raises(_Interrupt):
                fit(resumed, resume=resume, progress=False)
    fit(resumed, resume=True, progress=False)
    _assert_same_run(tmp_path / "reference", tmp_path / "resumed")


def test_ctrl_c_writes_a_checkpoint_after_the_step_in_progress_and_resume_is_bit_for_bit(
    dataset16, tmp_path, one_thread
):
    """SIGINT at the end of step 4 (checkpoints every 3 steps): training stops there with a checkpoint at step 4
    (not back at step 3), raises KeyboardInterrupt, and the resumed run equals an uninterrupted one."""
    from deformable_detr.training.callbacks import TrainCallback

    class CtrlCAfterStep4(TrainCallback):
        def after_step(self, run):
            if run.state.step == 4:
                os.kill(os.getpid(), signal.SIGINT)

    config = _config(dataset16, tmp_path / "reference", max_train_images=8)
    fit(config, progress=False)
    resumed = dataclasses.replace(config, output_dir=str(tmp_path / "resumed"))
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        fit(resumed, callbacks=[CtrlCAfterStep4()], progress=False)
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    assert torch.load(tmp_path / "resumed" / "checkpoint.pth", weights_only=True)["state"]["step"] == 4
    fit(resumed, resume=True, progress=False)
    _assert_same_run(tmp_path / "reference", tmp_path / "resumed")


def test_stop_by_max_steps_then_extend_equals_one_run(dataset16, tmp_path, one_thread):
    """max_steps stops inside an epoch with a mid-epoch checkpoint; --resume with a larger max_steps continues."""
    config = _config(dataset16, tmp_path / "reference", max_train_images=8, max_steps=7)
    fit(config, progress=False)
    stopped = dataclasses.replace(config, output_dir=str(tmp_path / "resumed"), max_steps=2)
    assert fit(stopped, progress=False).steps == 2
    result = fit(dataclasses.replace(stopped, max_steps=7), resume=True, progress=False)
    assert result.steps == 7
    a = torch.load(tmp_path / "reference" / "checkpoint.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoint.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_plain_resume_after_an_interrupted_extension_keeps_the_extension(
    dataset16, tmp_path, monkeypatch, one_thread, caplog
):
    from deformable_detr.training.config import TrainConfig

    out = tmp_path / "run"
    config = _config(dataset16, out, max_train_images=8, max_steps=2)
    fit(config, progress=False)
    with monkeypatch.context() as patch:
        _interrupt_on_call(patch, SetCriterion, "forward", 4)  # inside step 6 of the extension to 7 steps
        with pytest.raises(_Interrupt):
            fit(dataclasses.replace(config, max_steps=7), resume=True, progress=False)
    assert TrainConfig.of_run(out).max_steps == 7  # what `deformable-detr train --resume OUT` reads
    assert fit(TrainConfig.of_run(out), resume=True, progress=False).steps == 7
    with caplog.at_level("WARNING"):
        assert fit(dataclasses.replace(TrainConfig.of_run(out), epochs=9), resume=True, progress=False).steps == 7
    assert "nothing left to train" in caplog.text and "--max-steps" in caplog.text


def _worker(config_path: Path, mode: str, n, *flags: str, kill_after: float | None = None) -> int:
    command = [sys.executable, str(HERE / "kill_worker.py"), str(config_path), mode, str(n), *flags]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parents[1] / "src"), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:  # seconds after the run has started (written config.json)
        started = Path(json.loads(config_path.read_text())["output_dir"]) / "config.json"
        while not started.exists() and process.poll() is None:
            time.sleep(0.05)
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode in (0, -signal.SIGKILL), stderr[-3000:]
    return process.returncode


# Each case: kill points of the first run and of the first resume; "write" counts torch.save calls (the
# checkpoints at steps 3 and 6, before epoch 0's evaluation, best.pth, after it, ...).
CASES = (
    [("step", seed) for seed in (0, 1)]
    + [("eval", seed) for seed in (0, 1)]
    + [("write", seed) for seed in (0, 1, 2)]
    + [("timer", 0), ("budget", 0)]
)


@pytest.mark.slow
@pytest.mark.parametrize("mode, seed", CASES)
def test_sigkill_anywhere_then_resume_is_bit_for_bit(dataset16, tmp_path_factory, mode, seed):
    chooser = random.Random(f"{mode}{seed}")
    tmp = tmp_path_factory.mktemp(f"kill_{mode}_{seed}")
    overrides = (
        dict(max_minutes=5.5 / 60, optim=OptimConfig(lr=1e-3, lr_backbone=1e-3, schedule="cosine"))
        if mode == "budget"
        else {}
    )
    reference = _config(dataset16, tmp / "reference", **overrides)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = fit(reference, progress=False, **({"clock": _fake_clock()} if mode == "budget" else {}))
    finally:
        torch.set_num_threads(before)
    if mode == "budget":
        assert result.steps == 11  # 0.5 fake seconds per step, 5.5 s budget: stops inside epoch 1
    config = dataclasses.replace(reference, output_dir=str(tmp / "resumed"))
    config_path = tmp / "config.json"
    config_path.write_text(json.dumps(config.to_dict()))
    flags = ("fake_clock",) if mode == "budget" else ()
    kills = 0
    if mode == "timer":
        kills += _worker(config_path, "none", 0, kill_after=chooser.uniform(0.5, 6)) != 0
    else:
        kind = "step" if mode == "budget" else mode
        limit = {"step": 16, "eval": 2, "write": 9}[kind]
        first, second = chooser.randint(1, limit), chooser.randint(1, limit)
        kills += _worker(config_path, kind, first, *flags) != 0
        kills += _worker(config_path, kind, second, "resume", *flags) != 0
    assert _worker(config_path, "none", 0, "resume", *flags) == 0
    assert kills >= 1 or mode == "timer"
    _assert_same_run(tmp / "reference", tmp / "resumed")


@pytest.mark.slow
def test_resume_from_a_legacy_epoch_checkpoint_continues_exactly(tiny_dataset, tmp_path, one_thread):
    """A checkpoint of the first format (written only at an epoch's end: `epoch`, `step`, `elapsed_s`, `best_ap`,
    one `rng` state; no `state`, no checksum) resumes: the next epoch trains exactly as the uninterrupted run's,
    and the history is metrics.jsonl's lines of the epochs the checkpoint holds (a later line is dropped)."""
    reference = tmp_path / "reference"
    config = _config(tiny_dataset, reference, keep=2)  # 2 steps per epoch; keep links each epoch's checkpoint
    fit(config, progress=False)
    after_epoch_one = torch.load(reference / "checkpoint_epoch1.pth", weights_only=True)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save(
        {
            "model": after_epoch_one["model"],
            "optimizer": after_epoch_one["optimizer"],
            "epoch": 1,
            "step": after_epoch_one["state"]["step"],
            "elapsed_s": after_epoch_one["state"]["train_seconds"],
            "best_ap": after_epoch_one["state"]["best_ap"],
            "rng": after_epoch_one["rng"][0],
            "config": after_epoch_one["config"],
        },
        legacy / "checkpoint.pth",
    )
    (legacy / "config.json").write_text((reference / "config.json").read_text())
    first_line, *_ = (reference / "metrics.jsonl").read_text().splitlines()
    stale = json.dumps({"epoch": 1, "step": 99, "AP": 1.0})  # written after the checkpoint by a killed run
    (legacy / "metrics.jsonl").write_text(f"{first_line}\n{stale}\n")

    fit(dataclasses.replace(config, output_dir=str(legacy)), resume=True, progress=False)
    a = torch.load(reference / "checkpoint.pth", weights_only=True)
    b = torch.load(legacy / "checkpoint.pth", weights_only=True)
    assert a["state"]["step"] == b["state"]["step"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key

    def records(folder):
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "train_seconds"} for line in lines]

    assert len(records(legacy)) == 2 and records(legacy) == records(reference)
