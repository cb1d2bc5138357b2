"""Loading official (fundamentalvision/Deformable-DETR) checkpoints.

The official code is not installed, so official files are made from the HF reference models with the
mapping of docs/interop.md §4 written out here independently of the library (official <- HF, aliases
included, since an HF model instance holds them all), saved as the official `main.py` saves them
(a dict with "model", an `argparse.Namespace` under "args", optimizer and epoch), and the loaded model
must reproduce the HF outputs.
"""

from __future__ import annotations

import argparse
import os
import re

import pytest
import torch
from hf_reference import NUM_HEADS, VARIANTS, assert_same_outputs, reference, transformers

import deformable_detr
from deformable_detr.errors import CheckpointError
from deformable_detr.interop.official import official_to_ours, ours_to_official
from deformable_detr.models.detector import DeformableDETR

ARGS = {"nheads": NUM_HEADS, "dilation": False}  # what no tensor stores (two-stage also needs num_queries)


def load_official(checkpoint, **kwargs):
    """Converter + the one build-and-load step, as `deformable_detr.load` does for a file."""
    return DeformableDETR.from_state_dict(*official_to_ours(checkpoint, **kwargs))


def _torchvision_name(native: str) -> str:
    """HF native ResNet name -> torchvision name (docs/interop.md §4.1)."""
    native = native.replace("embedder.embedder.convolution", "conv1").replace("embedder.embedder.normalization", "bn1")
    stage = re.match(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(.*)", native)
    if stage is None:
        return native
    s, b, rest = stage.groups()
    rest = rest.replace("shortcut.convolution", "downsample.0").replace("shortcut.normalization", "downsample.1")
    rest = re.sub(r"layer\.(\d)\.convolution", lambda m: f"conv{int(m.group(1)) + 1}", rest)
    rest = re.sub(r"layer\.(\d)\.normalization", lambda m: f"bn{int(m.group(1)) + 1}", rest)
    return f"layer{int(s) + 1}.{b}.{rest}"


_LAYER_RULES = [  # (HF, official) within transformer.{encoder,decoder}.layers.i, docs/interop.md §4 table
    ("encoder", "self_attn_layer_norm", "norm1"),
    ("encoder", "final_layer_norm", "norm2"),
    ("decoder", "encoder_attn_layer_norm", "norm1"),
    ("decoder", "self_attn_layer_norm", "norm2"),
    ("decoder", "final_layer_norm", "norm3"),
    ("decoder", "encoder_attn", "cross_attn"),
    ("decoder", "self_attn.o_proj", "self_attn.out_proj"),
    (None, "mlp.fc1", "linear1"),
    (None, "mlp.fc2", "linear2"),
]


def hf_to_official(hf_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """docs/interop.md §4 in the official <- HF direction (keys of an HF model instance, aliases included)."""
    official, qkv = {}, {}
    for key, value in hf_state_dict.items():
        if key.startswith("model.backbone.model."):
            official["backbone.0.body." + _torchvision_name(key[len("model.backbone.model.") :])] = value
            continue
        if key.startswith("model.query_position_embeddings."):
            official[key.replace("model.query_position_embeddings.", "query_embed.")] = value
            continue
        if key.startswith("model.input_proj."):
            official[key[len("model.") :]] = value
            continue
        if not key.startswith("model."):
            official[key] = value  # class_embed.j, bbox_embed.j
            continue
        key = "transformer." + key[len("model.") :]
        layer = re.match(r"transformer\.(encoder|decoder)\.layers\.(\d+)\.(.*)", key)
        if layer:
            part, index, rest = layer.groups()
            projection = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
            if projection:
                qkv.setdefault((index, projection.group(2)), {})[projection.group(1)] = value
                continue
            for where, hf, off in _LAYER_RULES:
                if where in (None, part) and rest.startswith(hf + "."):
                    rest = off + rest[len(hf) :]
                    break
            key = f"transformer.{part}.layers.{index}.{rest}"
        official[key] = value
    for (index, tensor), parts in qkv.items():  # in_proj rows: q, k, v (rule 7)
        official[f"transformer.decoder.layers.{index}.self_attn.in_proj_{tensor}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]]
        )
    return official


def save_official_checkpoint(path, model_state: dict, args: argparse.Namespace) -> None:
    """As official main.py: torch.save of model, optimizer, lr_scheduler, epoch and args."""
    checkpoint = {
        "model": model_state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "params": [0, 1]}]},
        "lr_scheduler": {"step_size": 40, "last_epoch": 3},
        "epoch": 3,
        "args": args,
    }
    torch.save(checkpoint, path)


def _args(hf_model) -> argparse.Namespace:
    config = hf_model.config
    return argparse.Namespace(
        hidden_dim=config.d_model,
        nheads=NUM_HEADS,
        enc_layers=config.encoder_layers,
        dec_layers=config.decoder_layers,
        dim_feedforward=config.encoder_ffn_dim,
        num_queries=config.two_stage_num_proposals,
        num_feature_levels=config.num_feature_levels,
        enc_n_points=config.encoder_n_points,
        dec_n_points=config.decoder_n_points,
        with_box_refine=config.with_box_refine,
        two_stage=config.two_stage,
        dilation=False,
        backbone="resnet50",
        position_embedding="sine",
        masks=False,
        lr=2e-4,
        dropout=0.1,
    )


def _ours(model, images, pixel_mask):
    with torch.no_grad():
        return model(images, padding_mask=~pixel_mask.bool())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_from_official_file_matches_hf(variant, batch, tmp_path):
    hf_model, expected = reference(variant)
    state = hf_to_official(hf_model.state_dict())
    expected_keys = {"multi-scale": 0, "single-scale": 0, "box-refine": 1, "two-stage": 2}[variant]
    aliases = ("transformer.decoder.bbox_embed.0.layers.0.weight", "transformer.decoder.class_embed.0.weight")
    assert sum(key in state for key in aliases) == expected_keys  # the aliases are really in the file
    state["backbone.0.body.layer1.0.bn1.num_batches_tracked"] = torch.tensor(0)  # ignored leftovers
    state["class_embed.0.total_ops"] = torch.zeros(1)
    path = tmp_path / "checkpoint.pth"
    save_official_checkpoint(path, state, _args(hf_model))
    model = deformable_detr.load(path)
    assert model.checkpoint_info.format == "official"
    assert model.config.n_heads == NUM_HEADS  # from args.nheads: no tensor stores it
    assert_same_outputs(_ours(model, *batch), expected)


def test_from_official_raw_state_dict_with_config(batch):
    hf_model, expected = reference("box-refine")
    state = hf_to_official(hf_model.state_dict())
    with pytest.raises(CheckpointError, match=r"no args\.nheads, args\.dilation.*pass config=ModelConfig"):
        load_official(state)  # no args: the head count and DC5 are not guessed
    with pytest.raises(CheckpointError, match="not a multiple of heads.*pass config="):
        load_official({"model": state, "args": {"nheads": 3, "dilation": False}})
    config = load_official({"model": state, "args": ARGS}).config
    model = load_official(state, config=config)
    assert model.config.with_box_refine
    assert_same_outputs(_ours(model, *batch), expected)


def test_from_official_box_refine_detected_without_decoder_alias():
    """A converter that dropped `transformer.decoder.bbox_embed.*`: differing bbox heads still mean refine."""
    hf_model, _ = reference("box-refine")
    state = hf_to_official(hf_model.state_dict())
    state = {key: value for key, value in state.items() if not key.startswith("transformer.decoder.bbox")}
    model = load_official({"model": state, "args": argparse.Namespace(**ARGS)})
    assert model.config.with_box_refine and not model.config.two_stage


def test_from_official_rejects_differing_shared_heads():
    hf_model, _ = reference("multi-scale")
    state = hf_to_official(hf_model.state_dict())
    state = {k: (v + 1 if k == "class_embed.2.weight" else v) for k, v in state.items()}
    with pytest.raises(ValueError, match=r"'class_embed\.2' differs from 'class_embed\.0'"):
        load_official({"model": state, "args": ARGS})


def test_from_official_rejects_differing_decoder_alias():
    hf_model, _ = reference("two-stage")
    state = hf_to_official(hf_model.state_dict())
    key = "transformer.decoder.class_embed.1.bias"
    state[key] = state[key] + 1
    with pytest.raises(ValueError, match=r"'transformer\.decoder\.class_embed\.1' differs from 'class_embed\.1'"):
        load_official({"model": state, "args": {**ARGS, "num_queries": 7}})


def test_from_official_rejects_learned_position_embedding():
    state = hf_to_official(reference("single-scale")[0].state_dict())
    state["backbone.1.row_embed.weight"] = torch.zeros(50, 16)
    with pytest.raises(ValueError, match="learned position embedding .* is not supported"):
        load_official({"model": state, "args": ARGS})


class _Payload:
    """Pickles as a call to os.makedirs: what a crafted checkpoint would use to run code on load."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_from_official_refuses_foreign_pickles(tmp_path):
    marker = tmp_path / "code-was-run"
    path = tmp_path / "crafted.pth"
    state = hf_to_official(reference("single-scale")[0].state_dict())
    torch.save({"model": state, "args": argparse.Namespace(**ARGS), "extra": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match=r"crafted\.pth: refused: .*os.makedirs.*would run code") as error:
        load_official(path)
    assert "weights_only=False" not in str(error.value)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset, official_keys, million_parameters",
    [
        ("deformable-detr", 561, 40.07),
        ("deformable-detr-single-scale", 549, 34.07),
        ("deformable-detr-refine", 597, 40.85),
        ("deformable-detr-two-stage", 630, 41.18),
    ],
)
def test_full_size_official_layout(preset, official_keys, million_parameters):
    """Paper-size R50 models: the official file has docs/interop.md §3.3's key count, the inferred config is the
    preset, and the strict load succeeds (the unique parameter counts are the README's 40/34/41/41M)."""
    from deformable_detr.models.config import ModelConfig

    config = ModelConfig.preset(preset)
    out_features = ["stage2", "stage3", "stage4"] if config.num_feature_levels > 1 else ["stage4"]
    hf_config = transformers.DeformableDetrConfig(
        backbone_config=transformers.ResNetConfig(layer_type="bottleneck", out_features=out_features),
        num_labels=91,
        num_feature_levels=config.num_feature_levels,
        with_box_refine=config.with_box_refine,
        two_stage=config.two_stage,
    )
    state = hf_to_official(transformers.DeformableDetrForObjectDetection(hf_config).state_dict())
    assert len(state) == official_keys
    model = load_official({"model": state, "args": argparse.Namespace(nheads=8, num_queries=300, dilation=False)})
    assert model.config == config
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == million_parameters


def test_from_official_strips_ddp_prefix(batch):
    hf_model, expected = reference("single-scale")
    state = {"module." + key: value for key, value in hf_to_official(hf_model.state_dict()).items()}
    model = load_official({"model": state, "args": ARGS})
    assert_same_outputs(_ours(model, *batch), expected)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ours_to_official_round_trip_matches_the_independent_mapping(variant):
    """ours -> official reproduces the file the independent HF -> official mapping makes, aliases included."""
    hf_model, _ = reference(variant)
    expected = hf_to_official(hf_model.state_dict())
    args = {**ARGS, "num_queries": hf_model.config.two_stage_num_proposals}
    config, ours = official_to_ours({"model": expected, "args": args})
    official, written_args = ours_to_official(config, ours)
    assert official.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(official[key], value), key
    assert official_to_ours({"model": official, "args": written_args})[0] == config
