"""The synthetic dataset's paint: object fills (solid, stripes, checker, shading) in a colour that
contrasts with what lies below, and the cluttered background (gradient, blotches, noise, strokes)."""

from __future__ import annotations

import colorsys
import math

import numpy as np

MIN_CONTRAST = 110.0  # RGB distance between an object's colour and the pixels it is drawn over
_MIN_PATTERNED_SIDE = 20  # px; smaller objects get solid or shaded fills only


def _contrasting_colour(rng: np.random.Generator, below: np.ndarray) -> np.ndarray:
    """A saturated random colour far (>= MIN_CONTRAST in RGB) from `below`, the mean of the pixels it covers."""
    best, best_distance = None, -1.0
    for _ in range(12):
        hue, saturation, value = rng.uniform(), rng.uniform(0.45, 1.0), rng.uniform(0.25, 1.0)
        colour = 255 * np.array(colorsys.hsv_to_rgb(hue, saturation, value), dtype=np.float32)
        distance = float(np.linalg.norm(colour - below))
        if distance >= MIN_CONTRAST:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


def object_texture(rng: np.random.Generator, box_h: int, box_w: int, below: np.ndarray) -> np.ndarray:
    """(h, w, 3) float32 fill of one object: solid, stripes, checker or shading around one colour."""
    colour = _contrasting_colour(rng, below)
    second = colour * 0.55 if colour.mean() > 110 else colour * 0.5 + 110  # a darker or lighter shade
    kind = rng.choice(4, p=(0.4, 0.25, 0.15, 0.2))
    if min(box_h, box_w) < _MIN_PATTERNED_SIDE and kind in (1, 2):
        kind = 0  # stripes or checks would hide a small object's outline
    ys, xs = np.mgrid[0:box_h, 0:box_w].astype(np.float32)
    if kind == 0:  # solid
        mix = np.zeros((box_h, box_w), np.float32)
    elif kind == 1:  # stripes at a random angle, period 4..9 px
        direction = rng.uniform(0, math.pi)
        phase = (xs * math.cos(direction) + ys * math.sin(direction)) * (2 * math.pi / rng.uniform(4, 9))
        mix = (np.sin(phase) > 0).astype(np.float32)
    elif kind == 2:  # checker, cells of 3..7 px
        cell = int(rng.integers(3, 8))
        mix = ((ys // cell + xs // cell) % 2).astype(np.float32)
    else:  # shading from one side to the other
        direction = rng.uniform(0, 2 * math.pi)
        ramp = xs * math.cos(direction) + ys * math.sin(direction)
        mix = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    fill = colour * (1 - mix[..., None]) + second * mix[..., None]  # (h, w, 3)
    return fill + rng.normal(0, 4, size=fill.shape).astype(np.float32)


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 clutter: muted gradient + coarse blotches + pixel noise + distractor strokes."""
    direction = rng.uniform(0, 2 * math.pi)
    ramp = (np.arange(width, dtype=np.float32) * math.cos(direction))[None, :] + (
        np.arange(height, dtype=np.float32) * math.sin(direction)
    )[:, None]  # (H, W)
    ramp = ((ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0))[..., None]  # (H, W, 1) in [0, 1]
    grey = rng.uniform(60, 190)
    start, end = (grey + rng.uniform(-45, 45, size=(2, 3))).astype(np.float32)  # muted colours near grey
    canvas = start + (end - start) * ramp  # (H, W, 3)
    canvas += _blotches(rng, height, width, amplitude=rng.uniform(10, 30))
    canvas += rng.standard_normal(size=canvas.shape, dtype=np.float32) * np.float32(rng.uniform(3, 10))
    for _ in range(int(rng.integers(4, 13))):
        _draw_stroke(rng, canvas)
    return canvas


def _blotches(rng: np.random.Generator, height: int, width: int, amplitude: float, cells: int = 6) -> np.ndarray:
    """(H, W, 3) smooth low-frequency noise: a coarse random (cells x cells) grid upsampled bilinearly."""
    grid = rng.uniform(-amplitude, amplitude, size=(cells, cells, 3)).astype(np.float32)
    rows = _linear_weights(height, cells)  # (H, cells)
    cols = _linear_weights(width, cells)  # (W, cells)
    along_rows = sum(rows[:, i, None] * grid[i].reshape(1, cells * 3) for i in range(cells))  # (H, cells * 3)
    along_rows = along_rows.reshape(height, cells, 3)  # (H, cells, 3)
    along_rows = along_rows.transpose(0, 2, 1).reshape(height * 3, cells)  # (H * 3, cells)
    # Sum of outer products rather than `@`: a multithreaded BLAS call this small is slower under load.
    flat = sum(along_rows[:, j, None] * cols[None, :, j] for j in range(cells))  # (H * 3, W)
    return flat.reshape(height, 3, width).transpose(0, 2, 1)  # (H, W, 3)


def _linear_weights(size: int, cells: int) -> np.ndarray:
    """(size, cells) weights interpolating `cells` evenly spaced knots linearly at `size` positions."""
    position = np.linspace(0, cells - 1, size, dtype=np.float32)[:, None]  # (size, 1)
    return np.maximum(0, 1 - np.abs(position - np.arange(cells, dtype=np.float32)[None, :]))  # hat functions


def _draw_stroke(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """Draw one thin (1..2.5 px) anti-aliased line segment in place: clutter that is not an object."""
    height, width = canvas.shape[:2]
    start = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    direction = rng.uniform(0, 2 * math.pi)
    end = start + rng.uniform(15, 0.5 * max(height, width)) * np.array([math.cos(direction), math.sin(direction)])
    half_width = rng.uniform(0.5, 1.25)
    x_lo, x_hi = int(max(0, min(start[0], end[0]) - 3)), int(min(width, max(start[0], end[0]) + 4))
    y_lo, y_hi = int(max(0, min(start[1], end[1]) - 3)), int(min(height, max(start[1], end[1]) + 4))
    if x_hi <= x_lo or y_hi <= y_lo:
        return
    ys, xs = np.mgrid[y_lo:y_hi, x_lo:x_hi].astype(np.float32) + 0.5
    segment = end - start
    t = np.clip(((xs - start[0]) * segment[0] + (ys - start[1]) * segment[1]) / float(segment @ segment), 0, 1)
    distance = np.hypot(xs - start[0] - t * segment[0], ys - start[1] - t * segment[1])  # to the segment
    alpha = np.clip(half_width + 0.5 - distance, 0, 1)[..., None]  # (h, w, 1)
    colour = 255 * np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.8), rng.uniform(0.1, 1.0)), np.float32)
    region = canvas[y_lo:y_hi, x_lo:x_hi]
    region *= 1 - alpha
    region += colour * alpha
