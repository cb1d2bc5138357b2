"""`train` command-line validation: bad options and occupied output folders are one-line errors, exit 2."""

import json

import pytest
import torch

from deformable_detr import cli


def _one_line_error(capsys, argv, pattern):
    import re

    try:
        status = cli.main(argv)
    except SystemExit as stop:  # argparse's own usage errors
        status = stop.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(pattern, err), err


@pytest.mark.parametrize(
    "option, value, pattern",
    [
        ("--threads", "-1", r"--threads: -1 must be >= 1"),
        ("--threads", "0", r"--threads: 0 must be >= 1"),
        ("--lr", "inf", r"--lr: inf must be a finite number > 0"),
        ("--lr", "nan", r"--lr: nan must be a finite number > 0"),
        ("--lr", "0", r"--lr: 0 must be a finite number > 0"),
        ("--lr", "-1e-4", r"--lr: -1e-4 must be a finite number > 0"),
        ("--max-minutes", "inf", r"--max-minutes: inf must be a finite number > 0"),
        ("--epochs", "0", r"--epochs: 0 must be >= 1"),
        ("--batch-size", "two", r"--batch-size: 'two' is not an integer"),
        ("--device", "bogus", r"TrainConfig.device = 'bogus'; use cpu, cuda or cuda:N"),
        ("--model", "bogus", r"unknown model preset 'bogus'; choose one of deformable-detr, .*detr-demo"),
    ],
)
def test_bad_options_are_refused_up_front(tmp_path, capsys, option, value, pattern):
    _one_line_error(
        capsys,
        ["train", "--preset", "demo", "--data", str(tmp_path), "--out", str(tmp_path / "o"), f"{option}={value}"],
        pattern,
    )


def test_cuda_requested_without_cuda(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same check on a machine with a GPU
    _one_line_error(
        capsys,
        ["train", "--preset", "demo", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cuda"],
        r"device 'cuda': this machine has no CUDA device .*; use cpu",
    )


def test_out_holding_a_run_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pth").write_bytes(b"precious")
    _one_line_error(
        capsys,
        ["train", "--preset", "demo", "--data", str(tmp_path), "--out", str(run)],
        r"run: already holds a training run \(checkpoint.pth\); continue it with --resume .* --overwrite",
    )
    assert (run / "checkpoint.pth").read_bytes() == b"precious"
    _one_line_error(capsys, ["train", "--resume", str(run), "--overwrite"], "contradict")
    _one_line_error(
        capsys,
        ["train", "--resume", str(tmp_path / "nothing")],
        r"config.json: not found; .* is not a training run folder",
    )


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "weights.pth").write_bytes(b"precious")
    _one_line_error(
        capsys,
        ["train", "--preset", "demo", "--data", str(tmp_path), "--out", str(tmp_path / "weights.pth")],
        r"weights.pth: exists and is not a folder",
    )
    assert (tmp_path / "weights.pth").read_bytes() == b"precious"


def test_out_under_a_file_is_refused_before_the_data_is_read(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    _one_line_error(  # --data does not exist either: the --out problem is found first, in one line
        capsys,
        ["train", "--preset", "demo", "--data", str(tmp_path / "no_data"), "--out", str(tmp_path / "notes.txt/run")],
        r"--out .*notes.txt/run: cannot create it: .*notes.txt is a file, not a folder; choose another --out",
    )


def test_out_that_cannot_be_written_is_refused_before_the_data_is_read(tmp_path, capsys, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):  # what a read-only folder does (chmod does not stop root, who runs the tests)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    _one_line_error(
        capsys,
        ["train", "--preset", "demo", "--data", str(tmp_path / "no_data"), "--out", str(tmp_path / "run")],
        r"--out .*run: cannot write there \(Permission denied\); choose a folder you can write to",
    )


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (
            ["--out", "elsewhere"],
            r"--resume .*run continues the run in .*run; --out .*elsewhere names another folder: drop --out",
        ),
        (
            ["--model", "tiny"],
            r"--model: a resumed run keeps its model .*; drop --model, or start a new run with --init",
        ),
        (
            ["--config", "other.json"],
            r"--config: a resumed run keeps its config.json .*; drop --config, or start a new run",
        ),
    ],
)
def test_resume_refuses_options_that_would_make_another_run(tmp_path, capsys, monkeypatch, extra, pattern):
    """--resume OUT continues the run in OUT: an --out naming another folder (which would be created empty,
    then refused as 'no checkpoint.pth to resume from'), or another model or config, is one line up front."""
    from deformable_detr.training.config import TrainConfig

    run = tmp_path / "run"
    run.mkdir()
    config = TrainConfig.preset("demo", data_dir=str(tmp_path / "data"), output_dir=str(run))
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    monkeypatch.chdir(tmp_path)
    _one_line_error(capsys, ["train", "--resume", str(run), *extra], pattern)
    assert not (tmp_path / "elsewhere").exists()
    # the run's own folder, however it is spelled, passes (and the run then looks for its data)
    _one_line_error(capsys, ["train", "--resume", str(run), "--out", "run/"], r"data: dataset folder not found")
