"""Pretrain the `detr-demo` / `demo` ResNet body as a shape classifier: an "ImageNet" for the synthetic shapes.

    deformable-detr make-dataset pre --train 2000 --val 200 --image-size 128 --objects-per-image 1 1 \\
        --object-size 30 70 --classes hexagon,crescent,arrow,semicircle,star,ring,cross
    python pretrain_backbone.py pre shapes_resnet.pth 800

Global-average-pooled C5 -> linear classifier of the one object's class, batch 32, AdamW one-cycle to 2e-3,
horizontal flips. Saves the body in torchvision layout (`train --backbone-weights shapes_resnet.pth`).
"""

import json
import sys
import time

import numpy as np
import torch
from PIL import Image

from deformable_detr.models.backbone import Backbone

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def load(root: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images resized to 128 x 128 and normalized (N, 3, 128, 128), labels (N,) = the one object's class."""
    coco = json.load(open(f"{root}/{split}/annotations.json"))
    label = {a["image_id"]: a["category_id"] - 1 for a in coco["annotations"]}
    images, labels = [], []
    for image in coco["images"]:
        picture = Image.open(f"{root}/{split}/images/{image['file_name']}").convert("RGB").resize((128, 128))
        pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255).permute(2, 0, 1)
        images.append((pixels - MEAN) / STD)
        labels.append(label[image["id"]])
    return torch.stack(images), torch.tensor(labels)


def main(root: str, out: str, steps: str) -> None:
    torch.set_num_threads(1)
    steps = int(steps)
    train_x, train_y = load(root, "train")
    val_x, val_y = load(root, "val")
    torch.manual_seed(0)
    backbone = Backbone(
        "resnet18", (1, 1, 1, 1), 32, return_interm_layers=False, frozen_bn=False, freeze_stem_and_layer1=False
    )
    head = torch.nn.Linear(backbone.num_channels[-1], int(train_y.max()) + 1)
    optimizer = torch.optim.AdamW([*backbone.body.parameters(), *head.parameters()], 2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps)
    started = time.time()
    for step in range(steps):
        index = torch.randint(0, len(train_y), (32,))
        images = train_x[index]
        flip = torch.rand(32) < 0.5
        images[flip] = images[flip].flip(-1)
        loss = torch.nn.functional.cross_entropy(head(backbone.body(images)[-1].mean((2, 3))), train_y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % 100 == 0:
            backbone.eval()
            with torch.no_grad():
                accuracy = (head(backbone.body(val_x)[-1].mean((2, 3))).argmax(-1) == val_y).float().mean().item()
            backbone.train()
            print(
                f"step {step + 1}: loss {loss.item():.3f}, val accuracy {accuracy:.3f}, {time.time() - started:.0f} s"
            )
    torch.save(backbone.body.state_dict(), out)


if __name__ == "__main__":
    main(*sys.argv[1:])
