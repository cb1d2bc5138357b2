"""ResNet backbone: torchvision key layout, FrozenBatchNorm2d, DC5, freezing, masks, weight loading."""

import pytest
import torch
from torch import nn

from deformable_detr.models.backbone import (
    Backbone,
    BasicBlock,
    Bottleneck,
    FrozenBatchNorm2d,
    ResNet,
    downsample_mask,
    load_torchvision_weights,
)


def _torchvision_resnet50_layout():
    """Key -> shape of torchvision's resnet50 without fc/num_batches_tracked, from docs/interop.md §3.1."""
    expected = {"conv1.weight": (64, 3, 7, 7)}
    expected.update({f"bn1.{b}": (64,) for b in ("weight", "bias", "running_mean", "running_var")})
    for s, blocks in zip(range(1, 5), (3, 4, 6, 3)):
        p = 64 * 2 ** (s - 1)
        in0 = 64 if s == 1 else 2 * p
        for b in range(blocks):
            expected[f"layer{s}.{b}.conv1.weight"] = (p, in0 if b == 0 else 4 * p, 1, 1)
            expected[f"layer{s}.{b}.conv2.weight"] = (p, p, 3, 3)
            expected[f"layer{s}.{b}.conv3.weight"] = (4 * p, p, 1, 1)
            for bn, width in (("bn1", p), ("bn2", p), ("bn3", 4 * p)):
                expected.update(
                    {f"layer{s}.{b}.{bn}.{t}": (width,) for t in ("weight", "bias", "running_mean", "running_var")}
                )
        expected[f"layer{s}.0.downsample.0.weight"] = (4 * p, in0, 1, 1)
        expected.update(
            {f"layer{s}.0.downsample.1.{t}": (4 * p,) for t in ("weight", "bias", "running_mean", "running_var")}
        )
    return expected


def test_resnet50_state_dict_is_torchvisions_265_keys():
    with torch.device("meta"):
        backbone = Backbone("resnet50", (3, 4, 6, 3))
    actual = {k: tuple(v.shape) for k, v in backbone.body.state_dict().items()}
    expected = _torchvision_resnet50_layout()
    assert len(expected) == 265
    assert actual == expected
    assert all(not isinstance(m, nn.BatchNorm2d) for m in backbone.modules())  # frozen BN by default
    assert backbone.num_channels == [512, 1024, 2048] and backbone.strides == [8, 16, 32]


def test_resnet101_and_single_scale_channels():
    with torch.device("meta"):
        r101 = Backbone("resnet101", (3, 4, 23, 3), return_interm_layers=False)
        r18 = Backbone("resnet18", (2, 2, 2, 2))
    assert "body.layer3.22.conv3.weight" in r101.state_dict() and "body.layer3.23.conv1.weight" not in r101.state_dict()
    assert r101.num_channels == [2048] and r101.strides == [32]
    assert r18.num_channels == [128, 256, 512]
    assert (
        "body.layer1.0.conv3.weight" not in r18.state_dict()
        and "body.layer1.0.downsample.0.weight" not in r18.state_dict()
    )
    assert tuple(r18.state_dict()["body.layer2.0.downsample.0.weight"].shape) == (128, 64, 1, 1)


def test_frozen_batchnorm_matches_batchnorm2d_in_eval():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6).eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.1, 3)
    frozen = FrozenBatchNorm2d(6)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is ignored
    x = torch.randn(2, 6, 5, 7)
    torch.testing.assert_close(frozen(x), bn(x), rtol=1e-5, atol=1e-6)
    assert list(dict(frozen.named_parameters())) == []
    assert sorted(frozen.state_dict()) == ["bias", "running_mean", "running_var", "weight"]


def test_basic_block_resnet_matches_huggingface_resnet():
    """Oracle: HF's native ResNet (basic blocks, BatchNorm2d in eval), weights renamed per docs/interop.md §4.1."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.ResNetModel(
        transformers.ResNetConfig(
            layer_type="basic", embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 2, 1, 1]
        )
    ).eval()
    with torch.no_grad():
        for name, buffer in hf.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 2)
            elif name.endswith("running_mean"):
                buffer.normal_()
    ours = ResNet(BasicBlock, (1, 2, 1, 1), 8, norm_layer=nn.BatchNorm2d).eval()
    renamed = {}
    for key, value in hf.state_dict().items():
        key = key.replace("embedder.embedder.convolution", "conv1").replace("embedder.embedder.normalization", "bn1")
        if key.startswith("encoder.stages."):
            _, _, stage, _, block, rest = key.split(".", 5)
            rest = (
                rest.replace("shortcut.convolution", "downsample.0")
                .replace("shortcut.normalization", "downsample.1")
                .replace("layer.0.convolution", "conv1")
                .replace("layer.0.normalization", "bn1")
                .replace("layer.1.convolution", "conv2")
                .replace("layer.1.normalization", "bn2")
            )
            key = f"layer{int(stage) + 1}.{block}.{rest}"
        renamed[key] = value
    ours.load_state_dict(renamed, strict=True)
    images = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = hf(images, output_hidden_states=True).hidden_states[1:]  # after each stage
        actual = ours(images)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_dc5_keeps_c5_at_stride_16_with_torchvisions_dilations():
    body = ResNet(Bottleneck, (1, 1, 1, 3), base_width=8, dilation=True)
    plain = ResNet(Bottleneck, (1, 1, 1, 3), base_width=8)
    images = torch.randn(1, 3, 64, 96)
    assert body(images)[3].shape[-2:] == (4, 6) and plain(images)[3].shape[-2:] == (2, 3)
    assert body.strides == [4, 8, 16, 16]
    # torchvision replace_stride_with_dilation: the first layer4 block keeps dilation 1, the rest use 2.
    assert [block.conv2.dilation for block in body.layer4] == [(1, 1), (2, 2), (2, 2)]
    assert [block.conv2.stride for block in body.layer4] == [(1, 1), (1, 1), (1, 1)]
    assert body.layer4[0].downsample[0].stride == (1, 1)
    assert list(body.state_dict()) == list(plain.state_dict())  # DC5 changes no key or shape


def test_freezing_follows_the_reference_rules():
    def trainable(**kwargs):
        backbone = Backbone("resnet18", (1, 1, 1, 1), 8, frozen_bn=False, **kwargs)
        return {name.split(".")[1] for name, p in backbone.named_parameters() if p.requires_grad}

    assert trainable() == {"layer2", "layer3", "layer4"}
    assert trainable(freeze_stem_and_layer1=False) == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}
    assert trainable(train_backbone=False) == set()


def test_masks_are_nearest_downsampled_and_match_feature_sizes():
    padding_mask = torch.zeros(2, 64, 64, dtype=torch.bool)
    padding_mask[1, :, 32:] = True  # right half of image 1 is padding
    backbone = Backbone("resnet18", (1, 1, 1, 1), 8)
    outputs = backbone(torch.randn(2, 3, 64, 64), padding_mask)
    assert [tuple(f.shape[-2:]) for f, _ in outputs] == [(8, 8), (4, 4), (2, 2)]
    for feature, mask in outputs:
        assert mask.shape == (2, *feature.shape[-2:]) and mask.dtype == torch.bool
        width = mask.shape[-1]
        assert not mask[0].any() and mask[1, :, width // 2 :].all() and not mask[1, :, : width // 2].any()
    small = torch.tensor([[[False, False, True], [False, False, True]]])  # (1, 2, 3)
    assert downsample_mask(small, (1, 2)).tolist() == [[[False, False]]]  # nearest picks columns 0 and 1


def test_load_torchvision_weights_drops_fc_and_counters(tmp_path):
    source = ResNet(Bottleneck, (1, 1, 1, 1), base_width=8, norm_layer=nn.BatchNorm2d)
    state = dict(source.state_dict())
    assert any(k.endswith("num_batches_tracked") for k in state)
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 256), torch.zeros(1000)
    torch.save(state, tmp_path / "resnet.pth")
    target = ResNet(Bottleneck, (1, 1, 1, 1), base_width=8)  # FrozenBatchNorm2d
    load_torchvision_weights(target, tmp_path / "resnet.pth")
    torch.testing.assert_close(target.layer3[0].conv2.weight, source.layer3[0].conv2.weight)
    torch.testing.assert_close(target.layer3[0].bn2.running_var, source.layer3[0].bn2.running_var)

    state["layer1.0.conv1.weight"] = torch.zeros(3, 3, 1, 1)
    del state["layer4.0.conv3.weight"]
    with pytest.raises(
        ValueError, match=r"missing \['layer4.0.conv3.weight'\] \(1\).*mis-shaped \['layer1.0.conv1.weight"
    ):
        load_torchvision_weights(target, state)


class _TwoLevelConvs(nn.Module):
    """Any backbone with the contract: two strided convs, levels at stride 16 and 32."""

    def __init__(self):
        super().__init__()
        self.to16 = nn.Conv2d(3, 12, 16, stride=16)
        self.to32 = nn.Conv2d(12, 20, 2, stride=2)
        self.num_channels = [12, 20]
        self.strides = [16, 32]

    def forward(self, images, padding_mask):
        c16 = self.to16(images)
        c32 = self.to32(c16)
        return [(c, downsample_mask(padding_mask, c.shape[-2:])) for c in (c16, c32)]


def test_injected_backbone_is_used_and_levels_are_topped_up(make_config):
    from deformable_detr.models.detector import DeformableDETR

    config = make_config(num_feature_levels=3)
    model = DeformableDETR(config, backbone=_TwoLevelConvs())
    assert [p[0].in_channels for p in model.input_proj] == [12, 20, 20]  # 1x1, 1x1, then a 3x3 stride-2 on C_last
    images = torch.randn(2, 3, 64, 96)
    out = model(images, torch.zeros(2, 64, 96, dtype=torch.bool))
    assert out["pred_boxes"].shape == (2, config.num_queries, 4)
    out["pred_logits"].sum().backward()
    assert model.backbone.to16.weight.grad is not None and model.backbone.to16.weight.grad.abs().sum() > 0


def test_injected_resnet_equals_the_built_one(make_config):
    from deformable_detr.models.detector import DeformableDETR, _resnet_backbone

    config = make_config()
    torch.manual_seed(0)
    built = DeformableDETR(config).eval()
    injected = DeformableDETR(config, backbone=_resnet_backbone(config)).eval()
    injected.load_state_dict(built.state_dict())
    images = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(injected(images)["pred_boxes"], built(images)["pred_boxes"], rtol=0, atol=0)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda b: setattr(b, "num_channels", []), "num_channels = \\[\\].*non-empty list"),
        (lambda b: setattr(b, "strides", [16]), "2 num_channels but 1 strides"),
        (
            lambda b: setattr(b, "num_channels", [12, 20, 30, 40, 50]) or setattr(b, "strides", [4, 8, 16, 32, 64]),
            "returns 5 levels, more than num_feature_levels=4",
        ),
    ],
)
def test_backbone_breaking_the_contract_is_refused(make_config, edit, message):
    from deformable_detr.errors import ConfigError
    from deformable_detr.models.detector import DeformableDETR

    backbone = _TwoLevelConvs()
    edit(backbone)
    with pytest.raises(ConfigError, match=message):
        DeformableDETR(make_config(), backbone=backbone)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(backbone="resnet152"), "backbone='resnet152' is unknown; choose one of resnet18, resnet34, resnet50, "),
        (dict(backbone_depths=(1, 0, 1, 1)), r"backbone_depths=\(1, 0, 1, 1\) must be 4 positive ints"),
        (dict(backbone_base_width=0), r"backbone_base_width=0 must be >= 1 \(64 in torchvision\)"),
    ],
)
def test_both_configs_check_their_resnet_fields_alike(overrides, message):
    """`ModelConfig` and `DetrConfig` share `check_resnet_fields`: the same line for the same bad field."""
    from deformable_detr.models.config import ModelConfig
    from deformable_detr.models.detr_config import DetrConfig

    for config_class in (ModelConfig, DetrConfig):
        with pytest.raises(ValueError, match=message):
            config_class(**overrides)
        assert config_class(backbone_depths=[1, 2, 1, 1]).backbone_depths == (1, 2, 1, 1)  # a JSON list -> tuple
