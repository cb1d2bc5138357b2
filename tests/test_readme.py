"""The README's Python snippets run as written.

Every ```python block of README.md is executed, in order, in a temporary folder that holds small
stand-ins for the files the snippets name, where the README's commands would have written them: a synthetic
dataset where `make-dataset` writes it (`data/synthetic/`, and no other `data/` folder), a short training run
(`runs/small/`), two photos, a tiny model in the official `.pth` layout under the name the README uses, an
ONNX export of it (`exported/model.onnx`) and a tiny Hugging Face folder (`hf_dir/`). A block preceded by `<!-- readme: skip REASON -->`
is not run (for commands that need a GPU or minutes of CPU); the test lists them.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"(<!-- readme: skip([^>]*)-->\s*\n)?```python\n(.*?)```", re.S)


def _blocks() -> list[tuple[int, str, str | None]]:
    """(line, code, the reason of a `readme: skip` marker or None) of every python block."""
    text = README.read_text()
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(3), m.group(2).strip() if m.group(1) else None)
        for m in _BLOCK.finditer(text)
    ]


def _runnable_blocks() -> list[tuple[int, str]]:
    return [(line, code) for line, code, reason in _blocks() if reason is None]


def _tiny_config():
    from deformable_detr import ModelConfig

    return ModelConfig.preset("tiny", num_classes=6, num_queries=10)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The files the README's snippets name, small."""
    from deformable_detr import DeformableDETR
    from deformable_detr.data.synthetic import make_dataset
    from deformable_detr.interop.official import ours_to_official
    from deformable_detr.training import TrainConfig, fit

    root = tmp_path_factory.mktemp("readme")
    data = root / "data" / "synthetic"  # the README's `make-dataset data/synthetic ...`
    make_dataset(data, num_train=8, num_val=4, image_size=96, seed=0, num_workers=1)
    val_images = sorted((data / "val" / "images").iterdir())
    shutil.copy(val_images[0], root / "photo1.jpg")
    from PIL import Image

    Image.open(val_images[1]).save(root / "photo2.png")
    config = TrainConfig.preset(
        "demo",
        data_dir=str(data),
        output_dir=str(root / "runs" / "small"),
        max_steps=2,
        batch_size=2,
        threads=1,
    )
    fit(config, progress=False)
    torch.manual_seed(0)
    model = DeformableDETR(_tiny_config()).eval()
    official, args = ours_to_official(model.config, model.state_dict())
    torch.save({"model": official, "args": argparse.Namespace(**args)}, root / "r50_deformable_detr-checkpoint.pth")
    from deformable_detr.interop.onnx import export_onnx

    export_onnx(model, root / "exported" / "model.onnx", dynamic=True)  # the README's `export onnx --out exported/`
    pytest.importorskip("transformers")
    from transformers import DeformableDetrForObjectDetection

    from deformable_detr.bench.hf_reference import hf_config

    DeformableDetrForObjectDetection(hf_config(smoke=True, num_labels=6)).save_pretrained(root / "hf_dir")
    return root


@pytest.mark.parametrize("line, code", _runnable_blocks(), ids=[f"README.md:{line}" for line, _ in _runnable_blocks()])
def test_readme_python_block_runs(world, monkeypatch, line, code):
    monkeypatch.chdir(world)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102 - the README is ours


def test_readme_has_python_blocks():
    assert len(_runnable_blocks()) >= 5


def test_readme_blocks_not_run_say_why():
    """A block marked `readme: skip` (a GPU, minutes of compiling) is not collected above: it must give its reason."""
    for line, code, reason in _blocks():
        assert reason is None or len(reason) > 10, f"README.md:{line}: `readme: skip` needs a reason"
        compile(code, f"README.md:{line}", "exec")  # still valid Python
