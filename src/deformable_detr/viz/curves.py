"""Training curves: losses, AP and APs per epoch from the `metrics.jsonl` records, as one PNG."""

from __future__ import annotations

from pathlib import Path


def plot_curves(history: list[dict], path: str | Path) -> Path:
    """Draw train loss terms (left) and AP / AP50 / APs (right) against epoch; matplotlib Agg, no display.

    Args:
        history: one dict per epoch with `epoch`, `train_loss`, `train_loss_ce`, ... and, when
            evaluated, `AP`, `AP50`, `APs`.
        path: output PNG.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [r["epoch"] + 1 for r in history]
    for key, label in (
        ("train_loss", "total"),
        ("train_loss_ce", "focal"),
        ("train_loss_bbox", "L1"),
        ("train_loss_giou", "GIoU"),
    ):
        points = [(e, r[key]) for e, r in zip(epochs, history) if key in r]
        if points:
            ax_loss.plot(*zip(*points), marker="o" if len(points) < 30 else None, label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss (final decoder layer terms unweighted)")
    ax_loss.set_yscale("log")
    if ax_loss.get_lines():
        ax_loss.legend()
    for key in ("AP", "AP50", "APs"):
        points = [(e, r[key]) for e, r in zip(epochs, history) if key in r and r[key] >= 0]
        if points:
            ax_ap.plot(*zip(*points), marker="o", label=key)
    if epochs:
        ax_ap.set_xlim(ax_loss.get_xlim())  # same epoch axis as the losses, even with a single evaluation
    ax_ap.set_xlabel("epoch")
    ax_ap.set_ylabel("COCO AP (val)")
    ax_ap.set_ylim(0, 1)
    if ax_ap.get_lines():
        ax_ap.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
