"""deformable_detr.load: every format is recognised, ambiguous files are refused, nothing unsafe is executed.

Oracles: for our own formats, the weights and outputs of the model that was saved (bit for bit); for the
official layout, the file the converter writes is checked against an independent mapping in
tests/interop/test_official.py; for Hugging Face, the HF model's own forward (transformers).
"""

from __future__ import annotations

import argparse
import io
import json
import random

import pytest
import torch

import deformable_detr
from deformable_detr.errors import CheckpointError, ConfigError
from deformable_detr.interop.official import ours_to_official
from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.pipeline.categories import default_categories
from deformable_detr.pipeline.processor import PreprocessConfig
from deformable_detr.training.checkpoint import save_checkpoint
from deformable_detr.training.config import TrainConfig
from tiny_models import tiny_config

TINY = tiny_config(num_classes=5, with_box_refine=True)
CATEGORIES = [{"id": 3 * k + 1, "name": f"thing{k}"} for k in range(5)]


def _model(config: ModelConfig = TINY, **kwargs) -> DeformableDETR:
    torch.manual_seed(0)
    model = DeformableDETR(config, **kwargs).eval()
    with torch.no_grad():  # non-zero values everywhere
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.add_(0.01 * torch.randn_like(value))
    return model


def _assert_same_model(loaded: DeformableDETR, expected: DeformableDETR) -> None:
    assert loaded.config == expected.config and not loaded.training
    assert loaded.state_dict().keys() == expected.state_dict().keys()
    for key, value in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    images = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(1))  # smallest level 1x2
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)["pred_logits"], expected(images)["pred_logits"], rtol=0, atol=0)


def _training_checkpoint(directory, model: DeformableDETR, name="checkpoint.pth"):
    """A checkpoint as `deformable-detr train` writes it (with checksum), in its own layout."""
    config = TrainConfig(model=model.config, train_scales=(96, 128), max_size=160, val_size=128)
    save_checkpoint(
        directory / name,
        {
            "model": model.state_dict(),
            "config": config.to_dict(),
            "categories": CATEGORIES,
            "state": {"epoch": 2, "step": 10},
        },
        keep_previous=False,
    )
    return directory / name


def test_training_checkpoint_file_and_run_folder(tmp_path):
    model = _model(categories=CATEGORIES)
    path = _training_checkpoint(tmp_path, model)
    loaded = deformable_detr.load(path)
    assert (
        loaded.checkpoint_info.format == "training-checkpoint" and "after 2 epoch" in loaded.checkpoint_info.description
    )
    assert loaded.categories == CATEGORIES
    assert loaded.preprocess == PreprocessConfig(min_size=128, max_size=160)  # the run's evaluation sizes
    _assert_same_model(loaded, model)
    from_folder = deformable_detr.load(tmp_path)
    assert from_folder.checkpoint_info.path == str(path)
    _assert_same_model(from_folder, model)


def test_corrupt_training_checkpoint_fails_its_checksum(tmp_path):
    path = _training_checkpoint(tmp_path, _model())
    state = torch.load(path, weights_only=True)
    state["model"]["class_heads.0.bias"] += 1  # bit rot the zip container cannot see
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        deformable_detr.load(path)


def test_run_folder_prefers_best(tmp_path):
    _training_checkpoint(tmp_path, _model())
    best = _model(TINY)
    with torch.no_grad():
        best.class_heads[0].bias.add_(1.0)
    _training_checkpoint(tmp_path, best, name="best.pth")
    loaded = deformable_detr.load(tmp_path)
    assert loaded.checkpoint_info.path.endswith("best.pth")
    _assert_same_model(loaded, best)


def test_save_pretrained_folder_and_its_safetensors(tmp_path):
    preprocess = PreprocessConfig(min_size=320, max_size=480)
    model = _model(preprocess=preprocess, categories=CATEGORIES)
    model.save_pretrained(tmp_path)
    for path in (tmp_path, tmp_path / "model.safetensors"):
        loaded = deformable_detr.load(path)
        assert loaded.checkpoint_info.format == "pretrained"
        assert loaded.preprocess == preprocess and loaded.categories == CATEGORIES
        _assert_same_model(loaded, model)


@pytest.mark.parametrize(
    "config",
    [TINY, ModelConfig(**{**TINY.to_dict(), "two_stage": True, "num_queries": 6, "backbone_depths": (1, 1, 1, 1)})],
)
def test_official_checkpoint(tmp_path, config):
    model = _model(config)
    state_dict, args = ours_to_official(config, model.state_dict())
    path = tmp_path / "r50_deformable_detr-checkpoint.pth"
    torch.save(
        {
            "model": state_dict,
            "args": argparse.Namespace(**args),
            "epoch": 49,
            "optimizer": {"state": {}, "param_groups": []},
        },
        path,
    )
    loaded = deformable_detr.load(path)
    assert loaded.checkpoint_info.format == "official"
    assert loaded.preprocess == PreprocessConfig() and loaded.categories == default_categories(5)
    _assert_same_model(loaded, model)


def test_official_91_classes_get_coco_names(tmp_path):
    config = ModelConfig(**{**TINY.to_dict(), "num_classes": 91, "backbone_depths": (1, 1, 1, 1)})
    state_dict, args = ours_to_official(config, _model(config).state_dict())
    torch.save({"model": state_dict, "args": argparse.Namespace(**args)}, tmp_path / "official.pth")
    loaded = deformable_detr.load(tmp_path / "official.pth")
    assert loaded.categories[1] == {"id": 1, "name": "person"} and loaded.categories[90]["name"] == "toothbrush"


def _hf_model(num_labels=91):
    pytest.importorskip("transformers")
    from deformable_detr.bench.hf_reference import random_hf_model

    return random_hf_model(smoke=True, num_labels=num_labels)


def _hf_outputs(hf_model, images):
    with torch.no_grad():
        out = hf_model(
            pixel_values=images, pixel_mask=torch.ones(images.shape[0], *images.shape[-2:], dtype=torch.long)
        )
    return out.logits, out.pred_boxes


def test_hugging_face_folder_and_bare_safetensors(tmp_path):
    hf_model = _hf_model()
    hf_model.save_pretrained(tmp_path / "hf")
    images = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(2))
    logits, boxes = _hf_outputs(hf_model, images)
    for path in (tmp_path / "hf", tmp_path / "hf" / "model.safetensors"):
        loaded = deformable_detr.load(path)
        assert loaded.checkpoint_info.format == "transformers"
        assert loaded.preprocess == PreprocessConfig() and loaded.categories[1]["name"] == "person"
        with torch.no_grad():
            out = loaded(images)
        torch.testing.assert_close(out["pred_logits"], logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(out["pred_boxes"], boxes, rtol=0, atol=1e-5)
    # The same weights without config.json: the head count is in no tensor, so the loader asks for config=.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.safetensors").write_bytes((tmp_path / "hf" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="Hugging Face key names and no config.*pass config=ModelConfig"):
        deformable_detr.load(bare / "model.safetensors")
    config = deformable_detr.load(tmp_path / "hf").config
    loaded = deformable_detr.load(bare / "model.safetensors", config=config)
    assert loaded.checkpoint_info.format == "state-dict"
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)["pred_logits"], logits, rtol=0, atol=1e-5)


def test_hugging_face_custom_labels_become_categories(tmp_path):
    hf_model = _hf_model(num_labels=3)
    hf_model.config.id2label = {0: "apple", 1: "pear", 2: "plum"}
    hf_model.config.label2id = {"apple": 0, "pear": 1, "plum": 2}
    hf_model.save_pretrained(tmp_path)
    loaded = deformable_detr.load(tmp_path)
    assert [c["name"] for c in loaded.categories] == ["apple", "pear", "plum"]


def _hf_folder(directory, **label_options):
    """A tiny HF model saved by transformers itself, built from a config given only `label_options`."""
    transformers = pytest.importorskip("transformers")
    from deformable_detr.bench.hf_reference import PAPER_OUT_FEATURES, SMOKE_SIZES, perturb

    backbone = transformers.ResNetConfig(
        embedding_size=8,
        hidden_sizes=[32, 64, 128, 256],
        depths=[1, 1, 1, 1],
        layer_type="bottleneck",
        out_features=PAPER_OUT_FEATURES,
    )
    torch.manual_seed(0)
    config = transformers.DeformableDetrConfig(backbone_config=backbone, **SMOKE_SIZES, **label_options)
    hf_model = transformers.DeformableDetrForObjectDetection(config).eval()
    perturb(hf_model)
    hf_model.save_pretrained(directory)
    return hf_model, json.loads((directory / "config.json").read_text())


def test_hugging_face_folder_of_a_default_config_takes_its_class_count_from_the_weights(tmp_path):
    hf_model, saved = _hf_folder(tmp_path)  # transformers' default: 2 labels
    if int(pytest.importorskip("transformers").__version__.split(".")[0]) >= 5:
        assert saved.get("id2label") is None and saved.get("num_labels") is None  # what >= 5 writes
    else:  # older versions write id2label; make the folder transformers >= 5 would write
        saved = {k: v for k, v in saved.items() if k not in ("id2label", "label2id", "num_labels")}
        (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = deformable_detr.load(tmp_path)
    assert loaded.config.num_classes == hf_model.config.num_labels == 2
    assert loaded.categories == default_categories(2)
    images = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(2))
    logits, boxes = _hf_outputs(hf_model, images)
    with torch.no_grad():
        out = loaded(images)
    torch.testing.assert_close(out["pred_logits"], logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(out["pred_boxes"], boxes, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "label_options, names",
    [
        ({"id2label": {0: "cat", 1: "dog", 2: "bird"}}, ["cat", "dog", "bird"]),
        ({"num_labels": 4}, [f"class_{k}" for k in range(1, 5)]),  # generic LABEL_k: the default names
    ],
)
def test_hugging_face_folder_with_explicit_labels(tmp_path, label_options, names):
    hf_model, _ = _hf_folder(tmp_path, **label_options)
    loaded = deformable_detr.load(tmp_path)
    assert loaded.config.num_classes == hf_model.config.num_labels == len(names)
    assert [c["name"] for c in loaded.categories] == names
    images = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    logits, _ = _hf_outputs(hf_model, images)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)["pred_logits"], logits, rtol=0, atol=1e-5)


def test_other_hugging_face_model_types_are_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "detr"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="model_type is 'detr', not 'deformable_detr'"):
        deformable_detr.load(tmp_path)


@pytest.mark.parametrize("layout", ["ours", "official"])
def test_bare_state_dicts_are_refused_without_config(tmp_path, layout):
    model = _model()
    state_dict = model.state_dict() if layout == "ours" else ours_to_official(TINY, model.state_dict())[0]
    torch.save(state_dict, tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match=r"weights\.pth: a bare state dict .* pass config=ModelConfig"):
        deformable_detr.load(tmp_path / "weights.pth")
    torch.save({"model": state_dict}, tmp_path / "wrapped.pth")  # {"model": ...} without args or config
    with pytest.raises(CheckpointError, match="pass config="):
        deformable_detr.load(tmp_path / "wrapped.pth")
    loaded = deformable_detr.load(tmp_path / "weights.pth", config=TINY)
    assert loaded.checkpoint_info.format == "state-dict"
    _assert_same_model(loaded, model)


def test_wrong_config_lists_the_mismatch(tmp_path):
    torch.save(_model().state_dict(), tmp_path / "weights.pth")
    wrong = ModelConfig(**{**TINY.to_dict(), "num_classes": 7, "backbone_depths": (1, 1, 1, 1)})
    with pytest.raises(
        CheckpointError, match=r"4 mis-shaped \(class_heads\.0\.weight: checkpoint \[5, 32\] vs model \[7, 32\]"
    ):
        deformable_detr.load(tmp_path / "weights.pth", config=wrong)


def test_saved_with_one_backend_loads_with_another(tmp_path):
    model = _model().set_attention_backend("reference")
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert "attention_backend" not in config
    (tmp_path / "config.json").write_text(json.dumps({**config, "attention_backend": "cpu"}))  # an older file
    loaded = deformable_detr.load(tmp_path, attention_backend="reference")
    assert loaded.attention_backend == "reference"
    assert deformable_detr.load(tmp_path).attention_backend == "auto"
    with pytest.raises(ConfigError, match="attention backend 'bogus' is unknown"):
        deformable_detr.load(tmp_path, attention_backend="bogus")


def test_gpu_checkpoint_loads_on_the_cpu(tmp_path, monkeypatch):
    """A file whose tensors say cuda:0 (as saved on a GPU machine) loads without a GPU."""
    model = _model(categories=CATEGORIES)
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        path = _training_checkpoint(tmp_path, model)
    assert b"cuda:0" in path.read_bytes()
    _assert_same_model(deformable_detr.load(path), model)


class _WritesMarker:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": _model().state_dict(), "config": {"model": TINY.to_dict()}, "x": _WritesMarker(marker)}, path)
    with pytest.raises(CheckpointError, match="refused: .* would run code") as error:
        deformable_detr.load(path)
    assert "weights_only" not in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["random", "truncated", "text"])
def test_broken_files_are_one_checkpoint_error(tmp_path, kind):
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(100)}}, buffer)
    data = {"random": random.Random(0).randbytes(4000), "truncated": buffer.getvalue()[:300], "text": b"hello"}[kind]
    (tmp_path / "x.pth").write_bytes(data)
    with pytest.raises(CheckpointError, match=r"x\.pth: ") as error:
        deformable_detr.load(tmp_path / "x.pth")
    assert "weights_only=False" not in str(error.value) and "\n" not in str(error.value)


def test_unrecognised_inputs_name_what_was_expected(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no Deformable DETR weights recognised.*expected a training checkpoint"):
        deformable_detr.load(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="folder holds no recognised weights"):
        deformable_detr.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope: no such file or folder"):
        deformable_detr.load(tmp_path / "nope")


def test_bad_device_is_a_config_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="device 'bogus'"):
        deformable_detr.load(tmp_path, device="bogus")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same check on a machine with a GPU
    with pytest.raises(ConfigError, match="this machine has no CUDA device"):
        deformable_detr.load(tmp_path, device="cuda")


def _ddp_state_dict(model: DeformableDETR, tmp_path) -> dict:
    """`DistributedDataParallel(model).state_dict()` in a one-process gloo group: every key gets `module.`."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        return DistributedDataParallel(model).state_dict()
    finally:
        dist.destroy_process_group()


def test_checkpoint_of_a_ddp_wrapped_model_loads_as_the_model(tmp_path):
    """A run saved from the DDP wrapper (keys `module.*`) loads to the same weights and outputs; without the
    prefix stripping it would fail with every key missing and unexpected."""
    model = _model(categories=CATEGORIES)
    state_dict = _ddp_state_dict(model, tmp_path)
    assert all(key.startswith("module.") for key in state_dict) and len(state_dict) == len(model.state_dict())
    config = TrainConfig(model=model.config, train_scales=(96, 128), max_size=160, val_size=128)
    payload = {"model": state_dict, "config": config.to_dict(), "categories": CATEGORIES}
    save_checkpoint(tmp_path / "checkpoint.pth", payload, keep_previous=False)
    loaded = deformable_detr.load(tmp_path / "checkpoint.pth")
    assert loaded.checkpoint_info.format == "training-checkpoint"
    _assert_same_model(loaded, model)
    torch.save(state_dict, tmp_path / "bare.pth")  # a bare state dict of the wrapper, with its config given
    bare = deformable_detr.load(tmp_path / "bare.pth", config=model.config)
    assert bare.checkpoint_info.description == "bare state dict with this package's key names"
    _assert_same_model(bare, model)
