"""Randomly initialised Hugging Face `DeformableDetrForObjectDetection` models: the peer the benchmarks
compare against (and the oracle the interop tests build their tiny variants with).

HF's init zeroes several tensors (sampling-offset weights, attention weights, box-head last layers), so
a freshly built model would leave paths untested; `perturb` adds small noise to them.
"""

from __future__ import annotations

import torch

PAPER_OUT_FEATURES = ["stage2", "stage3", "stage4"]  # C3-C5, as the paper's multi-scale model
SMOKE_SIZES = dict(
    d_model=32,
    encoder_layers=1,
    decoder_layers=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    num_queries=20,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
)


def hf_config(smoke: bool = False, num_labels: int = 91, **overrides):
    """HF `DeformableDetrConfig`: the paper's defaults (R50 via HF's native ResNet, d 256, 6+6 layers, 300
    queries), or with `smoke` a width-8, one-block-per-stage bottleneck ResNet and a d 32 transformer."""
    from transformers import DeformableDetrConfig, ResNetConfig

    if smoke:
        backbone = ResNetConfig(
            embedding_size=8,
            hidden_sizes=[32, 64, 128, 256],
            depths=[1, 1, 1, 1],
            layer_type="bottleneck",
            out_features=PAPER_OUT_FEATURES,
        )
        return DeformableDetrConfig(backbone_config=backbone, num_labels=num_labels, **{**SMOKE_SIZES, **overrides})
    backbone = ResNetConfig(layer_type="bottleneck", out_features=PAPER_OUT_FEATURES)  # HF's ResNet-50 defaults
    return DeformableDetrConfig(backbone_config=backbone, num_labels=num_labels, **overrides)


def perturb(model: torch.nn.Module, scale: float = 0.02, seed: int = 0, backbone: bool = False) -> None:
    """Add N(0, scale^2) noise to every parameter (aliases share storage, so they stay aliases); the
    backbone only with `backbone=True` (noise on its scaled init can make activations explode)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if backbone or not name.startswith("model.backbone."):
                parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def random_hf_model(smoke: bool = False, seed: int = 0, **config_overrides):
    """A perturbed (see `perturb`) HF model in eval mode, built under `torch.manual_seed(seed)`."""
    from transformers import DeformableDetrForObjectDetection

    torch.manual_seed(seed)
    model = DeformableDetrForObjectDetection(hf_config(smoke, **config_overrides)).eval()
    perturb(model, seed=seed)
    return model
