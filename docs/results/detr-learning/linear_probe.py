"""Is an object's class linearly decodable from the DETR feature token at its centre?

    python linear_probe.py DATA [RUN_DIR | -] [BACKBONE_WEIGHTS]

Builds `detr-demo` for DATA's classes (fresh, or RUN_DIR/checkpoint.pth, optionally with BACKBONE_WEIGHTS in the
body), takes the C5 feature and the encoder memory at the token under each box centre (400 training images,
100 validation images, no augmentation), and fits a logistic regression on the training tokens. Prints its
training and validation accuracy (chance = 1 / K).
"""

import dataclasses
import sys

import torch

from deformable_detr.data.coco import collate
from deformable_detr.models.position_encoding import sine_position_encoding
from deformable_detr.registry import build_model
from deformable_detr.training import checkpoint
from deformable_detr.training.config import TrainConfig
from deformable_detr.training.datasets import build_datasets


def centre_tokens(model, dataset, count: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """{"c5": (N, C5), "memory": (N, d_model)} at each box centre's token, and the N labels."""
    features, labels = {"c5": [], "memory": []}, []
    for start in range(0, count, 16):
        images, mask, targets = collate([dataset[i] for i in range(start, min(count, start + 16))], 32)
        with torch.no_grad():
            c5, level_mask = model.backbone(images, mask)[-1]  # (B, C5, H, W), (B, H, W)
            source = model.input_proj(c5)
            pos = sine_position_encoding(level_mask, model.config.d_model // 2, offset=0.0)
            width = source.shape[-1]
            memory = model.transformer.encoder(
                source.flatten(2).transpose(1, 2), pos.flatten(2).transpose(1, 2), level_mask.flatten(1)
            )  # (B, S, C)
        valid_h = (~level_mask).sum(1).max(1).values  # (B,) valid rows and columns of the C5 map
        valid_w = (~level_mask).sum(2).max(1).values
        for b, target in enumerate(targets):
            for box, label in zip(target["boxes"], target["labels"]):
                y = min(int(box[1] * valid_h[b]), c5.shape[-2] - 1)
                x = min(int(box[0] * valid_w[b]), width - 1)
                features["c5"].append(c5[b, :, y, x])
                features["memory"].append(memory[b, y * width + x])
                labels.append(int(label))
    return {k: torch.stack(v) for k, v in features.items()}, torch.tensor(labels)


def main(data: str, run: str = "-", backbone_weights: str | None = None) -> None:
    torch.set_num_threads(1)
    config = TrainConfig.preset("detr-demo", data_dir=data, augment=False, train_scales=(128,), max_size=171)
    config = dataclasses.replace(config, val_size=128)
    train, val = build_datasets(config)
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(config.model, num_classes=train.num_classes))
    if run != "-":
        saved = checkpoint.load_checkpoint(f"{run}/checkpoint.pth")["model"]
        model = build_model(TrainConfig.of_run(run).model)
        model.load_state_dict(saved)
    if backbone_weights:
        model.backbone.body.load_state_dict(torch.load(backbone_weights, weights_only=True))
    model.eval()
    train_x, train_y = centre_tokens(model, train, 400)
    val_x, val_y = centre_tokens(model, val, 100)
    for name in train_x:
        mean, std = train_x[name].mean(0), train_x[name].std(0) + 1e-6
        a, b = (train_x[name] - mean) / std, (val_x[name] - mean) / std
        classifier = torch.nn.Linear(a.shape[1], train.num_classes)
        optimizer = torch.optim.Adam(classifier.parameters(), 1e-2, weight_decay=1e-3)
        for _ in range(300):
            loss = torch.nn.functional.cross_entropy(classifier(a), train_y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            train_acc = (classifier(a).argmax(-1) == train_y).float().mean().item()
            val_acc = (classifier(b).argmax(-1) == val_y).float().mean().item()
        print(f"{name}: train accuracy {train_acc:.2f}, val accuracy {val_acc:.2f} ({len(train_y)}/{len(val_y)} boxes)")


if __name__ == "__main__":
    main(*sys.argv[1:])
