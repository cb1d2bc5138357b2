"""Tiny randomly initialised Hugging Face Deformable DETR models: the oracle for the interop tests.

Imported by the tests of this folder (pytest puts the folder on sys.path).

Each variant HF supports is built with its native ResNet backbone (bottleneck blocks, base width 8,
2 blocks in layer2 so block indices > 0 are exercised), d_model 32, 4 heads, 2 encoder / 3 decoder
layers and different encoder/decoder point counts, so a swapped name or size cannot go unnoticed.
Every parameter and buffer gets small random values on top of HF's init (which zeroes the sampling-offset
weights, attention weights and several biases), and under box refinement the class heads, which a fresh
HF model ties into one tensor (docs/interop.md §7, pitfall 2), are untied so each decoder layer has its own head.
"""

from __future__ import annotations

import functools

import pytest
import torch

transformers = pytest.importorskip("transformers")

VARIANTS = {
    "multi-scale": dict(num_feature_levels=4),
    "single-scale": dict(num_feature_levels=1),
    "box-refine": dict(num_feature_levels=4, with_box_refine=True),
    "two-stage": dict(num_feature_levels=4, with_box_refine=True, two_stage=True),
}
NUM_HEADS = 4
NUM_QUERIES = 7
NUM_LABELS = 5


def make_hf_config(variant: str, num_heads: int = NUM_HEADS):
    """HF `DeformableDetrConfig` of the tiny model for `variant` (a key of VARIANTS)."""
    options = VARIANTS[variant]
    out_features = ["stage2", "stage3", "stage4"] if options["num_feature_levels"] > 1 else ["stage4"]
    backbone = transformers.ResNetConfig(
        embedding_size=8,
        hidden_sizes=[32, 64, 128, 256],  # bottleneck outputs 4 * 8 * 2**(s-1): a width-8 torchvision ResNet
        depths=[1, 2, 1, 1],
        layer_type="bottleneck",
        out_features=out_features,
    )
    return transformers.DeformableDetrConfig(
        backbone_config=backbone,
        d_model=32,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=num_heads,
        decoder_attention_heads=num_heads,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        encoder_n_points=2,
        decoder_n_points=3,
        num_queries=NUM_QUERIES,
        two_stage_num_proposals=NUM_QUERIES,
        num_labels=NUM_LABELS,
        **options,
    )


def _randomize(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Add small noise to every parameter (aliases share storage, so they stay aliases) and to frozen BN."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            scale = 0.1 if ("sampling_offsets" in name or "attention_weights" in name) else 0.05
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))
            elif name.endswith(("running_mean", "normalization.bias")):
                buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator))
            elif name.endswith("normalization.weight"):
                buffer.copy_(1.0 + 0.1 * torch.randn(buffer.shape, generator=generator))


def make_hf_model(variant: str, seed: int = 0, num_heads: int = NUM_HEADS):
    """Randomly initialised HF `DeformableDetrForObjectDetection` in eval mode (see module docstring)."""
    torch.manual_seed(seed)
    model = transformers.DeformableDetrForObjectDetection(make_hf_config(variant, num_heads)).eval()
    if model.config.with_box_refine and not model.config.two_stage:
        for head in model.class_embed:  # untie the class heads HF ties in a fresh model
            head.weight = torch.nn.Parameter(head.weight.detach().clone())
            head.bias = torch.nn.Parameter(head.bias.detach().clone())
    _randomize(model, torch.Generator().manual_seed(seed + 1))
    return model


def padded_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two images of different sizes (64x80 and 30x38) padded into one batch.

    Returns:
        images (2, 3, 64, 80) float32 (zeros in the padding), pixel_mask (2, 64, 80) int64, 1 = valid (HF).
    """
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(2, 3, 64, 80)
    pixel_mask = torch.zeros(2, 64, 80, dtype=torch.long)
    for index, (height, width) in enumerate(((64, 80), (30, 38))):
        images[index, :, :height, :width] = torch.randn(3, height, width, generator=generator)
        pixel_mask[index, :height, :width] = 1
    return images, pixel_mask


def hf_outputs(model, images: torch.Tensor, pixel_mask: torch.Tensor) -> dict:
    """HF outputs in our output format: pred_logits/pred_boxes, aux_outputs, enc_outputs (two-stage).

    HF returns per-layer predictions only inside its loss, so they are recomputed here from its
    intermediate states exactly as `DeformableDetrForObjectDetection.forward` computes the last layer.
    """
    from transformers.models.deformable_detr.modeling_deformable_detr import inverse_sigmoid

    with torch.no_grad():
        out = model(pixel_values=images, pixel_mask=pixel_mask)
        layers = []
        for level in range(out.intermediate_hidden_states.shape[1]):
            reference = out.init_reference_points if level == 0 else out.intermediate_reference_points[:, level - 1]
            reference = inverse_sigmoid(reference)
            hidden = out.intermediate_hidden_states[:, level]
            delta = model.bbox_embed[level](hidden)
            if reference.shape[-1] == 4:
                boxes = (delta + reference).sigmoid()
            else:
                boxes = torch.cat([delta[..., :2] + reference, delta[..., 2:]], -1).sigmoid()
            layers.append({"pred_logits": model.class_embed[level](hidden), "pred_boxes": boxes})
    torch.testing.assert_close(layers[-1]["pred_logits"], out.logits)  # the recomputation is HF's own
    torch.testing.assert_close(layers[-1]["pred_boxes"], out.pred_boxes)
    result = dict(layers[-1], aux_outputs=layers[:-1])
    if out.enc_outputs_class is not None:
        result["enc_outputs"] = {
            "pred_logits": out.enc_outputs_class,
            "pred_boxes": out.enc_outputs_coord_logits.sigmoid(),
        }
    return result


def max_abs_diff(ours: dict, reference: dict) -> dict[str, float]:
    """Max |ours - reference| of final, aux (all layers together) and encoder outputs."""
    diffs = {}
    for name in ("pred_logits", "pred_boxes"):
        diffs[name] = (ours[name] - reference[name]).abs().max().item()
        diffs[f"aux_{name}"] = max(
            (a[name] - b[name]).abs().max().item() for a, b in zip(ours["aux_outputs"], reference["aux_outputs"])
        )
        if "enc_outputs" in reference:
            diffs[f"enc_{name}"] = (ours["enc_outputs"][name] - reference["enc_outputs"][name]).abs().max().item()
    return diffs


def assert_same_outputs(ours: dict, reference: dict, atol: float = 1e-5) -> None:
    """Our outputs equal the reference's within `atol` (fp32): final, every aux layer, encoder outputs."""
    assert len(ours["aux_outputs"]) == len(reference["aux_outputs"])
    assert ("enc_outputs" in ours) == ("enc_outputs" in reference)
    diffs = max_abs_diff(ours, reference)
    assert max(diffs.values()) <= atol, diffs


@functools.cache
def reference(variant: str, num_heads: int = NUM_HEADS):
    """(HF model, its outputs on `padded_batch()`), built once per session; callers must not modify them."""
    model = make_hf_model(variant, num_heads=num_heads)
    return model, hf_outputs(model, *padded_batch())
