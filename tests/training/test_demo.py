"""The demo and the train / eval / predict commands, end to end on a tiny dataset (a few steps)."""

import json
from pathlib import Path

import pytest

from deformable_detr import cli
from deformable_detr.training import demo

TINY_DATA = dict(num_train=4, num_val=2, image_size=96, seed=0)


@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path, capsys, monkeypatch, one_thread):
    monkeypatch.setattr(demo, "DEMO_DATA", TINY_DATA)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--max-steps", "2"]) == 0
    printed = capsys.readouterr().out
    for key in ("AP50", "APs", "curves", "predictions"):
        assert key in printed
    for path in (
        "train/checkpoint.pth",
        "train/curves.png",
        "train/metrics.jsonl",
        "val_predictions.png",
        "metrics.json",
    ):
        assert (out / path).is_file(), path
    assert "AP" in json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_demo_is_deterministic(tmp_path, monkeypatch, one_thread):
    """Same seed, same machine: two demo runs (data rendered separately) give identical metrics and weights."""
    import torch

    monkeypatch.setattr(demo, "DEMO_DATA", dict(num_train=16, num_val=4, image_size=96, seed=0))
    runs = [demo.run_demo(tmp_path / name, max_steps=4, progress=False) for name in ("a", "b")]
    metrics = [json.loads(run.metrics_file.read_text()) for run in runs]
    for m in metrics:
        m.pop("train_seconds")
    assert metrics[0] == metrics[1] and metrics[0]["steps"] == 4
    weights = [torch.load(run.train.checkpoint, weights_only=True)["model"] for run in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_demo_on_cuda_trains_there_with_loader_workers(tmp_path):
    on_gpu, on_cpu = demo.demo_config(tmp_path, device="cuda:0"), demo.demo_config(tmp_path)
    assert (on_gpu.device, on_gpu.workers, on_gpu.amp) == ("cuda:0", demo.CUDA_WORKERS, True)
    assert (on_cpu.device, on_cpu.workers) == ("cpu", 0)
    assert on_gpu.max_steps == on_cpu.max_steps and on_gpu.batch_size == on_cpu.batch_size  # the same recipe


def test_demo_recipe():
    """The measured recipe (docs/results/faster-training/report.md): denoising, mixed query selection, class loss 4,
    lr 3e-3, 1100 steps, and images of at most 192 px a side, so that the synthetic shapes' frames (long side 256, short side
    ~200-256, either orientation), cropped or not, pad to one 192 x 192 batch at the model's stride 64, not 256 x 256."""
    import random

    import torch
    from PIL import Image

    from deformable_detr.data.coco import collate
    from deformable_detr.data.transforms import make_transforms
    from deformable_detr.training.config import TrainConfig

    config = TrainConfig.preset("demo")
    assert (config.model.denoising, config.model.query_selection, config.loss.loss_ce) == (True, "mixed", 4.0)
    assert (config.max_steps, config.batch_size, config.optim.lr, config.optim.lr_backbone) == (1100, 8, 3e-3, 3e-3)
    detr = TrainConfig.preset("detr-demo").optim  # DETR's demo lr stays where its runs were measured
    assert (detr.lr, detr.lr_backbone) == (1e-3, 1e-3)
    transform = make_transforms(
        True, config.train_scales, config.max_size, config.crop_resize, config.crop_size, config.val_size
    )
    target = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 60.0]]), "labels": torch.tensor([0])}
    random.seed(0)
    batch = [
        transform(Image.new("RGB", size), {k: v.clone() for k, v in target.items()})
        for size in [(256, 200), (200, 256), (256, 256), (256, 223)] * 8
    ]
    images, _, _ = collate(batch, size_divisibility=64)
    assert images.shape[-2:] == (192, 192)


def test_demo_device_without_cuda_is_one_line_error(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # the same check on a machine with a GPU
    assert cli.main(["demo", "--out", str(tmp_path), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "device 'cuda': this machine has no CUDA device" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # checked before anything is rendered or trained


def test_train_eval_predict_commands(tmp_path, capsys, tiny_dataset, one_thread):
    run = tmp_path / "run"
    model = ["--preset", "demo", "--data", str(tiny_dataset), "--out", str(run), "--threads", "1"]
    assert cli.main(["train", *model, "--epochs", "1", "--batch-size", "2", "--max-minutes", "5"]) == 0
    assert cli.main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    result = tmp_path / "scores"
    eval_args = ["--data", str(tiny_dataset), "--out", str(result), "--batch-size", "1", "--threads", "1"]
    assert cli.main(["eval", "--checkpoint", str(run / "checkpoint.pth"), *eval_args]) == 0
    assert "AP50" in capsys.readouterr().out and "APs" in json.loads((result / "metrics.json").read_text())
    image = next((tiny_dataset / "val" / "images").iterdir())
    assert (
        cli.main(["predict", str(image), "--checkpoint", str(run / "checkpoint.pth"), "--out", str(tmp_path / "pred")])
        == 0
    )
    records = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert [Path(i["file_name"]).name for i in records["images"]] == [image.name] and not records["errors"]
    assert (tmp_path / "pred" / (image.stem + ".png")).is_file()


def test_train_bad_data_is_one_line_error(tmp_path, capsys):
    assert cli.main(["train", "--preset", "demo", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope: dataset folder not found" in err and err.count("\n") == 1
