"""Checkpoints: atomic write, RNG round trip, strict loading, and exact resume."""

import os
import random

import numpy as np
import pytest
import torch

from deformable_detr.checkpoint.files import atomic_save
from deformable_detr.errors import CheckpointError, ConfigError
from deformable_detr.training import checkpoint as ckpt
from deformable_detr.training.engine import fit


def test_rng_state_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    atomic_save({"rng": ckpt.rng_state()}, tmp_path / "state.pth")
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


def test_atomic_write_mode_previous_copy_and_no_leftovers(tmp_path):
    umask = os.umask(0o022)
    try:
        path = tmp_path / "checkpoint.pth"
        ckpt.save_checkpoint(path, {"model": {"w": torch.zeros(2)}})
        ckpt.save_checkpoint(path, {"model": {"w": torch.ones(2)}})
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
    assert torch.equal(ckpt.load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert torch.equal(ckpt.load_checkpoint(tmp_path / "checkpoint.prev.pth")["model"]["w"], torch.zeros(2))
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.pth", "checkpoint.prev.pth"}


def test_corrupt_checkpoints_are_detected(tmp_path):
    good = tmp_path / "good.pth"
    ckpt.save_checkpoint(good, {"model": {"w": torch.arange(1000.0)}}, keep_previous=False)
    data = good.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        ckpt.load_checkpoint(tmp_path / "truncated.pth")
    state = torch.load(good, weights_only=True)
    state["model"]["w"][7] = -1.0  # a changed value under the old checksum
    torch.save(state, tmp_path / "tampered.pth")
    with pytest.raises(CheckpointError, match="tampered.pth: checksum mismatch"):
        ckpt.load_checkpoint(tmp_path / "tampered.pth")


def test_newest_good_checkpoint_is_used_with_a_warning(tmp_path):
    ckpt.save_checkpoint(tmp_path / "checkpoint.pth", {"model": {}, "state": {"step": 4}})
    ckpt.save_checkpoint(tmp_path / "checkpoint.pth", {"model": {}, "state": {"step": 8}})
    assert ckpt.load_latest_checkpoint(tmp_path)[0]["state"]["step"] == 8
    (tmp_path / "checkpoint.pth").write_bytes((tmp_path / "checkpoint.pth").read_bytes()[:100])
    with pytest.warns(UserWarning, match=r"checkpoint.pth: .*resuming from .*checkpoint.prev.pth instead \(step 4\)"):
        state, path = ckpt.load_latest_checkpoint(tmp_path)
    assert state["state"]["step"] == 4 and path.name == "checkpoint.prev.pth"
    (tmp_path / "checkpoint.prev.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        ckpt.load_latest_checkpoint(tmp_path)


def test_temp_leftovers_removed_and_runs_not_overwritten(tmp_path):
    for name in ("checkpoint.pth.1a2b3c4d.tmp", "best.pth.00ff00ff.tmp", "users_own.tmp", "config.json"):
        (tmp_path / name).write_bytes(b"")
    removed = ckpt.remove_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == ["best.pth.00ff00ff.tmp", "checkpoint.pth.1a2b3c4d.tmp"]
    with pytest.raises(ConfigError, match=r"already holds a training run \(config.json\); continue it with --resume"):
        ckpt.prepare_output_dir(tmp_path, resume=False, overwrite=False)
    ckpt.prepare_output_dir(tmp_path, resume=True, overwrite=False)
    ckpt.prepare_output_dir(tmp_path, resume=False, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["users_own.tmp"]


@pytest.mark.slow
def test_corrupt_newest_checkpoint_and_missing_best_still_resume_exactly(tiny_train_config, tmp_path):
    import dataclasses

    straight = dataclasses.replace(tiny_train_config, output_dir=str(tmp_path / "a"), eval_every=1)
    fit(straight, progress=False)
    split = dataclasses.replace(straight, output_dir=str(tmp_path / "b"), epochs=1)
    fit(split, progress=False)
    run = tmp_path / "b"
    (run / "checkpoint.pth").write_bytes((run / "checkpoint.pth").read_bytes()[:-64])
    (run / "best.pth").unlink()
    with pytest.warns(UserWarning, match="checkpoint.prev.pth instead"):
        fit(dataclasses.replace(split, epochs=2), resume=True, progress=False)
    a = torch.load(tmp_path / "a" / "checkpoint.pth", weights_only=True)["model"]
    b = torch.load(run / "checkpoint.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a) and (run / "best.pth").is_file()
