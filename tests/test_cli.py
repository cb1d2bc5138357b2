"""The command line, run in-process through `main([...])` (one subprocess test of the console script)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deformable_detr import __version__
from deformable_detr.cli import build_parser, main


def _command_names():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return sorted(subparsers.choices)


def _run(argv, capsys):
    """(exit status, stdout, stderr) of `main(argv)`, whether it returns or raises SystemExit."""
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from deformable_detr.data.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("cli"), num_train=4, num_val=2, image_size=96, seed=0)


def test_foundation_commands_are_registered():
    assert {"make-dataset", "eval", "check-data", "demo"} <= set(_command_names())


@pytest.mark.parametrize("command", [[]] + [[name] for name in _command_names()])
def test_every_help_exits_zero(command, capsys):
    status, out, _ = _run(command + ["--help"], capsys)
    assert status == 0 and "usage:" in out


def test_version(capsys):
    status, out, _ = _run(["--version"], capsys)
    assert status == 0 and __version__ in out


@pytest.mark.parametrize(
    "argv, match",
    [
        ([], "required: COMMAND"),
        (["no-such-command"], "invalid choice"),
        (["make-dataset"], "required: OUT"),
        (["make-dataset", "out", "--train", "many"], "invalid int value"),
        (["eval", "--annotations", "a.json"], "one of the arguments --predictions"),
        (["eval", "--predictions", "p.json"], "needs --annotations"),
        (["check-data"], "either DIR or both"),
        (["check-data", "--images", "x"], "either DIR or both"),
        (["eval", "--predictions", "missing.json", "--annotations", "missing.json"], "missing.json"),
        (["make-dataset", "out", "--image-size", "8"], "image_size=8"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = _run(argv, capsys)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and match in err


def test_debug_adds_the_traceback(capsys, tmp_path):
    status, _, err = _run(
        ["--debug", "eval", "--predictions", str(tmp_path / "p.json"), "--annotations", str(tmp_path / "a.json")],
        capsys,
    )
    assert status == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--predictions", "{p}", "--annotations", "{a}", "--debug"],
        ["bench", "predict", "--sizes", "0", "--debug"],
    ],
)
def test_debug_may_also_follow_the_command(capsys, tmp_path, argv):
    argv = [a.format(p=tmp_path / "p.json", a=tmp_path / "a.json") for a in argv]
    status, _, err = _run(argv, capsys)
    assert status == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")


def test_make_dataset_command(tmp_path, capsys):
    status, out, _ = _run(
        ["make-dataset", str(tmp_path / "d"), "--train", "2", "--val", "1", "--image-size", "64"], capsys
    )
    assert status == 0 and "annotations.json" in out
    assert len(json.loads((tmp_path / "d" / "val" / "annotations.json").read_text())["images"]) == 1


def test_make_dataset_object_options(tmp_path, capsys):
    args = ["make-dataset", str(tmp_path / "d"), "--train", "3", "--val", "0", "--image-size", "96", "--workers", "1"]
    status, _, _ = _run([*args, "--objects-per-image", "1", "2", "--object-size", "30", "50"], capsys)
    assert status == 0
    info = json.loads((tmp_path / "d" / "train" / "annotations.json").read_text())["info"]
    assert info["objects_per_image"] == [1, 2] and info["object_size"] == [30.0, 50.0]
    status, _, err = _run([*args, "--overwrite", "--objects-per-image", "2", "1"], capsys)
    assert status == 2 and "objects_per_image=(2, 1)" in err
    assert len(list((tmp_path / "d" / "train" / "images").iterdir())) == 3  # refused before anything was replaced


def test_make_dataset_refuses_a_folder_that_holds_files_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "d"
    args = ["make-dataset", str(out), "--train", "3", "--val", "1", "--image-size", "64"]
    assert _run(args, capsys)[0] == 0
    (out / "notes.txt").write_text("mine")
    smaller = ["make-dataset", str(out), "--train", "1", "--val", "1", "--image-size", "64"]
    status, _, err = _run(smaller, capsys)
    assert status == 2 and "is not empty" in err and "--overwrite" in err
    assert len(list((out / "train" / "images").iterdir())) == 3  # untouched
    assert _run([*smaller, "--overwrite"], capsys)[0] == 0
    assert len(list((out / "train" / "images").iterdir())) == 1  # no stray images of the old dataset
    assert (out / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    status, _, err = _run(["make-dataset", str(tmp_path / "file")], capsys)
    assert status == 2 and "is a file" in err


def test_check_data_clean_then_broken(dataset, tmp_path, capsys):
    root = dataset["train"].images_dir.parent.parent
    status, out, _ = _run(["check-data", str(root)], capsys)
    assert status == 0 and out.count("0 problems") == 2
    split = tmp_path / "split"
    shutil.copytree(root / "val", split)
    next((split / "images").iterdir()).unlink()
    status, out, _ = _run(
        ["check-data", "--images", str(split / "images"), "--annotations", str(split / "annotations.json")], capsys
    )
    assert status == 1 and "missing_image: 1" in out
    (split / "annotations.json").write_text("{oops")
    status, _, err = _run(["check-data", str(split)], capsys)
    assert status == 1 and err.startswith("error: ") and "not valid JSON" in err


def test_eval_command_prints_table_and_writes_metrics_json_in_the_out_folder(dataset, tmp_path, capsys):
    gt = json.loads(dataset["val"].annotations_file.read_text())
    predictions = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in gt["annotations"]
    ]
    (tmp_path / "p.json").write_text(json.dumps(predictions))
    args = ["eval", "--predictions", str(tmp_path / "p.json"), "--annotations", str(dataset["val"].annotations_file)]
    out = tmp_path / "scores"
    status, printed, _ = _run([*args, "--out", str(out)], capsys)
    assert status == 0 and "AP50" in printed and "100.0" in printed
    assert json.loads((out / "metrics.json").read_text())["AP"] == pytest.approx(1.0)
    (out / "metrics.json").write_text("the user's file")
    status, _, err = _run([*args, "--out", str(out)], capsys)
    assert status == 2 and "--overwrite" in err and (out / "metrics.json").read_text() == "the user's file"
    status, _, err = _run([*args, "--out", str(tmp_path / "p.json")], capsys)
    assert status == 2 and "is a file; --out is a folder (this command writes OUT/metrics.json)" in err
    status, _, err = _run(
        [*args, "--out", str(tmp_path / "m.json")], capsys
    )  # a file name: refused, not a folder m.json/
    assert status == 2 and "--out is a folder" in err and not (tmp_path / "m.json").exists()
    assert _run([*args, "--out", str(out), "--overwrite"], capsys)[0] == 0
    assert json.loads((out / "metrics.json").read_text())["AP"] == pytest.approx(1.0)


def test_console_script_runs():
    script = Path(sys.executable).with_name("deformable-detr")
    if not script.exists():
        pytest.skip("console script not installed (run `make setup`)")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and __version__ in result.stdout


def test_library_warnings_are_one_line(capsys, monkeypatch):
    import warnings as warnings_module

    from deformable_detr import cli

    def warns(args):
        warnings_module.warn("data.json: 2 boxes of zero width are dropped", stacklevel=2)

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["check-data"].set_defaults(handler=warns)
    with warnings_module.catch_warnings():
        warnings_module.simplefilter("always")
        monkeypatch.setattr(warnings_module, "formatwarning", warnings_module.formatwarning)  # restored after
        monkeypatch.setattr(  # what Python does outside pytest, which records warnings instead
            warnings_module,
            "showwarning",
            lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
                warnings_module.formatwarning(message, category, filename, lineno, line)
            ),
        )
        assert cli.main(["check-data", "x"]) == 0
    err = capsys.readouterr().err
    assert err == "warning: data.json: 2 boxes of zero width are dropped\n", err
