"""Training data as a pure function of (seed, epoch, position): what makes resuming mid-epoch exact.

- Order: each epoch is the permutation `DistributedSampler(seed, epoch)` gives this process, cut to
  whole batches; a resumed epoch starts `batches_done` batches into that same list.
- Augmentation: before image `index` is read in epoch `epoch`, python `random`, numpy and torch are
  seeded from (seed, epoch, index) and restored afterwards, so an image gets the same flips and
  crops whichever worker reads it, whatever was read before, and whether or not the run was resumed.
- The loaders own a `torch.Generator`, so creating one never draws from the global RNG (which
  drives dropout and is saved in checkpoints).
"""

from __future__ import annotations

import functools
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..data.coco import collate
from ..util import distributed
from .config import TrainConfig


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of image `index` in epoch `epoch` (a 31-bit mix of the three)."""
    return (seed * 1_000_003 + epoch * 999_983 + index * 1009 + 12_345) % (2**31 - 1)


class SeededAugmentation(Dataset):
    """`dataset[index]` with the random generators seeded from (seed, epoch, index), then restored."""

    def __init__(self, dataset: Dataset, seed: int, epoch: int):
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        value = sample_seed(self.seed, self.epoch, index)
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(value)
            np.random.seed(value)
            torch.manual_seed(value)
            try:
                return self.dataset[index]
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)


class EpochOrder(Sampler[int]):
    """This process's indices of epoch `epoch` (DistributedSampler's permutation), from sample `start` on."""

    def __init__(self, num_samples: int, seed: int, epoch: int, start: int = 0):
        sampler = DistributedSampler(
            range(num_samples),
            num_replicas=distributed.world_size(),
            rank=distributed.rank(),
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        sampler.set_epoch(epoch)
        self.indices = list(sampler)[start:]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def batches_per_epoch(dataset: Dataset, config: TrainConfig) -> int:
    """Whole batches this process reads per epoch (every process gets the same number)."""
    return (len(dataset) // distributed.world_size()) // config.batch_size


def padding_multiple(model) -> int:
    """The stride of the model's coarsest feature level (64 for 4 levels on a ResNet, 32 single-scale).

    A batch padded to a multiple of it gets exact padding masks on every level: each level's mask is the
    pixel mask downsampled by nearest neighbour (as the reference code does), which on any other size
    miscounts the valid rows and columns by up to a whole cell (64 px at stride 64). Trained on such
    batches, a model learns per-level valid ratios that do not match an image alone (`predict`): the demo
    model lost a third of its AP (0.172 -> 0.114) evaluated image by image.
    """
    strides = list(model.backbone.strides)
    levels = getattr(model.config, "num_feature_levels", len(strides))
    return strides[-1] * 2 ** max(0, levels - len(strides))  # extra levels: stride-2 convs on the last


def train_loader(
    dataset: Dataset, config: TrainConfig, epoch: int, batches_done: int = 0, device="cpu", pad_multiple: int = 1
) -> DataLoader:
    """Batches `batches_done`, `batches_done + 1`, ... of epoch `epoch`, augmented as in `SeededAugmentation`,
    each padded to a multiple of `pad_multiple` (`padding_multiple(model)`)."""
    order = EpochOrder(len(dataset), config.seed, epoch, start=batches_done * config.batch_size)
    return DataLoader(
        SeededAugmentation(dataset, config.seed, epoch),
        batch_size=config.batch_size,
        sampler=order,
        collate_fn=functools.partial(collate, size_divisibility=pad_multiple),
        num_workers=config.workers,
        drop_last=True,
        generator=torch.Generator(),
        pin_memory=torch.device(device).type == "cuda",
    )


def eval_loader(dataset: Dataset, config: TrainConfig, device="cpu") -> DataLoader:
    """Every image of `dataset` in order, batched; no augmentation."""
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=False,
        collate_fn=collate,
        num_workers=config.workers,
        generator=torch.Generator(),
        pin_memory=torch.device(device).type == "cuda",
    )
