"""What a path holds: the DDP prefix, the format of a loaded dict, key layouts, the folders."""

import json

import torch

from deformable_detr.checkpoint.format import (
    hf_model_config,
    is_pretrained_directory,
    key_layout,
    run_checkpoint,
    strip_ddp_prefix,
    torch_file_format,
)


def test_strip_ddp_prefix_only_when_every_key_has_it():
    weights = torch.zeros(2)
    assert strip_ddp_prefix({"module.a.weight": weights, "module.module.b": 1}) == {"a.weight": weights, "module.b": 1}
    mixed = {"module.a": 1, "b": 2}  # not a DDP state dict: left for the strict load to report
    assert strip_ddp_prefix(mixed) == mixed
    assert strip_ddp_prefix({"modules.a": 1}) == {"modules.a": 1}
    assert strip_ddp_prefix({}) == {}


def test_torch_file_format_and_key_layout():
    assert torch_file_format({"model": {}, "config": {"model": {}}}) == "training-checkpoint"
    assert torch_file_format({"model": {}, "args": object()}) == "official"
    assert torch_file_format({"transformer.level_embed": torch.zeros(1)}) == "state-dict"
    assert key_layout({"transformer.level_embed": 0, "class_heads.0.weight": 0}) == "ours"
    assert key_layout({"transformer.level_embed": 0, "class_embed.0.weight": 0}) == "official"
    assert key_layout({"model.level_embed": 0}) == "transformers"
    assert key_layout({"module.transformer.level_embed": 0}) is None  # strip_ddp_prefix first


def test_folders(tmp_path):
    assert run_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint.pth").write_bytes(b"")
    assert run_checkpoint(tmp_path) == str(tmp_path / "checkpoint.pth")
    (tmp_path / "best.pth").write_bytes(b"")
    assert run_checkpoint(tmp_path) == str(tmp_path / "best.pth")
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({"d_model": 32}))
    assert is_pretrained_directory(tmp_path) and hf_model_config(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deformable_detr", "d_model": 32}))
    assert not is_pretrained_directory(tmp_path) and hf_model_config(tmp_path)["d_model"] == 32
