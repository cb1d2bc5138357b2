"""The `finetune` recipe with one lever changed, per seed, one thread, fixed steps: fine-tuning a trained demo model
on four new shapes.

    python finetune_levers.py OUT VARIANT SEED INIT [STEPS]

INIT: a trained demo checkpoint (`deformable-detr demo` writes demo_out/train/checkpoint.pth). Data: OUT/data, the
transfer set (hexagon, crescent, arrow, semicircle; 300 train / 100 val images of 256 px, seed 1), rendered if absent.
Recipe: the `finetune` preset scaled to the 1.7M-parameter demo model and the demo's image sizes (lr 5e-4, backbone
5e-5, 50 warm-up steps, cosine, EMA 0.999 with 100 warm-up steps, classification loss 4, batch 8, images at most
192 px a side), 400 steps.
VARIANT:
    preset        that recipe
    cls2          classification loss weight 2 (the paper's; the preset's before this study)
    cls2-no-ema   weight 2 and no weight EMA (the trained weights are evaluated)
Prints one JSON line: the variant, seed, steps and the final AP on the 100 val images, each evaluated alone.
"""

import dataclasses
import json
import sys
from pathlib import Path

from deformable_detr.data.synthetic import make_dataset
from deformable_detr.training.config import OptimConfig, TrainConfig
from deformable_detr.training.engine import fit

out, variant, seed, init = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
steps = int(sys.argv[5]) if len(sys.argv) > 5 else 400
data = out / "data"
if not (data / "val" / "annotations.json").exists():
    make_dataset(data, 300, 100, image_size=256, seed=1, classes="transfer")
demo = TrainConfig.preset("demo")
config = dataclasses.replace(
    TrainConfig.preset("finetune"),
    data_dir=str(data),
    output_dir=str(out / "train"),
    init=init,
    optim=OptimConfig(lr=5e-4, lr_backbone=5e-5, schedule="cosine", warmup_steps=50, min_lr_ratio=0.05),
    **{
        name: getattr(demo, name)
        for name in ("train_scales", "max_size", "crop_resize", "crop_size", "val_size", "amp")
    },
    batch_size=8,
    epochs=1000,
    max_steps=steps,
    eval_every=0,
    keep=0,
    patience=0,
    threads=1,
    seed=seed,
)
config = dataclasses.replace(
    config,
    **{
        "preset": {},
        "cls2": {"loss": dataclasses.replace(config.loss, loss_ce=2.0)},
        "cls2-no-ema": {"loss": dataclasses.replace(config.loss, loss_ce=2.0), "ema_decay": 0.0, "ema_warmup_steps": 0},
    }[variant],
)
result = fit(config, progress=False, overwrite=True)
print(
    json.dumps(
        {
            "variant": variant,
            "seed": seed,
            "steps": result.steps,
            "train_seconds": result.train_seconds,
            **result.metrics,
        }
    )
)
