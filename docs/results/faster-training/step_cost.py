"""CPU seconds per training step of each lever of levers.py, one thread, interleaved rounds.

    python step_cost.py DATA OUT.json [--steps 25] [--warmup 5] [--rounds 2] [--variants full,lft,...]

DATA: the demo's dataset (`deformable-detr demo` writes it to demo_out/data). Each variant trains STEPS steps of the
real loop (`fit`: the demo's batches, losses, backward, clipping, AdamW) in a fresh process-local run; the CPU time
of the process (`time.process_time`, which other processes' load changes little) between consecutive optimizer
steps after WARMUP steps is averaged. Rounds go through every variant in turn, so the machine's state is shared.
Writes {"rounds": [{variant: s/step}], "min": {variant: s/step}, "ratio_to_full": {...}, "machine": ...}.
"""

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch
from levers import VARIANTS, lever_config

from deformable_detr.bench.harness import cpu_model
from deformable_detr.training.callbacks import TrainCallback
from deformable_detr.training.engine import fit


class CpuClock(TrainCallback):
    """Process CPU time after every optimizer step."""

    def __init__(self):
        self.times = []

    def after_step(self, run):
        self.times.append(time.process_time())


def seconds_per_step(variant: str, data: Path, steps: int, warmup: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        config = lever_config(Path(tmp), variant, seed=0, steps=steps)
        config = dataclasses.replace(config, data_dir=str(data), eval_every=0, checkpoint_every=10**9)
        clock = CpuClock()
        fit(config, progress=False, overwrite=True, callbacks=[clock])
    timed = clock.times[warmup:]
    return (timed[-1] - timed[0]) / (len(timed) - 1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    variants = args.variants.split(",")
    rounds = []
    for _ in range(args.rounds):
        rounds.append({v: seconds_per_step(v, args.data, args.steps, args.warmup) for v in variants})
        print(json.dumps(rounds[-1]), flush=True)
    best = {v: min(r[v] for r in rounds) for v in variants}
    result = {
        "rounds": rounds,
        "min": best,
        "ratio_to_full": {v: best[v] / best["full"] for v in variants} if "full" in best else None,
        "steps": args.steps,
        "warmup": args.warmup,
        "machine": f"{cpu_model()}, torch {torch.__version__}, 1 thread",
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratio_to_full"]))
