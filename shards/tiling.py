"""Cutting a large scene into overlapping tiles the way DOTA_devkit's ImgSplit does (the rules, not its code).

- **Grid**: tiles of ``size`` x ``size`` start every ``size - overlap`` pixels from the top-left; the last row and
  column are moved back so they end on the border (``start = length - size``), so every tile is whole. A side no
  longer than a tile is one tile of that side's length: nothing is padded (the devkit pads by default).
- **Objects**: an object's polygon (the convex hull of its oriented box, else its horizontal box) is clipped to the tile
  (Sutherland-Hodgman against the tile rectangle); it is kept when at least ``min_visible`` of its area is inside
  (the devkit's ``thresh``, 0.7), else dropped and counted as ``tile_partial_object`` (the devkit writes such an
  object with difficult flag 2; B2C has no use for it). A kept object's horizontal box is the bounding box of the
  clipped polygon; an oriented box stays oriented: the minimum-area rectangle (``cv2.minAreaRect``) of the clipped
  polygon, as 4 corners (the devkit reduces a 5-point cut to 4 points instead; both give the box itself when the
  object is whole inside). Coordinates are tile pixels: the scene's minus the tile's top-left.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import cv2
import numpy as np

from shards.record import ObjectAnn

Box = tuple[int, int, int, int]


def tile_starts(length: int, size: int, step: int) -> list[int]:
    """Start offsets along one side: 0, step, 2*step, ... while the tile ends before the border, then the tile
    that ends on the border (``length - size``); ``[0]`` when the side fits in one tile."""
    if length <= size:
        return [0]
    return list(range(0, length - size, step)) + [length - size]


def tile_grid(width: int, height: int, size: int, overlap: int) -> list[Box]:
    """Every tile ``(x0, y0, x1, y1)`` of a ``width`` x ``height`` scene, row by row (half-open pixel boxes)."""
    step = size - overlap
    return [(x, y, min(x + size, width), min(y + size, height))
            for y in tile_starts(height, size, step) for x in tile_starts(width, size, step)]


def object_polygon(obj: ObjectAnn) -> np.ndarray:
    """(n, 2) float polygon of an object: the convex hull of its oriented box's corners (real DOTA labels hold
    corners out of order, a self-crossing "bow tie" whose area cancels out), else its horizontal box."""
    if obj.obb is not None:
        corners = np.asarray(obj.obb, dtype=np.float64).reshape(-1, 2)
        hull = cv2.convexHull(corners.astype(np.float32)).reshape(-1, 2).astype(np.float64)
        if polygon_area(hull) > 0:
            return hull  # (corners on one line fall back to the horizontal box, which the build checked)
    x1, y1, x2, y2 = obj.hbb
    return np.array([(x1, y1), (x2, y1), (x2, y2), (x1, y2)], dtype=np.float64)


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area (absolute) of an (n, 2) polygon."""
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2.0


def clip_polygon(poly: np.ndarray, box: Box) -> np.ndarray:
    """Sutherland-Hodgman clip of an (n, 2) polygon to the rectangle ``box``; (0, 2) when nothing is inside."""
    x0, y0, x1, y1 = box
    # each edge of the window: (axis, bound, keep side: +1 keeps >= bound, -1 keeps <= bound)
    points = [tuple(p) for p in poly]
    for axis, bound, side in ((0, x0, 1), (0, x1, -1), (1, y0, 1), (1, y1, -1)):
        if not points:
            break
        inside = [side * (p[axis] - bound) >= 0 for p in points]
        out = []
        for i, (p, p_in) in enumerate(zip(points, inside)):
            q, q_in = points[i - 1], inside[i - 1]  # the previous vertex: edge q -> p
            if p_in != q_in:
                t = (bound - q[axis]) / (p[axis] - q[axis])
                out.append(tuple(q[k] + t * (p[k] - q[k]) for k in (0, 1)))
            if p_in:
                out.append(p)
        points = out
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def visible_fraction(poly: np.ndarray, box: Box) -> tuple[float, np.ndarray]:
    """(share of the polygon's area inside ``box``, the clipped polygon)."""
    area = polygon_area(poly)
    clipped = clip_polygon(poly, box)
    return (polygon_area(clipped) / area if area > 0 else 0.0), clipped


def fitted_obb(clipped: np.ndarray) -> tuple[float, ...]:
    """The minimum-area rectangle of a clipped polygon as 4 corners (x1, y1, ..., x4, y4)."""
    rect = cv2.minAreaRect(clipped.astype(np.float32))
    return tuple(float(v) for v in cv2.boxPoints(rect).reshape(-1))


def object_in_tile(obj: ObjectAnn, box: Box, min_visible: float) -> tuple[str, ObjectAnn | None]:
    """("outside" | "partial" | "kept" | "clipped", the object in tile pixels when kept or clipped)."""
    poly = object_polygon(obj)
    x0, y0, x1, y1 = box
    xs, ys = poly[:, 0], poly[:, 1]
    if xs.max() <= x0 or xs.min() >= x1 or ys.max() <= y0 or ys.min() >= y1:
        return "outside", None
    fraction, clipped = visible_fraction(poly, box)
    if fraction <= 0:
        return "outside", None
    if fraction < min_visible:
        return "partial", None
    whole = fraction >= 1.0 - 1e-9
    shift = np.array([x0, y0], dtype=np.float64)
    local = (poly if whole else clipped) - shift
    hbb = (float(local[:, 0].min()), float(local[:, 1].min()), float(local[:, 0].max()), float(local[:, 1].max()))
    obb = None
    if obj.obb is not None:
        corners = np.asarray(obj.obb, dtype=np.float64).reshape(-1, 2) - shift
        obb = tuple(float(v) for v in corners.reshape(-1)) if whole else fitted_obb(local)
    return ("kept" if whole else "clipped"), replace(obj, hbb=hbb, obb=obb)


def tile_objects(objects: list[ObjectAnn], box: Box, min_visible: float) -> tuple[list[ObjectAnn], Counter]:
    """The objects of one tile and their counts: ``read`` = objects that overlap the tile = ``kept`` +
    ``dropped:tile_partial_object`` (``clipped``: kept ones cut by the tile border); objects wholly outside the
    tile are not this tile's."""
    kept: list[ObjectAnn] = []
    counts: Counter = Counter()
    for obj in objects:
        verdict, local = object_in_tile(obj, box, min_visible)
        if verdict == "outside":
            continue
        counts["read"] += 1
        if verdict == "partial":
            counts["dropped:tile_partial_object"] += 1
            continue
        if verdict == "clipped":
            counts["clipped"] += 1
        kept.append(local)
    counts["kept"] = len(kept)
    return kept, counts
