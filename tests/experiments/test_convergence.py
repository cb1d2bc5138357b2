"""`experiment convergence` end to end on a tiny budget: the report and both plots, and resuming an interrupted run."""

import json
import os
import subprocess
import sys
import time

import pytest

from deformable_detr.cli import main
from deformable_detr.errors import ConfigError
from deformable_detr.experiments.convergence import ConvergenceConfig, run_convergence
from deformable_detr.training import engine

# Variants shrunk to ~0.1M parameters so a run takes seconds; the same overrides for both.
SMALL = ":backbone_base_width=8:d_model=32:n_heads=2:num_encoder_layers=1:num_decoder_layers=1:dim_feedforward=64:num_queries=5"
MODELS = ("detr" + SMALL, "deform=deformable" + SMALL + ":enc_n_points=2:dec_n_points=2")


def _config(out, tiny_dataset, **overrides):
    values = dict(
        out_dir=str(out),
        models=MODELS,
        epochs=1,
        eval_every=1,
        data_dir=str(tiny_dataset),
        train_size=96,
        batch_size=2,
        threads=1,
        scaling_sizes=(128, 192),
    )
    values.update(overrides)
    return ConvergenceConfig(**values)


@pytest.mark.slow
def test_tiny_experiment_writes_report_and_plots(tiny_dataset, tmp_path, one_thread):
    result = run_convergence(_config(tmp_path / "exp", tiny_dataset), progress=False)
    report = result.report.read_text()
    assert [row["model"] for row in result.summary] == ["detr" + SMALL.replace(":", "+"), "deform"]
    for row in result.summary:
        assert row["epochs"] == 1 and row["params"] > 0 and row["gflops"] > 0 and row["AP"] is not None
    assert result.summary[0]["reference_label"] == result.summary[0]["model"]  # DETR is the reference
    assert "| deform |" in report and "## Encoder cost vs image size" in report and "S^" in report
    assert {(r["model"], r["size"]) for r in result.scaling} == {
        (m, s) for m in ("deform", result.summary[0]["model"]) for s in (128, 192)
    }
    for plot in (result.convergence_plot, result.scaling_plot):
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_interrupted_experiment_resumes(tiny_dataset, tmp_path, one_thread, monkeypatch):
    config = _config(tmp_path / "exp", tiny_dataset, epochs=2, scaling_sizes=())
    end_of_epoch, calls = engine.end_of_epoch, []

    def interrupt_at_end_of_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # DETR's second epoch: trained, not yet checkpointed
            raise KeyboardInterrupt
        return end_of_epoch(*args, **kwargs)

    monkeypatch.setattr(engine, "end_of_epoch", interrupt_at_end_of_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_convergence(config, progress=False)
    monkeypatch.setattr(engine, "end_of_epoch", end_of_epoch)
    detr_run = tmp_path / "exp" / "runs" / ("detr" + SMALL.replace(":", "+")) / "seed0"
    assert not (detr_run / "done.json").exists()

    with pytest.raises(ConfigError, match="trained with other settings \\(epochs\\)"):
        run_convergence(_config(tmp_path / "exp", tiny_dataset, epochs=3, scaling_sizes=()), progress=False)

    result = run_convergence(config, progress=False)
    history = [json.loads(line) for line in (detr_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1]  # epoch 0 kept, epoch 1 trained once
    assert history[1]["step"] == 2 * history[0]["step"]
    assert all(run.epochs == 2 for run in result.runs)
    # finished runs are not reused for other settings either (nothing is trained or overwritten)
    before = (detr_run / "metrics.jsonl").read_bytes()
    with pytest.raises(ConfigError, match="trained with other settings \\(epochs\\)"):
        run_convergence(_config(tmp_path / "exp", tiny_dataset, epochs=3, scaling_sizes=()), progress=False)
    assert (detr_run / "metrics.jsonl").read_bytes() == before


def test_cli_bad_variant_is_one_line_error(tmp_path, capsys):
    status = main(["experiment", "convergence", "--out", str(tmp_path / "x"), "--epochs", "1", "--models", "detr,yolo"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model variant 'yolo'") and err.count("\n") == 1


@pytest.mark.parametrize("budget", [dict(epochs=40), dict(budget_minutes=12.0)])
def test_budget_is_not_capped_by_the_demo_step_count(tmp_path, budget):
    # the recipe starts from the demo preset, whose fixed step count must not cut an experiment's budget short
    from deformable_detr.experiments.convergence import base_train_config

    train = base_train_config(ConvergenceConfig(out_dir=str(tmp_path), **budget), tmp_path / "data")
    assert train.max_steps is None
    assert train.max_minutes == budget.get("budget_minutes")
    if "epochs" in budget:
        assert train.epochs == 40


def test_pretrained_backbone_is_shared_with_a_tenth_of_the_lr(tmp_path, one_thread):
    # the backbone stage alone (no training of the detectors): rendered once, trained, recorded, reused
    from deformable_detr.experiments.convergence import base_train_config, ensure_backbone
    from deformable_detr.models.backbone_weights import load_backbone_weights
    from deformable_detr.registry import build_model

    config = ConvergenceConfig(
        out_dir=str(tmp_path / "exp"), train_size=64, image_size=64, object_size=(20, 40), pretrain_steps=2
    )
    model_config = base_train_config(config, tmp_path / "data").model
    path = ensure_backbone(config, model_config, progress=False)
    assert (
        path == tmp_path / "exp" / "backbone.pth"
        and json.loads((path.parent / "backbone.json").read_text())["steps"] == 2
    )
    stamp = path.stat().st_mtime_ns
    assert ensure_backbone(config, model_config, progress=False) == path and path.stat().st_mtime_ns == stamp
    train = base_train_config(config, tmp_path / "data", path)
    assert train.backbone_weights == str(path) and train.optim.lr_backbone == pytest.approx(0.1 * train.optim.lr)
    load_backbone_weights(build_model(model_config).backbone.body, path)  # loads strictly
    with pytest.raises(ConfigError, match="pretrained 2 steps, not --pretrain-steps 3"):
        ensure_backbone(ConvergenceConfig(**{**config.__dict__, "pretrain_steps": 3}), model_config, progress=False)


@pytest.mark.slow
def test_parallel_jobs_train_the_same_runs_as_one_at_a_time(tiny_dataset, tmp_path, one_thread):
    serial = run_convergence(
        _config(tmp_path / "a", tiny_dataset, seeds=(0, 1), scaling_sizes=(), num_queries=4), progress=False
    )
    parallel = run_convergence(
        _config(tmp_path / "b", tiny_dataset, seeds=(0, 1), scaling_sizes=(), num_queries=4, jobs=2), progress=False
    )
    for one, other in zip(serial.runs, parallel.runs):
        assert json.loads((one.run_dir / "config.json").read_text())["model"]["num_queries"] == 4
        assert [r["train_loss"] for r in one.history] == [r["train_loss"] for r in other.history]
    summary = json.loads(parallel.summary_json.read_text())
    assert set(summary["models"]) == {run.label for run in parallel.runs}
    assert summary["models"][parallel.runs[0].label]["seeds"] == [0, 1]


def _alive(pid: int) -> bool:
    try:
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_pool_workers_exit_when_the_experiment_is_killed(tmp_path):
    # `--jobs N` trains in worker processes: killing the experiment must not leave them training on
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, signal, time, multiprocessing\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from deformable_detr.experiments.jobs import _exit_with\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, multiprocessing.get_context('spawn'), initializer=_exit_with,"
        " initargs=(os.getpid(),))\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 120)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    worker = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker)
