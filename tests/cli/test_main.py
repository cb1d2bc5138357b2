"""cli.main: project errors and OSErrors are one line (exit 2), bugs keep their traceback; unsafe checkpoints refused."""

import json
import random

import pytest
import torch

from deformable_detr import cli
from deformable_detr.errors import CheckpointError, ConfigError
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.pipeline.processor import PreprocessConfig
from tiny_models import tiny_config

TINY = tiny_config(num_classes=91)


def _run(argv, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from deformable_detr.data.synthetic import make_dataset

    folder = tmp_path_factory.mktemp("data")
    make_dataset(folder, num_train=1, num_val=2, image_size=64, seed=0)
    return folder


def _command(monkeypatch, error):
    """Make `make-dataset` raise `error` instead of doing its work."""

    def raising(args):
        raise error

    parser_of = cli.build_parser

    def build_parser():
        parser = parser_of()
        subparsers = next(a for a in parser._actions if a.dest == "command")
        subparsers.choices["make-dataset"].set_defaults(handler=raising)
        return parser

    monkeypatch.setattr(cli, "build_parser", build_parser)


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("\x1b[31m--lr\x1b[0m must be > 0,\ngot inf"),
        CheckpointError("x.pth: corrupt"),
        FileNotFoundError("nope.json: not found"),
    ],
)
def test_project_errors_and_os_errors_are_one_clean_line(monkeypatch, capsys, tmp_path, error):
    _command(monkeypatch, error)
    status, _, err = _run(["make-dataset", str(tmp_path / "d")], capsys)
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert "\x1b" not in err and "Traceback" not in err
    if isinstance(error, ConfigError):
        assert err == "error: --lr must be > 0, got inf\n"


@pytest.mark.parametrize("error", [KeyError("model"), AttributeError("x"), ValueError("a bug")])
def test_bugs_keep_their_traceback(monkeypatch, capsys, tmp_path, error):
    _command(monkeypatch, error)
    with pytest.raises(type(error)):
        cli.main(["make-dataset", str(tmp_path / "d")])


class _WritesMarker:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_eval_refuses_a_malicious_checkpoint(dataset, tmp_path, capsys):
    marker = tmp_path / "marker"
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": {}, "config": {"model": TINY.to_dict()}, "payload": _WritesMarker(marker)}, path)
    status, _, err = _run(["eval", "--checkpoint", str(path), "--data", str(dataset)], capsys)
    assert status == 2 and "refused" in err and "would run code" in err
    assert "weights_only" not in err and "Traceback" not in err and err.count("\n") == 1
    assert not marker.exists()


@pytest.mark.parametrize("data", [b"", b"garbage", random.Random(0).randbytes(3000)])
def test_eval_on_a_broken_file_is_one_line(dataset, tmp_path, capsys, data):
    (tmp_path / "x.pth").write_bytes(data)
    status, _, err = _run(["eval", "--checkpoint", str(tmp_path / "x.pth"), "--data", str(dataset)], capsys)
    assert status == 2 and err.startswith(f"error: {tmp_path / 'x.pth'}: ") and err.count("\n") == 1
    assert "weights_only=False" not in err and "\x1b" not in err


def test_eval_accepts_a_91_class_model_on_a_subset_of_coco_ids(dataset, tmp_path, capsys):
    """Any format `load` reads works with eval --checkpoint. 91 labels = COCO's categories: predictions of classes
    the ground truth lacks (the data has 6 of COCO's, named as COCO names them) are dropped instead of failing."""
    torch.manual_seed(0)
    DeformableDETR(TINY, preprocess=PreprocessConfig(min_size=64, max_size=96)).save_pretrained(tmp_path / "model")
    coco_named = tmp_path / "data"
    coco_named.mkdir()
    (coco_named / "images").symlink_to(dataset / "val" / "images")
    instances = json.loads((dataset / "val" / "annotations.json").read_text())
    names = {1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus"}  # COCO ids 1-6
    instances["categories"] = [{**c, "name": names[c["id"]]} for c in instances["categories"]]
    (coco_named / "annotations.json").write_text(json.dumps(instances))
    status, out, err = _run(
        [
            "eval",
            "--checkpoint",
            str(tmp_path / "model"),
            "--data",
            str(coco_named),
            "--out",
            str(tmp_path / "scores"),
        ],
        capsys,
    )
    assert status == 0, err
    assert "AP" in out and (tmp_path / "scores" / "metrics.json").is_file()


def test_predict_refuses_a_malicious_checkpoint(dataset, tmp_path, capsys):
    marker = tmp_path / "marker"
    path = tmp_path / "best.pth"
    torch.save({"model": {}, "config": {"model": TINY.to_dict()}, "payload": _WritesMarker(marker)}, path)
    image = next((dataset / "val" / "images").iterdir())
    status, _, err = _run(["predict", str(image), "--checkpoint", str(path), "--out", str(tmp_path / "out")], capsys)
    assert status == 2 and "would run code" in err and "weights_only" not in err and "Traceback" not in err
    assert not marker.exists()


def test_resume_never_runs_a_malicious_checkpoint(dataset, tmp_path, capsys):
    from deformable_detr.training.config import TrainConfig

    marker = tmp_path / "marker"
    run = tmp_path / "run"
    run.mkdir()
    config = TrainConfig.preset("demo", data_dir=str(dataset), output_dir=str(run), batch_size=2, threads=1)
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    torch.save({"model": {}, "payload": _WritesMarker(marker)}, run / "checkpoint.pth")
    status, _, err = _run(["train", "--resume", str(run), "--max-steps", "1"], capsys)
    assert "weights_only" not in err and "Traceback" not in err
    assert not marker.exists()
