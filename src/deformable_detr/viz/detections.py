"""Draw detections (and optionally ground truth) on images with PIL."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 190),
    (0, 128, 128),
)


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct RGB colour per class: the 10-colour palette, then hues spaced by the golden ratio."""
    if label < len(PALETTE):
        return PALETTE[label]
    red, green, blue = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.85, 0.95)
    return round(red * 255), round(green * 255), round(blue * 255)


def _text_colour(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light fills, white on dark ones (ITU-R BT.601 luma)."""
    return (0, 0, 0) if 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2] > 150 else (255, 255, 255)


def draw_detections(
    image: Image.Image,
    boxes_xyxy: Sequence[Sequence[float]],
    labels: Sequence[int],
    scores: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    ground_truth_xyxy: Sequence[Sequence[float]] = (),
    width: int | None = None,
    min_side: int = 0,
) -> Image.Image:
    """A copy of `image` with a coloured box and "name score" caption per detection.

    Args:
        image: PIL image (any mode; converted to RGB).
        boxes_xyxy: N boxes (x0, y0, x1, y1) in pixels of `image`.
        labels: N contiguous labels (colour and name index).
        scores: N scores in [0, 1], shown in the caption when given.
        class_names: label -> name; the label number is shown when missing.
        ground_truth_xyxy: boxes drawn thin and white, for comparison.
        width: box line width in pixels; None scales line and caption with the image (2 px and
            11 px text up to ~500 px, growing with the longer side), so both read at any size.
        min_side: a smaller image is first enlarged by a whole factor (nearest neighbour) until its
            longer side is at least this, so captions fit on tiny images; boxes are scaled along.
    """
    canvas = image.convert("RGB")
    factor = max(1, -(-min_side // max(canvas.size)))  # ceil
    canvas = (
        canvas.resize((canvas.width * factor, canvas.height * factor), Image.NEAREST) if factor > 1 else canvas.copy()
    )
    boxes_xyxy = [[float(v) * factor for v in box] for box in boxes_xyxy]
    ground_truth_xyxy = [[float(v) * factor for v in box] for box in ground_truth_xyxy]
    draw = ImageDraw.Draw(canvas)
    longer = max(canvas.size)
    if width is None:
        width = max(2, round(longer / 250))
    font = ImageFont.load_default(size=max(11, round(longer / 45)))
    for box in ground_truth_xyxy:
        draw.rectangle([float(v) for v in box], outline=(255, 255, 255), width=max(1, width // 2))
    for i, (box, label) in enumerate(zip(boxes_xyxy, labels)):
        colour = class_colour(int(label))
        box = [float(v) for v in box]
        draw.rectangle(box, outline=colour, width=width)
        name = class_names[int(label)] if class_names is not None and int(label) < len(class_names) else str(int(label))
        caption = name if scores is None else f"{name} {float(scores[i]):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        text_width, text_height = right - left, bottom - top
        y = box[1] - text_height - 2 * width if box[1] - text_height - 2 * width >= 0 else box[1]  # above, else inside
        x = min(box[0], max(0.0, canvas.width - text_width - 2 * width))
        draw.rectangle([x, y, x + text_width + 2 * width, y + text_height + 2 * width], fill=colour)
        draw.text((x + width - left, y + width - top), caption, fill=_text_colour(colour), font=font)
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
