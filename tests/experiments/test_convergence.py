"""`experiment convergence` end to end on a tiny budget: the report and both plots, and resuming an interrupted run."""

import json

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

    with pytest.raises(ConfigError, match="started with other settings \\(epochs\\)"):
        run_convergence(_config(tmp_path / "exp", tiny_dataset, epochs=3, scaling_sizes=()), progress=False)

    result = run_convergence(config, progress=False)
    history = [json.loads(line) for line in (detr_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1]  # epoch 0 kept, epoch 1 trained once
    assert history[1]["step"] == 2 * history[0]["step"]
    assert all(run.epochs == 2 for run in result.runs)


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
