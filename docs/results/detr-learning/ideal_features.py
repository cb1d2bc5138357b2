"""DETR's transformer and heads alone, fed ideal features: can they learn the easy set when the features are perfect?

    python ideal_features.py DATA [steps=1500] [lr=1e-3] [m.num_queries=10] [m.num_decoder_layers=6] ...

The backbone is bypassed: the C5-sized map (stride 32) holds, at every token whose centre lies inside a box, 4.0 in
channel `label` and in channel K (objectness), plus N(0, 0.1) noise everywhere; it goes straight into
`DETR.detect`. Trained on DATA's training boxes (no augmentation, batches of 8 in a fixed order) with DETR's loss,
AdamW, 50 warm-up steps and clipping 0.1. Prints per window: loss_ce, the image-blind bound of loss_ce, L1, GIoU,
class_error (DETR's: no-object argmax counts as wrong) and class_error_objects (argmax over the K classes), then the
share of the matched queries' cross-attention on object tokens.
"""

import ast
import collections
import dataclasses
import math
import sys

import torch

from deformable_detr.data.coco import collate
from deformable_detr.registry import build_model
from deformable_detr.training.config import TrainConfig
from deformable_detr.training.datasets import build_datasets
from deformable_detr.training.optim import build_optimizer, lr_factor, set_lr
from deformable_detr.training.setup import build_criterion

STRIDE = 32


def ideal_map(images, padding_mask, targets, channels: int, num_classes: int):
    """(B, channels, H/32, W/32) ideal features and their (B, H/32, W/32) padding mask."""
    batch, _, height, width = images.shape
    h, w = height // STRIDE, width // STRIDE
    features = torch.zeros(batch, channels, h, w)
    mask = torch.nn.functional.interpolate(padding_mask[None].float(), size=(h, w))[0].bool()
    ys, xs = (torch.arange(h) + 0.5) * STRIDE, (torch.arange(w) + 0.5) * STRIDE  # token centres in pixels
    for b, target in enumerate(targets):
        valid_h, valid_w = (~padding_mask[b]).sum(0).max().item(), (~padding_mask[b]).sum(1).max().item()
        for (cx, cy, bw, bh), label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            inside_y = (ys >= (cy - bh / 2) * valid_h) & (ys <= (cy + bh / 2) * valid_h)
            inside_x = (xs >= (cx - bw / 2) * valid_w) & (xs <= (cx + bw / 2) * valid_w)
            inside = inside_y[:, None] & inside_x[None]  # (h, w)
            features[b, label, inside] = 4.0
            features[b, num_classes, inside] = 4.0
    return features + 0.1 * torch.randn_like(features), mask


def blind_bound(targets, num_queries: int, num_classes: int, eos_coef: float = 0.1) -> float:
    """loss_ce of the best image-blind prediction (no-object at its weighted share, the classes equal)."""
    matched = sum(len(t["labels"]) for t in targets)
    unmatched = len(targets) * num_queries - matched
    share = eos_coef * unmatched / (eos_coef * unmatched + matched)
    blind = eos_coef * unmatched * -math.log(share) + matched * -math.log((1 - share) / num_classes)
    return blind / (eos_coef * unmatched + matched)


def main(data: str, *assignments: str) -> None:
    torch.set_num_threads(1)
    args = {key: ast.literal_eval(value) for key, value in (a.split("=", 1) for a in assignments)}
    steps, lr, every = args.get("steps", 1500), args.get("lr", 1e-3), args.get("every", 150)
    config = TrainConfig.preset("detr-demo", data_dir=data, augment=False, train_scales=(128,), max_size=171)
    config = dataclasses.replace(config, val_size=128)
    train, _ = build_datasets(config)
    num_classes = train.num_classes
    fields = {k[2:]: v for k, v in args.items() if k.startswith("m.")}
    model_config = dataclasses.replace(config.model, num_classes=num_classes, **fields)
    torch.manual_seed(0)
    model = build_model(model_config).train()
    criterion = build_criterion(dataclasses.replace(config, model=model_config))
    optim = dataclasses.replace(config.optim, lr=lr, lr_backbone=lr, warmup_steps=50, schedule="step", lr_drop=10**6)
    optimizer = build_optimizer(model, optim)
    batches = [collate([train[i] for i in range(s, s + 8)], 32) for s in range(0, len(train) - 7, 8)]
    history = collections.defaultdict(list)
    for step in range(steps):
        set_lr(optimizer, lr_factor(optim, step, 0, 0.0))
        images, padding_mask, targets = batches[step % len(batches)]
        features, mask = ideal_map(images, padding_mask, targets, model_config.d_model, num_classes)
        losses = criterion(model.detect([features], [mask]), targets)
        criterion.weighted_sum(losses).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for key in ("loss_ce", "loss_bbox", "loss_giou", "class_error", "class_error_objects"):
            history[key].append(losses[key].item())
        history["blind"].append(blind_bound(targets, model_config.num_queries, num_classes))
        if (step + 1) % every == 0:
            mean = {k: sum(v[-every:]) / every for k, v in history.items()}
            print(
                f"step {step + 1}: loss_ce {mean['loss_ce']:.3f} (blind {mean['blind']:.3f}), L1 {mean['loss_bbox']:.3f}, "
                f"GIoU {mean['loss_giou']:.3f}, class_error {mean['class_error']:.1f}, "
                f"class_error_objects {mean['class_error_objects']:.1f}"
            )
    attention = []
    for layer in model.transformer.decoder.layers:
        forward = layer.cross_attn.forward
        layer.cross_attn.forward = lambda *a, forward=forward, **k: (
            out := forward(*a, **{**k, "need_weights": True}),
            attention.append(out[1]),
        )[0]
    model.eval()
    images, padding_mask, targets = batches[0]
    features, mask = ideal_map(images, padding_mask, targets, model_config.d_model, num_classes)
    with torch.no_grad():
        out = model.detect([features], [mask])
    matches = criterion.matcher(out, targets)
    objects = (features[:, num_classes] > 2).flatten(1)  # (B, S) object tokens
    uniform = [objects[b].sum().item() / (~mask[b]).sum().item() for b, (q, _) in enumerate(matches) for _ in q]
    for index, weights in enumerate(attention):  # (B, Lq, S) averaged over heads
        on_objects = [weights[b, q][objects[b]].sum().item() for b, (qs, _) in enumerate(matches) for q in qs.tolist()]
        print(
            f"decoder layer {index}: matched queries put {sum(on_objects) / len(on_objects):.2f} of their attention "
            f"on object tokens (uniform: {sum(uniform) / len(uniform):.2f})"
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
