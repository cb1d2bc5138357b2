"""One training run of the DETR step-zero probes: the `detr-demo` recipe at 128 px on the easy set, plus overrides.

    python fit_probe.py OUT DATA [epochs=20] [eval_every=5] [m.num_queries=10] [m.dilation=True]
        [o.lr_backbone=1e-4] [o.schedule='step'] [backbone_weights='shapes_resnet.pth'] ...

`m.`/`o.`/`l.` prefixes replace fields of the model / optimizer / loss config; other keys replace TrainConfig fields
(values are Python literals). Writes OUT/metrics.jsonl (train losses per epoch, AP at each evaluation).
"""

import ast
import dataclasses
import sys

from deformable_detr.training.config import TrainConfig
from deformable_detr.training.engine import fit


def main(out: str, data: str, *assignments: str) -> None:
    overrides = {key: ast.literal_eval(value) for key, value in (a.split("=", 1) for a in assignments)}
    parts = {prefix: {k[2:]: v for k, v in overrides.items() if k.startswith(prefix + ".")} for prefix in "mol"}
    plain = {k: v for k, v in overrides.items() if k[:2] not in ("m.", "o.", "l.")}
    size = 128
    config = TrainConfig.preset("detr-demo")
    config = dataclasses.replace(
        config,
        **{
            "data_dir": data,
            "output_dir": out,
            "train_scales": (size,),
            "max_size": 171,
            "crop_resize": (107, size),
            "crop_size": (85, size),
            "val_size": size,
            "threads": 1,
            "workers": 0,
            "max_steps": None,  # epochs, not the demo's fixed step count
            "epochs": 10,
            "eval_every": 5,
            "checkpoint_every": 0,
            **plain,
        },
        model=dataclasses.replace(config.model, **parts["m"]),
        optim=dataclasses.replace(config.optim, **parts["o"]),
        loss=dataclasses.replace(config.loss, **parts["l"]),
    )
    fit(config, overwrite=True, progress=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
