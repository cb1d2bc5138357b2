"""Plots of the convergence experiment: AP / APs against epochs and minutes, and encoder cost against image size."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_convergence(
    runs: list, labels: list[str], path: str | Path, target: float | None = None, target_label: str = ""
) -> Path:
    """2x2 PNG: AP and APs (rows) against epochs and training minutes (columns); per model the mean over its seeds
    as a line and the band between the lowest and highest seed (a single seed: its line alone). When the models'
    budgets differ 4x or more, the epoch axis is logarithmic (a constant epoch ratio is then a constant shift).

    Args:
        runs: `RunRecord`s (`label`, `seed`, `evaluations`: dicts with epoch, train_seconds, AP, APs).
        labels: models in legend order.
        path: output PNG.
        target: drawn as a dashed line on the AP plots (the reference model's final AP), labelled `target_label`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharey="row")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, label in enumerate(labels):
        colour = colours[index % len(colours)]
        model_runs = [r for r in runs if r.label == label and r.evaluations]
        if not model_runs:
            continue
        per_run = [{p["epoch"] + 1: p for p in run.evaluations} for run in model_runs]
        epochs = sorted(set.intersection(*(set(p) for p in per_run)))
        minutes = [sum(p[e]["train_seconds"] for p in per_run) / 60 / len(per_run) for e in epochs]
        seeds = len(model_runs)
        for row, key in enumerate(("AP", "APs")):
            values = [[p[e][key] for p in per_run] for e in epochs]
            mean = [sum(v) / len(v) for v in values]
            marker = "o" if len(epochs) < 25 else None
            name = f"{label} ({seeds} seed{'s' if seeds > 1 else ''})"
            for column, x in enumerate((epochs, minutes)):
                axis = axes[row][column]
                axis.plot(
                    x, mean, color=colour, marker=marker, markersize=3, label=name if row == column == 0 else None
                )
                if seeds > 1:
                    axis.fill_between(x, [min(v) for v in values], [max(v) for v in values], color=colour, alpha=0.2)
    budgets = [run.epochs for run in runs if run.evaluations]
    if budgets and max(budgets) >= 4 * min(budgets):
        for row in range(2):
            axes[row][0].set_xscale("log")
    if target is not None:
        for column in range(2):
            axes[0][column].axhline(target, color="grey", linestyle="--", linewidth=1, label=target_label or None)
    for row, key in enumerate(("AP", "APs")):
        for column, xlabel in enumerate(("epoch", "training minutes (mean over seeds)")):
            axes[row][column].set_xlabel(xlabel)
            axes[row][column].set_ylabel(key)
            axes[row][column].grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("COCO AP on the validation split: mean over seeds, band = lowest to highest seed")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_scaling(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """PNG: encoder GFLOPs (left) and encoder CPU ms (right) against encoder tokens, log-log, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_flops, ax_time) = plt.subplots(1, 2, figsize=(11, 4.5))
    for model in dict.fromkeys(r["model"] for r in rows):
        points = [r for r in rows if r["model"] == model]
        tokens = [r["tokens"] for r in points]
        ax_flops.plot(tokens, [r["encoder_gflops"] for r in points], marker="o", label=model)
        ax_time.plot(tokens, [r["encoder_ms"] for r in points], marker="o", label=model)
        for r in points:
            ax_flops.annotate(f"{r['size']}px", (r["tokens"], r["encoder_gflops"]), fontsize=6)
    for axis, ylabel in ((ax_flops, "encoder GFLOPs"), (ax_time, "encoder CPU ms")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("encoder tokens S")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3, which="both")
    ax_flops.legend(fontsize=8)
    fig.suptitle("Encoder cost vs image size (DETR: global attention ~S²; Deformable DETR: ~S)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
