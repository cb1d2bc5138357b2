"""The synthetic dataset's shapes: outlines in their own frame and their anti-aliased rasterisation.

Each outline is a predicate on (u, v) in [-1, 1]^2 (v down) that fills that square edge to edge, so a
shape's tight box is its nominal box; `shape_coverage` stretches, rotates and samples one.
"""

from __future__ import annotations

import math

import numpy as np

CATEGORIES = ("circle", "square", "triangle", "star", "ring", "cross")


def shape_coverage(shape: str, half_w: float, half_h: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage (h, w) in {0, .25, .5, .75, 1} of a rotated, stretched shape.

    The shape is defined in its own frame (u, v) in [-1, 1]^2 (v down), scaled by (half_w, half_h),
    then rotated by `angle`; each pixel is sampled at 2 x 2 sub-pixel points.
    """
    cos, sin = math.cos(angle), math.sin(angle)
    extent_x = abs(cos) * half_w + abs(sin) * half_h  # half-extents of the rotated frame's box
    extent_y = abs(sin) * half_w + abs(cos) * half_h
    size_x, size_y = 2 * math.ceil(extent_x) + 2, 2 * math.ceil(extent_y) + 2
    dx = ((np.arange(2 * size_x, dtype=np.float32) + 0.5) / 2 - size_x / 2)[None, :]  # (1, 2w) sub-pixel samples
    dy = ((np.arange(2 * size_y, dtype=np.float32) + 0.5) / 2 - size_y / 2)[:, None]  # (2h, 1)
    u = (cos * dx + sin * dy) / half_w  # (2h, 2w): rotate into the shape's frame, then normalize
    v = (-sin * dx + cos * dy) / half_h
    inside = SHAPE_OUTLINES[shape](u, v)  # (2h, 2w) bool
    return inside.reshape(size_y, 2, size_x, 2).mean(axis=(1, 3), dtype=np.float32)  # (h, w)


def _circle(u, v):
    return u * u + v * v <= 1.0


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 1.0


def _triangle(u, v):
    return (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2)  # apex up at v = -1, base at v = 1


def _ring(u, v):
    squared = u * u + v * v
    return (squared <= 1.0) & (squared >= 0.55**2)  # inner radius 0.55 of the outer


def _cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.34) & (av <= 1.0)) | ((av <= 0.34) & (au <= 1.0))


_STAR_INNER = 0.45  # inner/outer radius of the five-pointed star


def _star(u, v):
    """Exact five-pointed star polygon, one point up, stretched to fill [-1, 1]^2 like the other shapes."""
    # A star of outer radius 1 spans x in [-sin 72, sin 72] and y in [-1, cos 36] (y down): map onto it.
    half_width, bottom = math.sin(math.radians(72)), math.cos(math.radians(36))
    u, v = u * half_width, -1.0 + (v + 1.0) * (1.0 + bottom) / 2
    theta = np.arctan2(v, u) + math.pi / 2  # 0 at the top point
    sector = 2 * math.pi / 5
    phi = np.mod(theta, sector)
    phi = np.minimum(phi, sector - phi)  # angle from the nearest outer vertex, in [0, pi/5]
    s, c = _STAR_INNER * math.sin(math.pi / 5), _STAR_INNER * math.cos(math.pi / 5)
    # Ray at angle phi meets the edge from (1, 0) to (c, s) at r = s / (s cos phi - (c - 1) sin phi).
    boundary = s / (s * np.cos(phi) - (c - 1.0) * np.sin(phi))
    return u * u + v * v <= boundary * boundary


def _hexagon(u, v):
    """Regular hexagon with flat top and bottom, stretched to fill [-1, 1]^2."""
    au, av = np.abs(u), np.abs(v)
    return (av <= 1.0) & (au <= 1.0 - 0.5 * av)


def _crescent(u, v):
    """A unit disc minus a disc of radius 0.8 shifted right by 0.5 (a moon open to the right), stretched
    so its horns (at x = 0.61 of the unit disc) reach the right edge of [-1, 1]^2."""
    u = -1.0 + (u + 1.0) * (1.0 + 0.61) / 2
    return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + v * v > 0.8**2)


def _arrow(u, v):
    """Arrow pointing up: triangular head over the top 45 %, shaft 0.4 wide below it."""
    head = (v <= -0.1) & (np.abs(u) <= (v + 1.0) / 0.9)
    shaft = (v > -0.1) & (v <= 1.0) & (np.abs(u) <= 0.4)
    return head | shaft


def _semicircle(u, v):
    """Upper half disc, stretched so the flat side sits on v = 1 and the arc reaches v = -1."""
    w = (v + 1.0) / 2.0  # 0 at the top, 1 at the flat side
    return (u * u + (1.0 - w) ** 2 <= 1.0) & (w <= 1.0)


SHAPE_OUTLINES = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "ring": _ring,
    "cross": _cross,
    "hexagon": _hexagon,
    "crescent": _crescent,
    "arrow": _arrow,
    "semicircle": _semicircle,
}
SHAPES = tuple(SHAPE_OUTLINES)  # every drawable shape name
