"""A shared pretrained backbone for the convergence experiment: the ResNet body trained to classify *other* shapes.

The paper trains DETR and Deformable DETR from an ImageNet ResNet. The synthetic analogue: render single shapes of
classes the experiment never detects, train the body (global-average-pooled C5 -> linear layer) to name them, and
give every model of the experiment that body. Without it, DETR's classifier learns nothing from a random backbone
on the CPU budget (docs/results/detr-learning/report.md).

    path = pretrain_backbone(model_config, data_dir, "runs/conv/backbone.pth", steps=600)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..checkpoint.files import atomic_save
from ..pipeline.processor import IMAGENET_MEAN, IMAGENET_STD

PRETRAIN_CLASSES = ("hexagon", "crescent", "arrow", "semicircle", "star", "ring", "cross")
PRETRAIN_BATCH = 32
PRETRAIN_LR = 2e-3


def _load_split(root: Path, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, size, size) and labels (N,) = the class index (0-based) of each image's one object."""
    coco = json.loads((root / split / "annotations.json").read_text())
    label = {a["image_id"]: a["category_id"] - 1 for a in coco["annotations"]}
    images, labels = [], []
    for image in coco["images"]:
        if image["id"] not in label:
            continue
        picture = Image.open(root / split / "images" / image["file_name"]).convert("RGB").resize((size, size))
        images.append(torch.from_numpy(np.array(picture, dtype=np.uint8)).permute(2, 0, 1))
        labels.append(label[image["id"]])
    return torch.stack(images), torch.tensor(labels)


def _normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (images.float() / 255 - mean) / std


def pretrain_backbone(
    model_config,
    data_dir: str | Path,
    out: str | Path,
    steps: int,
    seed: int = 0,
    size: int = 128,
    progress: bool = True,
) -> dict[str, float]:
    """Train `model_config`'s ResNet body to classify the one shape of each image of `data_dir`; save the body.

    Args:
        model_config: a ModelConfig or DetrConfig; its backbone fields choose the body.
        data_dir: a dataset (train/ and val/) with one object per image (e.g. `PRETRAIN_CLASSES`).
        out: where the body's state dict goes (torchvision layout, for `TrainConfig.backbone_weights`); written
            atomically.
        steps: optimizer steps, batch `PRETRAIN_BATCH`, AdamW one-cycle to `PRETRAIN_LR`, horizontal flips.
        seed: seeds the initialisation and the batches.
        size: images are resized to size x size.

    Returns:
        {"val_accuracy": fraction of validation images named right, "steps": steps}.
    """
    from ..models.backbone import Backbone

    data_dir = Path(data_dir)
    train_x, train_y = _load_split(data_dir, "train", size)
    val_x, val_y = _load_split(data_dir, "val", size)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    backbone = Backbone(
        model_config.backbone,
        model_config.backbone_depths,
        model_config.backbone_base_width,
        return_interm_layers=False,
        frozen_bn=False,
        freeze_stem_and_layer1=False,
    )
    head = torch.nn.Linear(backbone.num_channels[-1], int(max(train_y.max(), val_y.max())) + 1)
    optimizer = torch.optim.AdamW([*backbone.body.parameters(), *head.parameters()], PRETRAIN_LR, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, PRETRAIN_LR, total_steps=steps)
    backbone.train()
    for _ in tqdm(range(steps), desc="pretrain backbone", unit="step", disable=not progress):
        index = torch.randint(0, len(train_y), (PRETRAIN_BATCH,), generator=generator)
        images = _normalize(train_x[index])
        flip = torch.rand(PRETRAIN_BATCH, generator=generator) < 0.5
        images[flip] = images[flip].flip(-1)
        logits = head(backbone.body(images)[-1].mean((2, 3)))
        loss = torch.nn.functional.cross_entropy(logits, train_y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    backbone.eval()
    with torch.no_grad():
        predictions = torch.cat(
            [head(backbone.body(_normalize(chunk))[-1].mean((2, 3))).argmax(-1) for chunk in val_x.split(100)]
        )
    accuracy = (predictions == val_y).float().mean().item()
    atomic_save(backbone.body.state_dict(), Path(out))
    return {"val_accuracy": accuracy, "steps": steps}
