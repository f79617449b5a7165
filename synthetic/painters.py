"""The painted objects of the synthetic scenes (planes, vehicles, ships, tanks, buildings, pools, piers, trees,
roads) and the ``Scene`` they are painted into, which records each object with its oriented box and outline."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from synthetic.drawing import blend, box, disc, fill, fill_textured, ground, line, outline_of, polygon_mask, rotate, shade

CAR_COLOURS = ((232, 232, 230), (28, 30, 34), (150, 24, 22), (36, 58, 128), (168, 170, 174), (92, 94, 98), (200, 180, 60))
ROOF_COLOURS = ((176, 82, 60), (122, 122, 126), (198, 196, 190), (138, 100, 72), (92, 82, 76), (150, 150, 140))
HULL_COLOURS = ((120, 36, 32), (60, 64, 72), (34, 54, 92), (200, 200, 196), (150, 120, 60))


@dataclass
class Obj:
    """One painted object: its class (DOTA spelling, plus "building"), the oriented rectangle it was
    painted in (4 x 2, clockwise) and the outline of what was painted (k x 2)."""

    cls: str
    obb: np.ndarray
    outline: np.ndarray
    difficult: bool = False


@dataclass
class Scene:
    """An image being painted, what was put in it, and the facts its captions are written from."""

    kind: str
    image: np.ndarray
    ground: str
    objects: list[Obj] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    taken: list[tuple[float, float, float]] = field(default_factory=list)  # (cx, cy, r) of placed objects

    @property
    def size(self) -> int:
        return self.image.shape[0]

    def count(self, *classes: str) -> int:
        return sum(1 for o in self.objects if o.cls in classes)

    def fits(self, cx: float, cy: float, r: float, allowed: np.ndarray | None = None, gap: float = 1.0,
             probes: np.ndarray | None = None, reach: float | None = None) -> bool:
        """Whether a disc of radius ``r`` is clear of other objects, the object's ``reach`` (its half diagonal;
        default ``r``) stays inside the image, and its ``probes`` (default: centre and four points near the
        rim) are on ``allowed`` ground. Every annotated box thus lies inside its image."""
        size = self.size
        reach = r if reach is None else reach
        if not (reach + 1 <= cx <= size - reach - 1 and reach + 1 <= cy <= size - reach - 1):
            return False
        if allowed is not None:
            if probes is None:
                probes = [(cx, cy)] + [(cx + dx * r * 0.85, cy + dy * r * 0.85) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
            if not all(allowed[int(y), int(x)] for x, y in probes):
                return False
        return all(math.hypot(cx - x, cy - y) >= r + rr + gap for x, y, rr in self.taken)

    def add(self, obj: Obj, r: float | None = None) -> Obj:
        self.objects.append(obj)
        centre = obj.obb.mean(0)
        self.taken.append((float(centre[0]), float(centre[1]), r if r is not None else float(np.linalg.norm(obj.obb[0] - centre))))
        return obj


def new_scene(kind: str, rng: np.random.Generator, size: int, ground_name: str) -> Scene:
    return Scene(kind, ground(rng, size, ground_name), ground_name)


def oriented_box(parts: list[np.ndarray], cx: float, cy: float, angle: float) -> np.ndarray:
    """DOTA's box of an object: the rectangle around its local (unrotated) parts, then rotated."""
    pts = np.concatenate(parts)
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    return rotate([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], cx, cy, angle)


def jitter(rng: np.random.Generator, colour, amount: float = 10) -> np.ndarray:
    """A colour varied mostly in brightness (a little in hue), as paint and materials vary."""
    return np.clip(np.asarray(colour, np.float64) + rng.normal(0, amount) + rng.normal(0, amount * 0.3, 3), 0, 255)


def paint_plane(scene: Scene, rng: np.random.Generator, cx: float, cy: float, angle: float, length: float) -> Obj:
    """A top-down airliner: fuselage, swept wings, tailplane, engines, and its shadow to the lower right."""
    L = length
    sweep, span = rng.uniform(0.1, 0.22) * L, rng.uniform(0.42, 0.5) * L
    fuselage = np.array([(0.5 * L, 0), (0.42 * L, -0.05 * L), (-0.45 * L, -0.04 * L), (-0.5 * L, 0), (-0.45 * L, 0.04 * L), (0.42 * L, 0.05 * L)])
    wings = np.array([(0.14 * L, -0.04 * L), (0.14 * L - sweep, -span), (0.06 * L - sweep, -span), (-0.1 * L, -0.04 * L),
                      (-0.1 * L, 0.04 * L), (0.06 * L - sweep, span), (0.14 * L - sweep, span), (0.14 * L, 0.04 * L)])
    tail = np.array([(-0.36 * L, -0.03 * L), (-0.46 * L, -0.17 * L), (-0.5 * L, -0.17 * L), (-0.47 * L, 0),
                     (-0.5 * L, 0.17 * L), (-0.46 * L, 0.17 * L), (-0.36 * L, 0.03 * L)])
    parts = [fuselage, wings, tail]
    placed = [rotate(p, cx, cy, angle) for p in parts]
    for p in placed:
        shade(scene.image, p + 0.07 * L, 0.55)
    colour = jitter(rng, ((236, 236, 236), (218, 222, 228), (196, 202, 210))[rng.integers(3)], 6)
    for p in placed:
        fill(scene.image, p, colour)
    for side in (-1, 1):
        ex, ey = rotate([(0.1 * L - 0.45 * sweep, side * 0.3 * span)], cx, cy, angle)[0]
        disc(scene.image, ex, ey, 0.035 * L, colour * 0.55)
    line(scene.image, *rotate([(0.44 * L, 0), (-0.4 * L, 0)], cx, cy, angle), colour * 0.85)
    return scene.add(Obj("plane", oriented_box(parts, cx, cy, angle), outline_of(placed)), r=0.5 * L)


def paint_vehicle(scene: Scene, rng: np.random.Generator, cx: float, cy: float, angle: float, length: float, large: bool = False) -> Obj:
    """A car (windscreen, rear window) or a truck (cab + trailer); the front points along ``angle``."""
    L, W = (length, length * rng.uniform(0.3, 0.36)) if large else (length, length * rng.uniform(0.42, 0.5))
    body = box(L, W)
    shade(scene.image, rotate(body, cx, cy, angle) + 0.18 * W, 0.5)
    if large:
        cab, trailer = box(0.18 * L, W, 0.41 * L), box(0.78 * L, W, -0.11 * L)
        fill(scene.image, rotate(cab, cx, cy, angle), jitter(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))]))
        fill(scene.image, rotate(trailer, cx, cy, angle), jitter(rng, (214, 214, 210), 14))
        for t in (-0.35, -0.1, 0.15):
            line(scene.image, *rotate([(t * L, -W / 2), (t * L, W / 2)], cx, cy, angle), (150, 150, 150))
    else:
        colour = jitter(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 8)
        fill(scene.image, rotate(body, cx, cy, angle), colour)
        fill(scene.image, rotate(box(0.16 * L, 0.8 * W, 0.2 * L), cx, cy, angle), (36, 42, 52))
        fill(scene.image, rotate(box(0.1 * L, 0.74 * W, -0.33 * L), cx, cy, angle), (44, 50, 60))
    placed = rotate(body, cx, cy, angle)
    difficult = bool(not large and rng.random() < 0.06)  # DOTA flags some tiny or occluded objects
    return scene.add(Obj("large-vehicle" if large else "small-vehicle", placed, placed, difficult), r=0.5 * L)


def paint_ship(scene: Scene, rng: np.random.Generator, cx: float, cy: float, angle: float, length: float, moving: bool) -> Obj:
    """A hull with a pointed bow, a deck, a bridge at the stern, cargo on big ones, a wake when moving."""
    L = length
    W = L * rng.uniform(0.17, 0.24)
    hull = np.array([(-0.5 * L, -W / 2), (0.3 * L, -W / 2), (0.5 * L, 0), (0.3 * L, W / 2), (-0.5 * L, W / 2)])
    if moving:
        wake = np.array([(-0.48 * L, -W * 0.4), (-1.4 * L, -W * 1.4), (-1.4 * L, W * 1.4), (-0.48 * L, W * 0.4)])
        blend(scene.image, rotate(wake, cx, cy, angle), (200, 212, 218), 0.35)
    placed = rotate(hull, cx, cy, angle)
    shade(scene.image, placed + 0.12 * W, 0.6)
    fill(scene.image, placed, jitter(rng, HULL_COLOURS[rng.integers(len(HULL_COLOURS))], 8))
    fill(scene.image, rotate(hull * 0.82, cx, cy, angle), jitter(rng, (150, 150, 146), 16))
    fill(scene.image, rotate(box(0.14 * L, 0.7 * W, -0.36 * L), cx, cy, angle), jitter(rng, (232, 232, 228), 6))
    if L > scene.size * 0.12:
        for x in np.arange(-0.22, 0.24, 0.09):
            fill(scene.image, rotate(box(0.075 * L, 0.62 * W, x * L), cx, cy, angle), jitter(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 12))
    return scene.add(Obj("ship", rotate(box(L, W), cx, cy, angle), placed), r=0.5 * L)


def paint_tank(scene: Scene, rng: np.random.Generator, cx: float, cy: float, r: float) -> Obj:
    """A round storage tank (rim, floating roof, shadow); DOTA boxes tanks with an axis-aligned square."""
    disc(scene.image, cx + 0.22 * r, cy + 0.22 * r, r, (40, 38, 36))
    shell = jitter(rng, (224, 224, 220), 8)
    disc(scene.image, cx, cy, r, shell)
    disc(scene.image, cx, cy, r * 0.9, shell * 0.78, thickness=max(1, int(r * 0.12)))
    disc(scene.image, cx - 0.08 * r, cy - 0.08 * r, r * 0.55, shell * 0.92)
    square = box(2 * r, 2 * r, cx, cy)
    outline = cv2.ellipse2Poly((int(round(cx)), int(round(cy))), (int(round(r)), int(round(r))), 0, 0, 360, 20).astype(np.float64)
    return scene.add(Obj("storage-tank", square, outline), r=r)


def paint_building(scene: Scene, rng: np.random.Generator, cx: float, cy: float, angle: float, length: float, width: float) -> Obj:
    """A house or warehouse: a pitched roof (one half darker, a ridge line) and its shadow."""
    placed = rotate(box(length, width), cx, cy, angle)
    paint_roof(scene.image, rng, placed)
    return scene.add(Obj("building", placed, placed), r=0.5 * math.hypot(length, width))


def paint_roof(img: np.ndarray, rng: np.random.Generator, corners: np.ndarray) -> None:
    """Roof of a rectangle given by its 4 corners (its first edge is the ridge direction)."""
    shadow = 0.12 * np.linalg.norm(corners[3] - corners[0])
    shade(img, corners + max(1.0, shadow), 0.5)
    colour = jitter(rng, ROOF_COLOURS[rng.integers(len(ROOF_COLOURS))], 8)
    fill(img, corners, colour)
    mid_a, mid_b = (corners[0] + corners[3]) / 2, (corners[1] + corners[2]) / 2
    shade(img, np.array([corners[0], corners[1], mid_b, mid_a]), 0.82)
    line(img, mid_a, mid_b, colour * 0.7)


def paint_pool(scene: Scene, rng: np.random.Generator, cx: float, cy: float, angle: float, length: float, width: float) -> Obj:
    placed = rotate(box(length, width), cx, cy, angle)
    fill(scene.image, rotate(box(length + 2, width + 2), cx, cy, angle), (226, 226, 220))
    fill(scene.image, placed, jitter(rng, (64, 172, 206), 8))
    return scene.add(Obj("swimming-pool", placed, placed), r=0.5 * math.hypot(length, width))


def paint_pier(scene: Scene, rng: np.random.Generator, p0: np.ndarray, p1: np.ndarray, width: float) -> Obj:
    """A pier from the quay (p0) into the water (p1): DOTA's "harbor"."""
    d = p1 - p0
    angle, length = math.atan2(d[1], d[0]), float(np.linalg.norm(d))
    centre = (p0 + p1) / 2
    placed = rotate(box(length, width), *centre, angle)
    shade(scene.image, placed + 0.2 * width, 0.6)
    fill(scene.image, placed, jitter(rng, (178, 174, 166), 6))
    line(scene.image, *rotate([(-length / 2, 0), (length / 2, 0)], *centre, angle), (150, 148, 140))
    return scene.add(Obj("harbor", placed, placed), r=0.0)  # ships may moor alongside: no keep-out disc


def paint_trees(scene: Scene, rng: np.random.Generator, count: int, allowed: np.ndarray) -> None:
    """Scattered tree crowns (not annotated anywhere), on ``allowed`` ground only."""
    size = scene.size
    for _ in range(count):
        x, y = rng.uniform(0, size, 2)
        if allowed[int(y), int(x)]:
            r = size * rng.uniform(0.012, 0.024)
            disc(scene.image, x + 0.3 * r, y + 0.3 * r, r, (30, 40, 28))
            disc(scene.image, x, y, r, jitter(rng, (50, 86, 44), 10))
    scene.facts["trees"] = True


def paint_road(scene: Scene, rng: np.random.Generator, centre, angle: float, width: float, lanes: int = 2) -> np.ndarray:
    """A straight road through ``centre`` across the whole image, with dashed lane lines; returns its mask."""
    size = scene.size
    half = np.array([math.cos(angle), math.sin(angle)]) * size * 1.5
    corners = rotate(box(3 * size, width), *centre, angle)
    mask = polygon_mask(size, corners)
    fill_textured(scene.image, rng, mask, "asphalt")
    normal = np.array([-math.sin(angle), math.cos(angle)])
    for k in range(1, lanes):
        offset = normal * (k / lanes - 0.5) * width
        steps = np.arange(-1.5 * size, 1.5 * size, max(6.0, size * 0.05))
        for t in steps:
            a = np.asarray(centre) + offset + half / np.linalg.norm(half) * t
            line(scene.image, a, a + half / np.linalg.norm(half) * max(3.0, size * 0.025), (214, 214, 206))
    scene.facts["road"] = True
    return mask


def side_point(side: int, size: int, u: float, v: float) -> np.ndarray:
    """(u along the edge, v away from it) of edge ``side`` (0 top, 1 right, 2 bottom, 3 left) as image (x, y)."""
    return np.array([(u, v), (size - v, u), (u, size - v), (v, u)][side], np.float64)


def edge_band(size: int, side: int, depth: float) -> np.ndarray:
    return np.array([side_point(side, size, u, v) for u, v in ((-1, -1), (size + 1, -1), (size + 1, depth), (-1, depth))])
