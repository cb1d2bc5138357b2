"""Draw detections (and optionally ground truth) on images with PIL."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128))


def draw_detections(image: Image.Image, boxes_xyxy: Sequence[Sequence[float]], labels: Sequence[int],
                    scores: Sequence[float] | None = None, class_names: Sequence[str] | None = None,
                    ground_truth_xyxy: Sequence[Sequence[float]] = (), width: int = 2) -> Image.Image:
    """A copy of `image` with a coloured box and "name score" caption per detection.

    Args:
        image: PIL image (any mode; converted to RGB).
        boxes_xyxy: N boxes (x0, y0, x1, y1) in pixels of `image`.
        labels: N contiguous labels (colour and name index).
        scores: N scores in [0, 1], shown in the caption when given.
        class_names: label -> name; the label number is shown when missing.
        ground_truth_xyxy: boxes drawn thin and white, for comparison.
    """
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    for box in ground_truth_xyxy:
        draw.rectangle([float(v) for v in box], outline=(255, 255, 255), width=1)
    for i, (box, label) in enumerate(zip(boxes_xyxy, labels)):
        colour = PALETTE[int(label) % len(PALETTE)]
        box = [float(v) for v in box]
        draw.rectangle(box, outline=colour, width=width)
        name = class_names[int(label)] if class_names is not None and int(label) < len(class_names) else str(int(label))
        caption = name if scores is None else f"{name} {float(scores[i]):.2f}"
        text_box = draw.textbbox((box[0], box[1]), caption)
        y = max(0.0, box[1] - (text_box[3] - text_box[1]) - 2)
        draw.rectangle([box[0], y, box[0] + text_box[2] - text_box[0] + 2, y + text_box[3] - text_box[1] + 2], fill=colour)
        draw.text((box[0] + 1, y), caption, fill=(255, 255, 255))
    return canvas


def save_grid(images: Sequence[Image.Image], path: str | Path, columns: int = 4) -> Path:
    """Tile images (resized to the first one's size) into one PNG/JPEG at `path`."""
    width, height = images[0].size
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * width, rows * height), (0, 0, 0))
    for i, image in enumerate(images):
        grid.paste(image.resize((width, height)), ((i % columns) * width, (i // columns) * height))
    path = Path(path)
    grid.save(path)
    return path
