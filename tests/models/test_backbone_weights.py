"""`--backbone-weights`: torchvision/timm and Hugging Face ResNet layouts load strictly; a wrong depth is one error.

Oracles: the file's own tensors (every backbone tensor must equal them), and for the Hugging Face
layout the output of `transformers.ResNetModel` itself on the same input.
"""

import pytest
import torch
from torch import nn

from deformable_detr.errors import CheckpointError
from deformable_detr.models.backbone import BasicBlock, Bottleneck, ResNet
from deformable_detr.models.backbone_weights import load_backbone_weights


def _torchvision_like_state(block, depths, width=8):
    """A state dict with torchvision's names and random values (BatchNorm statistics included)."""
    torch.manual_seed(0)
    source = ResNet(block, depths, base_width=width, norm_layer=nn.BatchNorm2d)
    state = {k: (torch.randn_like(v) if v.dtype.is_floating_point else v) for k, v in source.state_dict().items()}
    for key in state:
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 0.5
    out = 8 * width * (4 if block is Bottleneck else 1)
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, out), torch.randn(1000)
    return state


@pytest.mark.parametrize("block, depths", [(BasicBlock, (2, 2, 2, 2)), (Bottleneck, (1, 2, 1, 1))])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_layout_every_tensor_equal(tmp_path, block, depths, suffix):
    state = _torchvision_like_state(block, depths)
    path = tmp_path / f"resnet{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": state}, path)  # wrapped, as timm/lightning files often are
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    body = ResNet(block, depths, base_width=8)  # FrozenBatchNorm2d, as in the detector
    assert load_backbone_weights(body, path) == "torchvision/timm"
    loaded = body.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    for key, value in loaded.items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_other_depth_is_one_clear_error(tmp_path):
    torch.save(_torchvision_like_state(Bottleneck, (3, 4, 6, 3), width=4), tmp_path / "r50.pth")
    body = ResNet(BasicBlock, (2, 2, 2, 2), base_width=4)
    with pytest.raises(
        CheckpointError,
        match=r"r50.pth: holds a resnet50 \(bottleneck blocks, 3-4-6-3, width 4\).*"
        r"backbone is a resnet18 \(basic blocks, 2-2-2-2",
    ) as error:
        load_backbone_weights(body, tmp_path / "r50.pth")
    assert "\n" not in str(error.value)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_backbone_weights(body, tmp_path / "junk.pth")


@pytest.mark.slow  # imports transformers (~20 s on a busy machine)
@pytest.mark.parametrize("layer_type, depths", [("basic", [2, 1, 1, 1]), ("bottleneck", [1, 2, 1, 1])])
def test_huggingface_layout_gives_the_same_features(tmp_path, layer_type, depths):
    transformers = pytest.importorskip("transformers")
    width = 8
    expansion = 4 if layer_type == "bottleneck" else 1
    config = transformers.ResNetConfig(
        embedding_size=width,
        hidden_sizes=[width * 2**s * expansion for s in range(4)],
        depths=depths,
        layer_type=layer_type,
        num_labels=10,
    )
    torch.manual_seed(0)
    hf = transformers.ResNetForImageClassification(config).eval()
    with torch.no_grad():
        for name, buffer in hf.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_()
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    body = ResNet(Bottleneck if layer_type == "bottleneck" else BasicBlock, tuple(depths), base_width=width)
    assert load_backbone_weights(body, tmp_path / "pytorch_model.bin") == "huggingface"
    images = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = hf.resnet(images, output_hidden_states=True).hidden_states[1:]  # stages 1..4
        ours = body(images)
    for mine, theirs in zip(ours, expected, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)
