"""The CLI convention (README, Command line), checked on the real parsers of every command.

Walks `build_parser()`: the commands that run the model carry --device/--threads/--batch-size/--amp with one
help text and default each; `--out` is a folder everywhere but the benchmarks' result files; weights are
`--checkpoint` (no `--weights`, no `--model` naming weights); one threshold default and one top-k name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from deformable_detr.cli import build_parser

# Commands that run a model at inference, and what they lack on purpose.
INFERENCE = {
    "predict": set(),
    "eval": set(),  # the four apply with --checkpoint
    "serve": set(),
    "explain": {"--batch-size"},  # one image per run
    "export onnx": {"--amp", "--batch-size"},  # traced in float32; its --batch-size is the traced batch (own help)
}
PRESET = ("train", "demo")  # preset-driven: unset flags keep the preset's (or resumed run's) value
RUN_FLAGS = ("--device", "--threads", "--batch-size", "--amp")
# The benchmarks write one JSON file each (`make gpu-check` names them): their --out is a file.
OUT_IS_A_FILE = ("bench ",)


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every leaf command, by its words ("export onnx", "bench model")."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                words = f"{prefix} {name}".strip()
                found.update(_commands(sub, words) or {words: sub})
    return found


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


COMMANDS = _commands(build_parser())


def test_the_walk_finds_every_command():
    assert {"predict", "eval", "serve", "explain", "export onnx", "train", "demo", "bench model"} <= set(COMMANDS)


@pytest.mark.parametrize("flag", RUN_FLAGS)
def test_inference_commands_share_each_run_flag_with_one_default_and_help(flag):
    actions = {name: _options(COMMANDS[name]).get(flag) for name, lacks in INFERENCE.items() if flag not in lacks}
    missing = [name for name, action in actions.items() if action is None]
    assert not missing, f"{flag} missing on {missing}"
    expected = {
        "--device": ("cpu", "cpu, cuda or cuda:N (default cpu)"),
        "--threads": (None, "torch CPU threads (default: torch's, one per core; 1 while other jobs load the CPU)"),
        "--batch-size": (8, "most images per forward pass (default 8)"),
        "--amp": (False, "bfloat16 autocast for the forward pass (default off)"),
    }[flag]
    for name, action in actions.items():
        assert (action.default, action.help) == expected, name


@pytest.mark.parametrize("command", PRESET)
def test_preset_commands_have_the_four_flags_unset_so_the_preset_decides(command):
    options = _options(COMMANDS[command])
    for flag in RUN_FLAGS:
        assert flag in options and options[flag].default is None, (command, flag)
        assert "(default: the preset's or run's" in options[flag].help, (command, flag)
    assert "--no-amp" in options  # a preset with bf16 on (demo) can be run without it
    assert _options(COMMANDS["train"])["--threads"].help == _options(COMMANDS["demo"])["--threads"].help


def test_batch_size_and_threads_refuse_zero_on_every_command(capsys):
    for name in [*INFERENCE, *PRESET]:
        options = _options(COMMANDS[name])
        for flag in ("--threads", "--batch-size"):
            if flag in options and not (name == "export onnx" and flag == "--batch-size"):
                with pytest.raises(argparse.ArgumentTypeError, match="0 must be >= 1"):
                    options[flag].type("0")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_out_is_a_folder(name):
    out = _options(COMMANDS[name]).get("--out")
    if out is None or name.startswith(OUT_IS_A_FILE):
        return
    assert out.metavar in ("DIR", None) and "folder" in out.help, (name, out.metavar, out.help)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_weights_are_always_checkpoint(name):
    options = _options(COMMANDS[name])
    assert not {"--weights", "--ckpt", "--model-path"} & set(options), name
    if "--model" in options:  # train's --model picks a model preset by name, never weights
        assert options["--model"].metavar == "PRESET" and options["--model"].type is None, name
    if "--checkpoint" in options:
        assert options["--checkpoint"].type is Path, name


def test_one_threshold_default_and_one_top_k_name():
    from deformable_detr.pipeline.run import DEFAULT_THRESHOLD, DEFAULT_TOP_K

    for name in ("predict", "explain"):
        options = _options(COMMANDS[name])
        assert options["--threshold"].default == DEFAULT_THRESHOLD == 0.5, name
        assert options["--top-k"].dest == "top_k" and options["--top-k"].option_strings == ["--top-k"], name
    assert _options(COMMANDS["predict"])["--top-k"].default == DEFAULT_TOP_K
    every_flag = {flag for parser in COMMANDS.values() for flag in _options(parser)}
    assert not {"--top", "--max-detections", "--max-batch", "--score-threshold"} & every_flag


def test_predict_passes_top_k_to_the_library(monkeypatch, tmp_path):
    """predict --top-k reaches predict_files (it was documented and never parsed)."""
    import importlib

    from deformable_detr import cli

    load_module = importlib.import_module("deformable_detr.inference.load")  # the package re-exports the function
    predict_files_module = importlib.import_module("deformable_detr.inference.predict_files")

    seen = {}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # --threads sets it; restored after the test

    class Summary:
        errors, skipped, images, detections, detections_file = [], [], 0, 0, tmp_path / "detections.json"

    monkeypatch.setattr(load_module, "load", lambda *args, **kwargs: object())
    monkeypatch.setattr(predict_files_module, "predict_files", lambda *args, **kwargs: seen.update(kwargs) or Summary())
    assert cli.main(["predict", "x.jpg", "--checkpoint", "c.pth", "--top-k", "3", "--threads", "1"]) == 0
    assert seen["top_k"] == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "{image}", "--checkpoint", "{missing}"],
        ["explain", "{image}", "--checkpoint", "{missing}"],
        ["eval", "--checkpoint", "{missing}", "--data", "{tmp}"],
        ["eval", "--predictions", "{missing}", "--annotations", "{missing}"],
        ["export", "onnx", "--checkpoint", "{missing}"],
    ],
    ids=lambda argv: " ".join(word for word in argv if not word.startswith(("{", "-"))),
)
def test_out_under_a_file_is_one_line_before_any_work(tmp_path, capsys, argv):
    """`--out notes.txt/run` (a path through a file) is the same one line on every command, naming --out and
    the file, before the checkpoint is even looked at (it does not exist here); it was a bare
    `[Errno 20] Not a directory` after loading the model."""
    from deformable_detr import cli

    (tmp_path / "notes.txt").write_text("precious")
    (tmp_path / "photo.jpg").write_bytes(b"not read")
    values = {"image": str(tmp_path / "photo.jpg"), "missing": str(tmp_path / "missing"), "tmp": str(tmp_path)}
    argv = [word.format(**values) for word in argv] + ["--out", str(tmp_path / "notes.txt" / "run")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: --out {tmp_path}/notes.txt/run: cannot create it: {tmp_path}/notes.txt is a file"), (
        err
    )
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_predict_out_naming_an_input_file_says_it_is_a_file(tmp_path, capsys):
    """`predict photo.jpg --out photo.jpg`: the file is not a folder (it was 'the folder contains input images')."""
    from deformable_detr import cli

    (tmp_path / "photo.jpg").write_bytes(b"precious")
    photo = str(tmp_path / "photo.jpg")
    assert cli.main(["predict", photo, "--checkpoint", str(tmp_path / "missing"), "--out", photo]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {photo}: exists and is not a folder; choose a folder path\n"
    assert (tmp_path / "photo.jpg").read_bytes() == b"precious"


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "{image}", "--checkpoint", "{missing}", "--out", "{tmp}/out"],
        ["explain", "{image}", "--checkpoint", "{missing}", "--out", "{tmp}/out"],
        ["eval", "--checkpoint", "{missing}", "--data", "{tmp}", "--out", "{tmp}/out"],
        ["export", "onnx", "--checkpoint", "{missing}", "--out", "{tmp}/out"],
        ["serve", "--checkpoint", "{missing}"],
    ],
    ids=lambda argv: " ".join(word for word in argv if not word.startswith(("{", "-"))),
)
def test_a_missing_checkpoint_is_the_loaders_line_on_every_command(tmp_path, capsys, argv):
    """Every command that loads a model prints `deformable_detr.load`'s own line for a missing --checkpoint (serve
    said '--checkpoint X: not found; pass a checkpoint file or model folder')."""
    from deformable_detr import cli
    from deformable_detr.inference.load import load

    (tmp_path / "photo.jpg").write_bytes(b"not read")
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError) as raised:
        load(missing)
    values = {"image": str(tmp_path / "photo.jpg"), "missing": str(missing), "tmp": str(tmp_path)}
    assert cli.main([word.format(**values) for word in argv]) == 2
    assert capsys.readouterr().err == f"error: {raised.value}\n"
    assert str(raised.value).startswith(f"{missing}: no such file or folder; expected a training checkpoint")
