"""Ablation of the faster-converging training options on the synthetic shapes (the demo model).

Arms: the `demo` preset (two-stage Deformable DETR with box refinement) as plain, with each option alone
(denoising, mixed query selection, look-forward-twice, hybrid matching) and with all of them; the same data,
seed, step budget, schedule and evaluation. Each arm runs in its own process (one torch thread) so they
share the machine alike; AP is measured every `--eval-steps` steps on the validation split.

    python benchmarks/faster_training.py --data DIR --out runs/faster-training --steps 400 --arms plain dn
    python benchmarks/faster_training.py --report runs/faster-training --docs docs/results/faster-training

Writes OUT/<arm>/ (a normal training run folder), OUT/results.json and, with --report, report.md and
curves.png into --docs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

ARMS = {
    "plain": {},
    "dn": {"denoising": True},
    "mixed": {"query_selection": "mixed"},
    "lft": {"look_forward_twice": True},
    "hybrid": {"num_queries_one2many": 90},
    "all": {"denoising": True, "query_selection": "mixed", "look_forward_twice": True, "num_queries_one2many": 90},
}


def train_arm(arm: str, data: str, out: Path, steps: int, eval_steps: int, seed: int) -> dict:
    from deformable_detr.training.config import TrainConfig
    from deformable_detr.training.engine import fit

    base = TrainConfig.preset("demo")
    config = dataclasses.replace(
        base, data_dir=data, output_dir=str(out / arm), model=dataclasses.replace(base.model, **ARMS[arm]),
        max_steps=steps, max_train_images=eval_steps * base.batch_size, eval_every=1, threads=1, seed=seed,
        optim=dataclasses.replace(base.optim, warmup_steps=min(base.optim.warmup_steps, steps // 4)))
    result = fit(config, progress=False, overwrite=True)
    return {"arm": arm, "options": ARMS[arm], "steps": result.steps, "train_seconds": result.train_seconds,
            "history": [{k: r[k] for k in ("step", "train_seconds", "AP", "AP50", "AP75") if k in r}
                        for r in result.history]}


def report(out: Path, docs: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []  # from each arm's metrics.jsonl, so a cut-short ablation still reports what it measured
    for arm in ARMS:
        path = out / arm / "metrics.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
        history = [{k: r[k] for k in ("step", "train_seconds", "AP", "AP50", "AP75") if k in r}
                   for r in records if "AP" in r]
        if history:
            runs.append({"arm": arm, "options": ARMS[arm], "steps": history[-1]["step"],
                         "train_seconds": history[-1]["train_seconds"], "history": history})
    docs.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        steps = [h["step"] for h in run["history"]]
        seconds = [h["train_seconds"] for h in run["history"]]
        ap = [h.get("AP", float("nan")) for h in run["history"]]
        axes[0].plot(steps, ap, marker="o", label=run["arm"])
        axes[1].plot(seconds, ap, marker="o", label=run["arm"])
    axes[0].set_xlabel("optimizer steps")
    axes[1].set_xlabel("training seconds (1 thread, shared machine)")
    for axis in axes:
        axis.set_ylabel("val AP")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(docs / "curves.png", dpi=100)
    (docs / "results.json").write_text(json.dumps(runs, indent=1))
    print("| arm | options | steps | s/step | final AP | final AP50 |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        last = run["history"][-1]
        print(f"| {run['arm']} | {run['options'] or '-'} | {run['steps']} | {run['train_seconds'] / max(run['steps'], 1):.2f} "
              f"| {last.get('AP', float('nan')):.3f} | {last.get('AP50', float('nan')):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--out", type=Path, default=Path("runs/faster-training"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--arm", choices=list(ARMS), help="(internal) train this one arm in this process")
    parser.add_argument("--report", type=Path, help="summarise the arms under this folder")
    parser.add_argument("--docs", type=Path, default=Path("docs/results/faster-training"))
    args = parser.parse_args()
    if args.report:
        report(args.report, args.docs)
        return
    if args.arm:
        result = train_arm(args.arm, args.data, args.out, args.steps, args.eval_steps, args.seed)
        (args.out / args.arm / "ablation.json").write_text(json.dumps(result, indent=1))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    processes = [subprocess.Popen([sys.executable, __file__, "--arm", arm, "--data", args.data, "--out", str(args.out),
                                   "--steps", str(args.steps), "--eval-steps", str(args.eval_steps),
                                   "--seed", str(args.seed)],
                                  stdout=open(args.out / f"{arm}.log", "w"), stderr=subprocess.STDOUT)
                 for arm in args.arms]
    failed = [arm for arm, p in zip(args.arms, processes) if p.wait() != 0]
    if failed:
        sys.exit(f"arms failed: {', '.join(failed)}; see {args.out}/<arm>.log")


if __name__ == "__main__":
    main()
