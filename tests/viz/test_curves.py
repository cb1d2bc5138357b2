"""Training curves PNG from metrics.jsonl records (with and without evaluations)."""

from __future__ import annotations

from PIL import Image

from deformable_detr.viz.curves import plot_curves


def test_curves_png_from_records(tmp_path):
    history = [
        {"epoch": 0, "train_loss": 3.0, "train_loss_ce": 1.0, "train_loss_bbox": 0.5, "train_loss_giou": 0.7},
        {"epoch": 1, "train_loss": 2.0, "train_loss_ce": 0.8, "AP": 0.1, "AP50": 0.3, "APs": -1.0},
    ]
    path = plot_curves(history, tmp_path / "curves.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 100


def test_curves_without_any_evaluation(tmp_path):
    path = plot_curves([{"epoch": 0, "train_loss": 1.0}], tmp_path / "c.png")
    assert path.is_file() and path.stat().st_size > 0
