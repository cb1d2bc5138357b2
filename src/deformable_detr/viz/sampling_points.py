"""Draw deformable-attention sampling points over an image, coloured by attention weight (paper Fig. 6).

Input is one entry of `deformable_detr.inference.explain.explain`'s output (a detection or the pixel):
a reference point and, per level, points (x, y) in image pixels with their attention weights.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from deformable_detr.checkpoint.files import write_atomic
from deformable_detr.errors import ConfigError
from deformable_detr.viz.detections import class_colour

PANEL_SIDE = 420  # px, longer side of each panel


def weight_colour(fraction: float) -> tuple[int, int, int]:
    """Colour of a weight relative to the largest one (0 -> dark purple, 1 -> yellow; matplotlib's plasma)."""
    from matplotlib import colormaps

    red, green, blue, _ = colormaps["plasma"](min(max(fraction, 0.0), 1.0))
    return round(red * 255), round(green * 255), round(blue * 255)


def visible_points(
    entry: dict[str, Any], size: tuple[int, int], level: int | None = None
) -> list[tuple[float, float, float]]:
    """(x, y, weight) of the entry's points inside an image of `size` (width, height); `level` None = all levels.

    Points outside the image are not drawn: the operator reads zeros there.
    """
    width, height = size
    found = []
    for sampling in entry["sampling"]:
        if level is not None and sampling["level"] != level:
            continue
        for (x, y), weight in zip(sampling["points"], sampling["weights"]):
            if 0 <= x < width and 0 <= y < height:
                found.append((x, y, weight))
    return found


def _panel(
    image: Image.Image,
    entry: dict[str, Any],
    level: int | None,
    max_weight: float,
    title: str,
    box_colour: tuple[int, int, int],
) -> Image.Image:
    """One panel: the dimmed image scaled to PANEL_SIDE, the box, the points of `level`, the reference point."""
    scale = PANEL_SIDE / max(image.size)
    panel = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    panel = Image.blend(panel, Image.new("RGB", panel.size, (0, 0, 0)), 0.45)
    draw = ImageDraw.Draw(panel)
    if "box_xyxy" in entry:
        draw.rectangle([v * scale for v in entry["box_xyxy"]], outline=box_colour, width=2)
    points = sorted(visible_points(entry, image.size, level), key=lambda p: p[2])  # heaviest drawn last, on top
    for x, y, weight in points:
        fraction = weight / max_weight if max_weight > 0 else 0.0
        radius = 2 + 4 * fraction
        draw.ellipse(
            [x * scale - radius, y * scale - radius, x * scale + radius, y * scale + radius],
            fill=weight_colour(fraction),
            outline=(0, 0, 0),
        )
    rx, ry = (v * scale for v in entry["reference_point"])
    for width, colour in ((5, (0, 0, 0)), (2, (255, 255, 255))):
        draw.line([rx - 7, ry, rx + 7, ry], fill=colour, width=width)
        draw.line([rx, ry - 7, rx, ry + 7], fill=colour, width=width)
    font = ImageFont.load_default(size=14)
    draw.rectangle([0, 0, draw.textlength(title, font=font) + 8, 20], fill=(0, 0, 0))
    draw.text((4, 2), title, fill=(255, 255, 255), font=font)
    return panel


def _colour_bar(width: int, max_weight: float) -> Image.Image:
    """A strip from weight 0 to `max_weight` with its labels."""
    bar = Image.new("RGB", (width, 34), (255, 255, 255))
    draw = ImageDraw.Draw(bar)
    span = max(1, width - 160)
    for i in range(span):
        draw.line([80 + i, 6, 80 + i, 20], fill=weight_colour(i / (span - 1 if span > 1 else 1)))
    font = ImageFont.load_default(size=12)
    draw.text((4, 6), "weight 0", fill=(0, 0, 0), font=font)
    draw.text((84 + span, 6), f"{max_weight:.3f}", fill=(0, 0, 0), font=font)
    return bar


def draw_sampling_points(
    image: Image.Image, entry: dict[str, Any], level_sizes: Sequence[Sequence[int]] = (), title: str = ""
) -> Image.Image:
    """Panels side by side: all levels, then each level; points coloured (and sized) by attention weight.

    Args:
        image: the RGB image the entry's pixels refer to.
        entry: a detection or the pixel entry of `explain`'s output.
        level_sizes: (H_l, W_l) per level, shown in the panel titles.
        title: text of the first panel (e.g. "cat 0.91").

    Returns:
        RGB image: len(levels) + 1 panels of PANEL_SIDE px on the longer side, and a colour bar.
    """
    image = image.convert("RGB")
    weights = [w for sampling in entry["sampling"] for w in sampling["weights"]]
    max_weight = max(weights, default=0.0)
    colour = class_colour(entry.get("label", 0))
    panels = [_panel(image, entry, None, max_weight, title or "all levels", colour)]
    for sampling in entry["sampling"]:
        level = sampling["level"]
        size = f" ({level_sizes[level][0]}x{level_sizes[level][1]})" if level < len(level_sizes) else ""
        panels.append(_panel(image, entry, level, max_weight, f"level {level}{size}", colour))
    gap = 6
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    bar = _colour_bar(min(width, 600), max_weight)
    canvas = Image.new("RGB", (width, panels[0].height + bar.height), (255, 255, 255))
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + gap
    canvas.paste(bar, (0, panels[0].height))
    return canvas


EXPLANATION_FILES = re.compile(r"detection_\d+\.png|pixel\.png|explain\.json|index\.html")


def check_explanation_folder(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """`out_dir` as a Path if `save_explanation` may write there (see there); else a ConfigError."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder; choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"--out {out}: the folder is not empty; choose an empty folder, or pass --overwrite to "
            "replace an earlier explanation there"
        )
    return out


def save_explanation(
    image: Image.Image,
    explanation: dict[str, Any],
    out_dir: str | os.PathLike,
    source: str = "image",
    overwrite: bool = False,
) -> Path:
    """Write one PNG per explained detection (and the pixel), explain.json and an index.html showing them.

    Args:
        image: the RGB image explained (original size).
        explanation: `explain`'s output for it.
        out_dir: created if missing; files are written whole (temporary file, then rename).
        source: how the page names the image.
        overwrite: write into a folder that is not empty, first deleting an earlier explanation's files
            there (`EXPLANATION_FILES`; nothing else), so none of its drawings is left behind.

    Returns:
        the path of index.html.

    Raises:
        ConfigError: `out_dir` is a file, or a folder that is not empty and `overwrite` is False.
    """
    out = check_explanation_folder(out_dir, overwrite)
    if overwrite and out.is_dir():
        for earlier in out.iterdir():
            if earlier.is_file() and EXPLANATION_FILES.fullmatch(earlier.name):
                earlier.unlink()
    out.mkdir(parents=True, exist_ok=True)
    sizes = [level["size"] for level in explanation["levels"]]
    entries = [
        (f"detection_{i + 1}.png", f"{d['name']} {d['score']:.2f}", d) for i, d in enumerate(explanation["detections"])
    ]
    if explanation.get("pixel"):
        x, y = explanation["pixel"]["pixel"]
        entries.append(("pixel.png", f"encoder at ({x:g}, {y:g})", explanation["pixel"]))
    rows = []
    for name, title, entry in entries:
        drawing = draw_sampling_points(image, entry, sizes, title)
        write_atomic(out / name, lambda path, drawing=drawing: drawing.save(path, format="PNG"))
        caption = html.escape(title)
        if "box_xyxy" in entry:
            caption += f" &mdash; box [{', '.join(f'{v:.0f}' for v in entry['box_xyxy'])}], query {entry['query']}"
        rows.append(f'<figure><img src="{name}" alt="{html.escape(title)}"><figcaption>{caption}</figcaption></figure>')
    write_atomic(out / "explain.json", lambda path: path.write_text(json.dumps(explanation) + "\n"))
    height, width = explanation["image_size"]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>explain {html.escape(source)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} figure{{margin:0 0 1.5em}} img{{max-width:100%}}</style></head>
<body><h1>Where the model looked: {html.escape(source)}</h1>
<p>{width}x{height} px. Each detection: the last decoder layer's sampling points of its query on every level
(first panel) and per level, coloured and sized by attention weight; the white cross is the reference point.
The pixel: the last encoder layer's sampling points of the finest-level feature under it. Points outside the
image are not drawn. Data: <a href="explain.json">explain.json</a>.</p>
{chr(10).join(rows) if rows else "<p>No detection at this threshold.</p>"}
</body></html>
"""
    write_atomic(out / "index.html", lambda path: path.write_text(page))
    return out / "index.html"
