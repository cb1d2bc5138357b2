"""The demo recipe with one lever removed, per seed, at the demo's fixed 1,100 steps, one thread.

    python levers.py OUT VARIANT SEED     # VARIANT: full, no-mixed (pure query selection), no-dn (no denoising)
"""
import dataclasses
import json
import sys
from pathlib import Path

from deformable_detr.training.demo import demo_config, run_demo, DEMO_DATA

out, variant, seed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
config = demo_config(out, DEMO_DATA, threads=1)
model = {
    "full": config.model,
    "no-mixed": dataclasses.replace(config.model, query_selection="pure"),
    "no-dn": dataclasses.replace(config.model, denoising=False),
}[variant]
config = dataclasses.replace(config, model=model, seed=seed)
result = run_demo(out, config=config, progress=False)
print(json.dumps({"variant": variant, "seed": seed, **json.loads(result.metrics_file.read_text())}))
