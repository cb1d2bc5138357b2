"""Run by test_distributed.py under `torchrun --nproc-per-node 2`: one DDP step, rank 0 saves the gradients."""

import sys

import torch
from torch.nn.parallel import DistributedDataParallel

from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.training.criterion import LossConfig, SetCriterion
from deformable_detr.util import distributed

MODEL = dict(
    backbone_base_width=8,
    d_model=32,
    n_heads=2,
    enc_n_points=2,
    dec_n_points=2,
    num_encoder_layers=1,
    num_decoder_layers=2,
    dim_feedforward=64,
    num_queries=10,
    dropout=0.0,
    backbone_frozen_bn=True,
    num_classes=3,
)


def batch():
    """Two 96x96 images and their targets, identical in every process."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 96, 96, generator=generator)
    targets = [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.3]])},
    ]
    return images, targets


def gradients(model, images, targets):
    """Loss on (images, targets), backward; returns {name: grad}."""
    criterion = SetCriterion.from_config(3, LossConfig())
    criterion.weighted_sum(criterion(model(images), targets)).backward()
    module = model.module if isinstance(model, DistributedDataParallel) else model
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def main(out_path: str) -> None:
    torch.set_num_threads(1)
    distributed.init_from_environment("cpu")
    torch.manual_seed(0)
    model = DistributedDataParallel(DeformableDETR(ModelConfig.preset("tiny", **MODEL)))
    images, targets = batch()
    r = distributed.rank()
    grads = gradients(model, images[r : r + 1], targets[r : r + 1])
    if distributed.is_main_process():
        torch.save(grads, out_path)
    distributed.destroy()


if __name__ == "__main__":
    main(sys.argv[1])
