"""The demo recipe with one lever changed, per seed, one thread, at the demo's fixed 1,100 steps or STEPS.

    python levers.py OUT VARIANT SEED [STEPS]

VARIANT, each a change to the `demo` recipe at lr 2e-3 (its learning rate while these levers were measured; the
`lr3e-3` variant is `deformable-detr demo` as it trains now):
    full        the recipe at lr 2e-3
    no-mixed    pure query selection instead of mixed
    no-dn       no contrastive denoising
    cls2        classification loss weight 2 (the paper's) instead of 4
    no-cap      images up to 256 px a side (the frames' own size) instead of at most 192
    lft         + look-forward-twice
    hybrid      + hybrid matching: 90 one-to-many queries (3 x the 30 queries), ground truth repeated 6 times
    ema         + weight EMA (decay 0.999, 100 warm-up steps: the `finetune` recipe's), evaluated at the end
    q60         60 queries instead of 30
    lr3e-3      learning rate 3e-3 (backbone too) instead of 2e-3: the shipped recipe
Prints one JSON line: the variant, seed, steps and OUT/metrics.json (AP on the demo's val images, each alone).
"""

import dataclasses
import json
import sys
from pathlib import Path

from deformable_detr.training.config import TrainConfig
from deformable_detr.training.demo import DEMO_DATA, demo_config, run_demo

VARIANTS = ("full", "no-mixed", "no-dn", "cls2", "no-cap", "lft", "hybrid", "ema", "q60", "lr3e-3")


def lever_config(out: Path, variant: str, seed: int, steps: int | None = None) -> TrainConfig:
    """`deformable-detr demo`'s config (one thread, OUT/train, OUT/data) at lr 2e-3, with VARIANT's change."""
    config = demo_config(out, DEMO_DATA, max_steps=steps, threads=1)
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, lr=2e-3, lr_backbone=2e-3))
    model, loss = config.model, config.loss
    changes = {
        "full": {},
        "no-mixed": {"model": dataclasses.replace(model, query_selection="pure")},
        "no-dn": {"model": dataclasses.replace(model, denoising=False)},
        "cls2": {"loss": dataclasses.replace(loss, loss_ce=2.0)},
        "no-cap": {"max_size": 256},
        "lft": {"model": dataclasses.replace(model, look_forward_twice=True)},
        "hybrid": {"model": dataclasses.replace(model, num_queries_one2many=3 * model.num_queries)},
        "ema": {"ema_decay": 0.999, "ema_warmup_steps": 100},
        "q60": {"model": dataclasses.replace(model, num_queries=60)},
        "lr3e-3": {"optim": dataclasses.replace(config.optim, lr=3e-3, lr_backbone=3e-3)},
    }[variant]
    return dataclasses.replace(config, seed=seed, **changes)


if __name__ == "__main__":
    out, variant, seed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else None
    result = run_demo(out, config=lever_config(out, variant, seed, steps), progress=False)
    print(json.dumps({"variant": variant, "seed": seed, **json.loads(result.metrics_file.read_text())}))
