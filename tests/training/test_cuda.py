"""Training on CUDA (`gpu` tests: skipped without a CUDA device): one step of the tiny and the paper's default
model equals the CPU's, RNG states restore from a checkpoint loaded onto the GPU, and a run resumed on CUDA
continues where it stopped."""

import copy
import dataclasses

import pytest
import torch
from torch import nn
from tqdm import tqdm

from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.training import checkpoint as ckpt
from deformable_detr.training import loop
from deformable_detr.training.criterion import LossConfig, SetCriterion
from deformable_detr.training.setup import setup
from tiny_models import tiny_config

pytestmark = pytest.mark.gpu


class _Recorder(nn.Module):
    """A matcher that records what the real one returns (so the CUDA run can use the CPU run's matching)."""

    def __init__(self, matcher: nn.Module):
        super().__init__()
        self.matcher, self.indices = matcher, []

    def forward(self, outputs, targets):
        self.indices.append(self.matcher(outputs, targets))
        return self.indices[-1]


class _Replay(nn.Module):
    def __init__(self, indices: list):
        super().__init__()
        self.indices = iter(indices)

    def forward(self, outputs, targets):
        return next(self.indices)


def _batch(num_classes: int):
    """Two normalized images (the second padded on the right and bottom) and 3 boxes each."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 96, 128, generator=generator)  # (B, 3, H, W)
    padding_mask = torch.zeros(2, 96, 128, dtype=torch.bool)
    padding_mask[1, 80:, :] = padding_mask[1, :, 100:] = True  # image 1 is 80 x 100
    targets = [
        {
            "labels": torch.randint(0, num_classes, (3,), generator=generator),
            "boxes": torch.cat([torch.rand(3, 2, generator=generator) * 0.5 + 0.25, torch.full((3, 2), 0.2)], 1),
        }
        for _ in range(2)
    ]
    return images, padding_mask, targets


def _step(model, criterion, images, padding_mask, targets):
    """Forward, losses, backward; returns (losses as floats, {name: grad})."""
    model.zero_grad(set_to_none=True)
    losses = criterion(model(images, padding_mask), targets)
    criterion.weighted_sum(losses).backward()
    grads = {name: p.grad.detach().cpu() for name, p in model.named_parameters() if p.grad is not None}
    return {name: value.item() for name, value in losses.items()}, grads


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_training_step_on_cuda_matches_cpu(name, no_tf32):
    """Same weights, batch and matching (the CPU's, replayed, so a near-tie cannot flip it): the losses and every
    gradient on CUDA equal the CPU's. fp32 both sides with TF32 off; summation orders differ (and the Triton
    backward adds grad_value with atomics in any order): losses within 1e-5 relative, each gradient within 1e-4 of
    its tensor's largest entry plus 1e-7 (a bias in front of a GroupNorm has an exact gradient of 0, so its
    entries, ~1e-8, are rounding alone). The R50 backbone's gradients are compared within 1e-3 of their largest
    entry: on an H200 (2026-12-04, TF32 off) cuDNN's convolution backward differed from the CPU's by up to 5.7e-4
    of the largest entry at layer2, after the gradient has crossed layers 3 and 4."""
    config = tiny_config(dropout=0.0) if name == "tiny" else ModelConfig(num_classes=5, dropout=0.0)
    torch.manual_seed(0)
    model = DeformableDETR(config).train()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the zero-initialised heads perturbed, so every path carries a gradient
        for parameter_name, parameter in model.named_parameters():
            if not parameter_name.startswith("backbone."):
                parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    images, padding_mask, targets = _batch(config.num_classes)
    criterion = SetCriterion.from_config(config.num_classes, LossConfig())
    gpu_model, gpu_criterion = copy.deepcopy(model).cuda(), copy.deepcopy(criterion).cuda()
    criterion.matcher = _Recorder(criterion.matcher)
    cpu_losses, cpu_grads = _step(model, criterion, images, padding_mask, targets)
    gpu_criterion.matcher = _Replay(criterion.matcher.indices)
    cuda_targets = [{k: v.cuda() for k, v in t.items()} for t in targets]
    gpu_losses, gpu_grads = _step(gpu_model, gpu_criterion, images.cuda(), padding_mask.cuda(), cuda_targets)

    assert all(torch.isfinite(torch.tensor(v)) for v in gpu_losses.values())
    assert gpu_losses == pytest.approx(cpu_losses, rel=1e-5, abs=1e-7)
    assert gpu_grads.keys() == cpu_grads.keys() and len(gpu_grads) > 10
    for key, expected in cpu_grads.items():
        relative = 1e-3 if name == "default" and key.startswith("backbone.") else 1e-4
        scale = expected.abs().max().item()
        torch.testing.assert_close(
            gpu_grads[key], expected, rtol=0, atol=relative * scale + 1e-7, msg=lambda m, k=key: f"{k}: {m}"
        )


def test_rng_states_restore_from_a_checkpoint_loaded_onto_cuda(tmp_path):
    """`--resume` on a GPU loads the checkpoint with map_location=cuda: the RNG states arrive as CUDA tensors."""
    import random

    import numpy as np

    torch.cuda.init()
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    ckpt.save_checkpoint(tmp_path / "checkpoint.pth", {"model": {}, "rng": ckpt.rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(3), torch.rand(3, device="cuda").cpu())
    torch.manual_seed(4)  # move every generator elsewhere
    random.seed(4)
    np.random.seed(4)
    loaded = ckpt.load_checkpoint(tmp_path / "checkpoint.pth", map_location="cuda")
    assert loaded["rng"]["torch"].device.type == "cuda"
    ckpt.set_rng_state(loaded["rng"])
    actual = (random.random(), np.random.rand(), torch.rand(3), torch.rand(3, device="cuda").cpu())
    assert actual[:2] == expected[:2]
    assert torch.equal(actual[2], expected[2]) and torch.equal(actual[3], expected[3])


def test_resumed_run_on_cuda_continues_with_the_same_dropout_and_data(tiny_train_config, make_tiny_model_config):
    """Step 2 of a run equals step 2 of the same run resumed from its step-1 checkpoint on CUDA: same weights,
    batch and dropout masks (the CUDA RNG state comes back from the checkpoint), bf16 autocast as the demo.
    Both forwards have the same inputs; only the order of float atomics may differ: loss within 1e-4 relative."""
    config = dataclasses.replace(
        tiny_train_config,
        model=make_tiny_model_config(dropout=0.1),
        device="cuda",
        amp=True,
        epochs=1,
        max_steps=2,
        checkpoint_every=1,
    )
    run = setup(config)
    loop.seed_epoch(config.seed, 0, 0)
    loop.train_one_epoch(run, tqdm(disable=True))  # step 1 (writes checkpoint.pth at step 1), step 2
    assert run.state.step == 2 and next(run.model.parameters()).device.type == "cuda"
    continuous = run.state.loss_sums["loss"]

    resumed = setup(config, resume=True)
    assert resumed.state.step == 1 and resumed.state.batches_done == 1
    loop.train_one_epoch(resumed, tqdm(disable=True))
    assert resumed.state.step == 2
    assert torch.isfinite(torch.tensor(continuous))
    assert resumed.state.loss_sums["loss"] == pytest.approx(continuous, rel=1e-4)
