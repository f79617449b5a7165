"""Synthetic aerial scenes written in the real remote-sensing annotation formats: the demo's data.

Why: the demo and the end-to-end tests need data that goes through exactly the readers real data goes
through (DOTA labelTxt, COCO json, LoveDA-style masks, Karpathy caption json, scene-class folders), with
answers known in advance: images with one object and with more than ten of one class (B2C's "many"), a
mask with nothing but background (the build's ``empty_mask`` skip), held-out caption splits, and planted
near-duplicates and test-set contamination for the p-Hash de-duplication to find (``planted.json``).
Nothing is downloaded; the scenes are painted with numpy + OpenCV.

The scenes are top-down views: planes on an apron, cars in parking lots and on roads, trucks, ships at
piers and at sea, storage tanks, houses with pools, on textured grass, soil, sand, asphalt, concrete and
water. Every object is placed rotated and annotated with the rectangle it was painted in (DOTA's
8-point oriented box); COCO gets the painted outline as its segmentation and the outline's box as bbox.
Buildings are painted but, as in real DOTA, only COCO and the masks annotate them.

Determinism: each image has its own ``numpy.random.Generator`` seeded by (seed, source, index), and files
are encoded by OpenCV with fixed parameters, so one seed gives byte-identical files, and changing the
count of one source leaves the images of the others as they were.

    python -m shards.synthetic runs/demo/data --seed 0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from rs_common.config import plain_int

GSD = 0.5  # metres per pixel written into the DOTA headers
JPEG_QUALITY = 95
SOURCES = ("dota", "coco", "masks", "captions", "scenes")
# one random stream per source (and one for the caption splits), so the sources do not depend on each other
STREAMS = {"dota": 1, "coco": 2, "masks": 3, "captions": 4, "scenes": 5, "splits": 6}

# What each format calls our painted classes; a class a format lacks is painted but not annotated there.
DOTA_NAMES = {c: c for c in ("plane", "ship", "storage-tank", "small-vehicle", "large-vehicle", "harbor", "swimming-pool")}
COCO_CATEGORIES = (
    {"id": 1, "name": "airplane", "supercategory": "aircraft"},
    {"id": 2, "name": "ship", "supercategory": "vessel"},
    {"id": 3, "name": "storage tank", "supercategory": "facility"},
    {"id": 4, "name": "vehicle", "supercategory": "vehicle"},
    {"id": 5, "name": "building", "supercategory": "facility"},
)
COCO_IDS = {"plane": 1, "ship": 2, "storage-tank": 3, "small-vehicle": 4, "large-vehicle": 4, "building": 5}

# LoveDA's mask values (shards.readers.masks.LOVEDA_CLASSES); 0 is no-data.
NO_DATA, BACKGROUND, BUILDING, ROAD, WATER, BARREN, FOREST, AGRICULTURE = range(8)

# Scene-class folders and the painter of each (AID/UCM-style folder names; the reader makes them readable).
SCENE_CLASSES = ("airport", "denseresidential", "farmland", "forest", "harbor", "parkinglot")

GROUNDS = {  # name: (mean RGB, texture strength)
    "grass": ((86, 112, 62), 15),
    "meadow": ((116, 128, 80), 13),
    "soil": ((138, 114, 86), 15),
    "sand": ((186, 172, 138), 10),
    "asphalt": ((86, 88, 92), 6),
    "concrete": ((164, 162, 156), 7),
    "water": ((34, 62, 88), 4),
    "forest": ((40, 64, 38), 10),
}
CAR_COLOURS = ((232, 232, 230), (28, 30, 34), (150, 24, 22), (36, 58, 128), (168, 170, 174), (92, 94, 98), (200, 180, 60))
ROOF_COLOURS = ((176, 82, 60), (122, 122, 126), (198, 196, 190), (138, 100, 72), (92, 82, 76), (150, 150, 140))
HULL_COLOURS = ((120, 36, 32), (60, 64, 72), (34, 54, 92), (200, 200, 196), (150, 120, 60))


# ---------------------------------------------------------------- random streams, geometry


def rng_for(seed: int, stream: str, index: int) -> np.random.Generator:
    """The generator of one image: independent of every other image and of the other sources' counts."""
    return np.random.default_rng([seed, STREAMS[stream], index])


def rotate(points, cx: float, cy: float, angle: float) -> np.ndarray:
    """Local points (x along the object's length) rotated by ``angle`` and moved to (cx, cy)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + pts[:, 0] * c - pts[:, 1] * s, cy + pts[:, 0] * s + pts[:, 1] * c], axis=1)


def box(length: float, width: float, x0: float = 0.0, y0: float = 0.0) -> np.ndarray:
    """A local rectangle centred on (x0, y0), corners clockwise in image coordinates (y down)."""
    hl, hw = length / 2, width / 2
    return np.array([(x0 - hl, y0 - hw), (x0 + hl, y0 - hw), (x0 + hl, y0 + hw), (x0 - hl, y0 + hw)])


def fixed(pts) -> list[np.ndarray]:
    """Points in OpenCV's 4-bit fixed point (``shift=4``): sub-pixel, anti-aliased drawing."""
    return [np.round(np.asarray(pts, np.float64) * 16).astype(np.int32)]


def fill(img: np.ndarray, pts, colour) -> None:
    cv2.fillPoly(img, fixed(pts), tuple(int(c) for c in colour), cv2.LINE_AA, 4)


def line(img: np.ndarray, p0, p1, colour, thickness: int = 1) -> None:
    cv2.line(img, tuple(int(v) for v in np.round(np.asarray(p0) * 16)), tuple(int(v) for v in np.round(np.asarray(p1) * 16)),
             tuple(int(c) for c in colour), thickness, cv2.LINE_AA, 4)


def disc(img: np.ndarray, cx: float, cy: float, r: float, colour, thickness: int = -1) -> None:
    cv2.circle(img, (int(round(cx * 16)), int(round(cy * 16))), max(1, int(round(r * 16))), tuple(int(c) for c in colour),
               thickness, cv2.LINE_AA, 4)


def shade(img: np.ndarray, pts, factor: float) -> None:
    """Multiply the pixels under a polygon by ``factor``: shadows (< 1) and wakes (> 1) keep the texture."""
    pts = np.asarray(pts, np.float64)
    h, w = img.shape[:2]
    x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + 2, (w, h))
    if x1 <= x0 or y1 <= y0:
        return
    alpha = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(alpha, fixed(pts - (x0, y0)), 255, cv2.LINE_AA, 4)
    a = alpha.astype(np.float32)[..., None] / 255.0
    roi = img[y0:y1, x0:x1].astype(np.float32)
    img[y0:y1, x0:x1] = np.clip(roi * (1.0 - a + a * factor), 0, 255).astype(np.uint8)


def blend(img: np.ndarray, pts, colour, opacity: float) -> None:
    """Paint a polygon translucently (a ship's foaming wake over the water)."""
    layer = img.copy()
    fill(layer, pts, colour)
    cv2.addWeighted(layer, opacity, img, 1.0 - opacity, 0.0, dst=img)


def polygon_mask(size: int, pts) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(pts)).astype(np.int32)], 1)
    return mask


def outline_of(parts: list[np.ndarray]) -> np.ndarray:
    """The outer contour of the union of painted polygons (COCO's segmentation of a plane or a ship)."""
    pts = np.concatenate(parts)
    origin = np.floor(pts.min(0)) - 2
    w, h = (np.ceil(pts.max(0)) - origin + 3).astype(int)
    mask = np.zeros((h, w), np.uint8)
    for part in parts:
        cv2.fillPoly(mask, fixed(part - origin), 1, cv2.LINE_8, 4)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = cv2.approxPolyDP(max(contours, key=cv2.contourArea), 0.6, True)
    return contour.reshape(-1, 2).astype(np.float64) + origin


# ---------------------------------------------------------------- textures


def value_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Smooth noise (about N(0, 1)) with features ``cell`` pixels wide: a coarse grid, bicubic upsampled."""
    h, w = shape
    cell = max(2, int(cell))
    gh, gw = h // cell + 3, w // cell + 3
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    big = cv2.resize(grid, (gw * cell, gh * cell), interpolation=cv2.INTER_CUBIC)
    oy, ox = rng.integers(0, cell, 2)
    return big[oy:oy + h, ox:ox + w]


def colourise(rng: np.random.Generator, pattern: np.ndarray, mean, strength: float) -> np.ndarray:
    """A grey pattern as an RGB texture around ``mean``, with a random tint per image."""
    tint = np.asarray(mean, np.float32) + rng.normal(0.0, 5.0, 3).astype(np.float32)
    gain = (strength * (1.0 + rng.normal(0.0, 0.1, 3))).astype(np.float32)
    rgb = pattern[..., None] * gain + tint
    return np.clip(rgb, 0, 255, out=rgb).astype(np.uint8)


def ground(rng: np.random.Generator, size: int | tuple[int, int], name: str) -> np.ndarray:
    """A ground texture: large patches + finer mottling, tinted per image (the camera adds the grain).

    The random large-scale patches are what keeps two images of the same ground apart in p-Hash."""
    shape = (size, size) if isinstance(size, int) else size
    mean, strength = GROUNDS[name]
    side = max(shape)
    pattern = value_noise(rng, shape, side // 4) + 0.6 * value_noise(rng, shape, side // 20)
    return colourise(rng, pattern, mean, strength)


def crop_texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A field: a crop colour with furrows (stripes) in a random direction."""
    colour = [(96, 130, 60), (150, 150, 78), (176, 160, 104), (122, 104, 74), (112, 140, 86)][rng.integers(5)]
    angle, period = rng.uniform(0, math.pi), rng.uniform(3.0, 7.0)
    ys = np.arange(shape[0], dtype=np.float32)[:, None] * math.sin(angle)
    xs = np.arange(shape[1], dtype=np.float32)[None, :] * math.cos(angle)
    stripes = np.sin((xs + ys) * np.float32(2 * math.pi / period))
    pattern = 0.5 * value_noise(rng, shape, max(shape) // 3) + 0.7 * stripes
    return colourise(rng, pattern, colour, 8.0)


def canopy(rng: np.random.Generator, shape: tuple[int, int], r_mean: float) -> np.ndarray:
    """A closed forest: many overlapping tree crowns (about ``r_mean`` pixels) of slightly different greens."""
    img = ground(rng, shape, "forest")
    h, w = shape
    count = int(h * w / (r_mean * r_mean * 3.2))
    xs, ys = rng.uniform(0, w, count), rng.uniform(0, h, count)
    rs = rng.uniform(0.7, 1.4, count) * r_mean
    greens = rng.integers(-14, 18, count)
    for x, y, r, g in zip(xs.tolist(), ys.tolist(), rs.tolist(), greens.tolist()):
        disc(img, x + r * 0.25, y + r * 0.25, r, (24, 38, 24))  # the crown's shadow
        disc(img, x, y, r, (46 + g // 2, 78 + g, 42 + g // 2))
    return img


def fill_textured(img: np.ndarray, rng: np.random.Generator, mask: np.ndarray, texture) -> None:
    """Replace the pixels under ``mask`` by a fresh texture (a ground name, or a function of the shape),
    made only as large as the mask's bounding box."""
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    if w == 0 or h == 0:
        return
    tex = ground(rng, (h, w), texture) if isinstance(texture, str) else texture(rng, (h, w))
    where = mask[y:y + h, x:x + w] > 0
    img[y:y + h, x:x + w][where] = tex[where]


# ---------------------------------------------------------------- scenes and objects


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


# ---------------------------------------------------------------- scene recipes


def count_for(rng: np.random.Generator, density: str, few: tuple[int, int], many: tuple[int, int]) -> int:
    """Objects of the main class: exactly 1, a few, or more than 10 (B2C's "many")."""
    lo, hi = {"one": (1, 1), "few": few, "many": many}[density]
    return int(rng.integers(lo, hi + 1))


def compose_airport(rng: np.random.Generator, size: int, density: str) -> Scene:
    """Planes parked on a concrete apron with taxi lines; a grass strip on one edge; service cars."""
    scene = new_scene("airport", rng, size, "concrete")
    side = int(rng.integers(4))
    grass = polygon_mask(size, edge_band(size, side, size * rng.uniform(0.12, 0.26)))
    fill_textured(scene.image, rng, grass, "grass")
    scene.facts["grass"] = True
    for _ in range(int(rng.integers(1, 4))):
        p = rng.uniform(0, size, 2)
        a = (side % 2) * math.pi / 2 + rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.02)  # taxi lines follow the apron
        d = np.array([math.cos(a), math.sin(a)]) * size * 1.5
        line(scene.image, p - d, p + d, (206, 176, 64), max(1, size // 192))
    scene.facts["lines"] = True
    apron = grass == 0
    n = count_for(rng, density, (2, 5), (6, 9))
    for _ in range(n):
        for _ in range(60):
            length = size * rng.uniform(0.16, 0.26) * (0.8 if density == "many" else 1.0)
            cx, cy = rng.uniform(0, size, 2)
            if scene.fits(cx, cy, 0.5 * length, apron, gap=3, reach=0.71 * length):
                paint_plane(scene, rng, cx, cy, rng.uniform(0, 2 * math.pi), length)
                break
    if density != "one":
        add_random_vehicles(scene, rng, int(rng.integers(0, 4)), apron, large_share=0.3)
    return scene


def add_random_vehicles(scene: Scene, rng: np.random.Generator, n: int, allowed: np.ndarray, large_share: float = 0.0) -> None:
    size = scene.size
    for _ in range(n):
        large = rng.random() < large_share
        length = size * (rng.uniform(0.11, 0.14) if large else rng.uniform(0.045, 0.06))
        for _ in range(40):
            cx, cy = rng.uniform(0, size, 2)
            if scene.fits(cx, cy, 0.5 * length, allowed, gap=2, reach=0.56 * length):
                paint_vehicle(scene, rng, cx, cy, rng.uniform(0, 2 * math.pi), length, large)
                break


def parking_rows(depth_total: float, depth: float, aisle: float) -> list[tuple[float, float]]:
    """(v of the row, facing) of back-to-back row pairs separated by aisles."""
    rows, v = [], depth * 0.2
    while v + 2 * depth <= depth_total:
        rows += [(v + depth / 2, math.pi / 2), (v + 1.5 * depth, -math.pi / 2)]
        v += 2 * depth + aisle
    if v + depth <= depth_total:
        rows.append((v + depth / 2, math.pi / 2))
    return rows


def compose_parking(rng: np.random.Generator, size: int, density: str) -> Scene:
    """An asphalt lot with painted stalls in back-to-back rows, cars parked nose-in, trucks in a bay."""
    scene = new_scene("parking", rng, size, str(rng.choice(["grass", "meadow"])))
    scene.facts["grass"] = True
    left, top, right, bottom = rng.uniform(0.04, 0.14, 4) * size
    x0, y0, x1, y1 = left, top, size - right, size - bottom
    lot = polygon_mask(size, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    fill_textured(scene.image, rng, lot, "asphalt")
    transposed = bool(rng.random() < 0.5)  # rows run along y instead of x
    U, V = (y1 - y0, x1 - x0) if transposed else (x1 - x0, y1 - y0)

    def to_image(u: float, v: float) -> tuple[float, float]:
        return (x0 + v, y0 + u) if transposed else (x0 + u, y0 + v)

    car = size * rng.uniform(0.045, 0.058)
    truck = car * rng.uniform(2.3, 2.7)
    has_trucks = density != "one" and V > 4 * truck and rng.random() < 0.6
    car_depth = V - 1.3 * truck if has_trucks else V
    stall = car * rng.uniform(0.68, 0.78)
    rows = parking_rows(car_depth, car * 1.25, car * 1.3)
    us = np.arange(stall * 0.8, U - stall * 0.8, stall)
    for v, _ in rows:
        for u in np.append(us - stall / 2, us[-1] + stall / 2):
            line(scene.image, to_image(u, v - car * 0.6), to_image(u, v + car * 0.6), (222, 222, 214))
    scene.facts["lines"] = True
    slots = [(u, v, facing) for v, facing in rows for u in us]
    n = min(count_for(rng, density, (3, 9), (11, 40)), len(slots))
    for i in sorted(rng.choice(len(slots), n, replace=False)):
        u, v, facing = slots[i]
        cx, cy = to_image(u + rng.normal(0, 0.04 * car), v + rng.normal(0, 0.04 * car))
        turn = facing + (math.pi if rng.random() < 0.15 else 0.0) + rng.normal(0, 0.04)
        paint_vehicle(scene, rng, cx, cy, turn - math.pi / 2 if transposed else turn, car)
    scene.facts["free_slots"] = len(slots) - n
    if has_trucks:
        bay = truck * 0.42
        for u in np.arange(bay, U - bay, bay * 1.5)[: int(rng.integers(1, 4))]:
            cx, cy = to_image(u, V - 0.62 * truck)
            paint_vehicle(scene, rng, cx, cy, (0.0 if transposed else math.pi / 2) + rng.normal(0, 0.03), truck, large=True)
    return scene


def compose_highway(rng: np.random.Generator, size: int, density: str) -> Scene:
    """A multi-lane road across fields or bare soil with cars and trucks in their lanes."""
    scene = new_scene("highway", rng, size, str(rng.choice(["grass", "soil", "meadow"])))
    scene.facts["grass"] = scene.ground != "soil"
    angle = rng.uniform(0, math.pi)
    centre = size / 2 + rng.normal(0, 0.08 * size, 2)
    lanes = 2 if density == "one" else int(rng.integers(3, 5))
    lane_w = size * rng.uniform(0.045, 0.055)
    paint_road(scene, rng, centre, angle, lanes * lane_w, lanes)
    scene.facts["lanes"] = lanes
    car = lane_w * rng.uniform(1.0, 1.15)
    step = car * 1.6
    direction = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-math.sin(angle), math.cos(angle)])
    free: dict[tuple[int, int], np.ndarray] = {}
    for lane in range(lanes):
        for j in range(int(-size / step), int(size / step) + 1):
            free[(lane, j)] = centre + normal * (lane + 0.5 - lanes / 2) * lane_w + direction * j * step
    heading = lambda lane: angle if lane >= lanes / 2 else angle + math.pi  # noqa: E731 - right-hand traffic
    inside = lambda p, r: r + 1 <= p[0] <= size - r - 1 and r + 1 <= p[1] <= size - r - 1  # noqa: E731
    n_large = 0 if density == "one" else int(rng.integers(0, 3 if density == "many" else 4))
    n_small = count_for(rng, density, (2, 7), (11, 24))
    keys = list(free)
    for _ in range(n_large):
        for i in rng.permutation(len(keys)):
            lane, j = keys[i]
            trio = [(lane, j - 1), (lane, j), (lane, j + 1)]
            if all(k in free for k in trio) and inside(free[(lane, j)], 1.4 * step):
                p = free[(lane, j)]
                paint_vehicle(scene, rng, *p, heading(lane), step * 2.6, large=True)
                for k in trio:
                    del free[k]
                break
    spots = [k for k in free if inside(free[k], 0.6 * car)]
    for i in sorted(rng.choice(len(spots), min(n_small, len(spots)), replace=False)):
        lane, _ = spots[i]
        p = free[spots[i]] + direction * rng.normal(0, 0.1 * car)
        paint_vehicle(scene, rng, *p, heading(lane) + rng.normal(0, 0.02), car)
    return scene


def compose_tanks(rng: np.random.Generator, size: int, density: str) -> Scene:
    """An oil depot: a grid of round tanks on a concrete pad over soil or sand, a road, trucks."""
    scene = new_scene("tanks", rng, size, str(rng.choice(["soil", "sand"])))
    k = count_for(rng, density, (2, 8), (11, 20))
    cols = int(np.clip(math.ceil(math.sqrt(k * rng.uniform(0.8, 1.6))), 1, k))
    rows = math.ceil(k / cols)
    r = size * (rng.uniform(0.06, 0.09) if k <= 4 else rng.uniform(0.03, 0.05))
    spacing = 2 * r * rng.uniform(1.25, 1.5)
    scale = min(1.0, 0.72 * size / (max(cols, rows) * spacing))
    r, spacing = r * scale, spacing * scale
    w, h = (cols - 1) * spacing + 2 * r, (rows - 1) * spacing + 2 * r
    gx = rng.uniform(0.1 * size, 0.9 * size - w)
    gy = rng.uniform(0.06 * size, max(0.06 * size, 0.62 * size - h))
    pad = [(gx - 0.4 * r, gy - 0.4 * r), (gx + w + 0.4 * r, gy - 0.4 * r), (gx + w + 0.4 * r, gy + h + 0.4 * r), (gx - 0.4 * r, gy + h + 0.4 * r)]
    fill_textured(scene.image, rng, polygon_mask(size, pad), "concrete")
    cv2.polylines(scene.image, fixed(pad), True, (110, 100, 86), max(1, size // 128), cv2.LINE_AA, 4)
    for i in range(k):
        row, col = divmod(i, cols)
        paint_tank(scene, rng, gx + r + col * spacing, gy + r + row * spacing, r * rng.uniform(0.94, 1.0))
    road_y = gy + h + 0.4 * r + size * 0.08
    if road_y < size * 0.92:
        road = paint_road(scene, rng, (size / 2, road_y), rng.normal(0, 0.03), size * 0.07)
        if density != "one":
            add_random_vehicles(scene, rng, int(rng.integers(0, 3)), road, large_share=1.0)
    return scene


def compose_harbor(rng: np.random.Generator, size: int, density: str) -> Scene:
    """A quay along one edge of the sea, piers into the water, ships moored and under way, warehouses."""
    scene = new_scene("harbor", rng, size, "concrete")
    side, depth = int(rng.integers(4)), size * rng.uniform(0.45, 0.6)
    water = polygon_mask(size, edge_band(size, side, depth))
    fill_textured(scene.image, rng, water, "water")
    line(scene.image, side_point(side, size, -1, depth), side_point(side, size, size + 1, depth), (120, 116, 108), max(1, size // 128))
    scene.facts["water"] = True
    piers = []
    if density != "one":
        for u in np.sort(rng.uniform(0.15, 0.85, int(rng.integers(1, 4)))) * size:
            length, width = size * rng.uniform(0.18, 0.3), size * rng.uniform(0.035, 0.05)
            p0, p1 = side_point(side, size, u, depth + 1), side_point(side, size, u, depth - length)
            if all(np.linalg.norm(p0 - q0) > 0.14 * size for q0, _, _ in piers):
                piers.append((p0, p1, width))
                paint_pier(scene, rng, p0, p1, width)
    sea = water.copy()
    for p0, p1, width in piers:
        sea[polygon_mask(size, rotate(box(np.linalg.norm(p1 - p0) + 4, width + 4), *((p0 + p1) / 2), math.atan2(*(p1 - p0)[::-1]))) > 0] = 0
    n = count_for(rng, density, (2, 6), (8, 12))
    moving = 0
    for i in range(n):
        length = size * (rng.uniform(0.07, 0.1) if density == "many" else rng.uniform(0.1, 0.2))
        for _ in range(60):
            if piers and i % 2 == 0:  # moored alongside a pier
                p0, p1, width = piers[int(rng.integers(len(piers)))]
                d = (p1 - p0) / np.linalg.norm(p1 - p0)
                t = rng.uniform(0.35, 0.75) * np.linalg.norm(p1 - p0)
                across = np.array([-d[1], d[0]]) * rng.choice([-1, 1])
                c = p0 + d * t + across * (width / 2 + length * 0.12 + 1.5)
                angle, moves = math.atan2(d[1], d[0]) + rng.choice([0, math.pi]), False
            else:
                c, angle, moves = rng.uniform(0, size, 2), rng.uniform(0, 2 * math.pi), bool(rng.random() < 0.6)
            probes = rotate([(-0.45 * length, 0), (0, 0), (0.45 * length, 0)], *c, angle)
            if scene.fits(*c, 0.5 * length, sea, gap=2, probes=probes, reach=0.52 * length):
                paint_ship(scene, rng, *c, angle, length, moves)
                moving += moves
                break
    scene.facts["moving_ships"] = moving
    land = (water == 0).astype(np.uint8)
    for _ in range(int(rng.integers(0, 3))):
        l, w = size * rng.uniform(0.12, 0.2), size * rng.uniform(0.07, 0.1)
        for _ in range(30):
            cx, cy = rng.uniform(0, size, 2)
            if scene.fits(cx, cy, 0.5 * math.hypot(l, w), land, gap=3):
                paint_building(scene, rng, cx, cy, [0.0, math.pi / 2][side % 2] + rng.normal(0, 0.02), l, w)
                break
    return scene


def compose_residential(rng: np.random.Generator, size: int, density: str) -> Scene:
    """Houses in rows along one or two roads, trees, pools in the gardens, cars on the roads."""
    scene = new_scene("residential", rng, size, str(rng.choice(["grass", "meadow"])))
    scene.facts["grass"] = True
    dense = density == "many"
    base = rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.05)
    roads, road_mask = [], np.zeros((size, size), np.uint8)
    for k in range(1 + int(rng.random() < 0.5)):
        angle = base + k * math.pi / 2
        centre = size * rng.uniform(0.3, 0.7, 2)
        width = size * rng.uniform(0.06, 0.08)
        road_mask |= paint_road(scene, rng, centre, angle, width)
        roads.append((np.asarray(centre), angle, width))
    off_road = road_mask == 0
    paint_trees(scene, rng, int(size * (0.1 if dense else 0.25)), off_road)
    for centre, angle, width in roads:
        d, nrm = np.array([math.cos(angle), math.sin(angle)]), np.array([-math.sin(angle), math.cos(angle)])
        hl, hw = size * rng.uniform(0.07, 0.1), size * rng.uniform(0.05, 0.07)
        for side in (-1, 1):
            for depth_row in range(2 if dense else 1):
                offset = width / 2 + size * 0.03 + hw / 2 + depth_row * (hw + size * 0.07)
                for t in np.arange(-size, size, hl * rng.uniform(1.25, 1.6)):
                    c = centre + d * t + nrm * side * offset
                    if scene.fits(*c, 0.45 * math.hypot(hl, hw), off_road, gap=1, reach=0.5 * math.hypot(hl, hw)):
                        paint_building(scene, rng, *c, angle, hl, hw)
                        pool = c + nrm * side * (hw / 2 + size * 0.035)
                        if density != "one" and rng.random() < 0.25 and scene.fits(*pool, size * 0.028, off_road):
                            paint_pool(scene, rng, *pool, angle, size * 0.045, size * 0.028)
    n = count_for(rng, density, (2, 7), (4, 10))
    for _ in range(n):
        centre, angle, width = roads[int(rng.integers(len(roads)))]
        lane = rng.choice([-1, 1])
        car = size * rng.uniform(0.045, 0.055)
        for _ in range(40):
            t = rng.uniform(-size, size)
            c = centre + np.array([math.cos(angle), math.sin(angle)]) * t + np.array([-math.sin(angle), math.cos(angle)]) * lane * width / 4
            if scene.fits(*c, 0.5 * car, gap=2, reach=0.56 * car):
                paint_vehicle(scene, rng, *c, angle + (math.pi if lane < 0 else 0.0), car)
                break
    return scene


def compose_farmland(rng: np.random.Generator, size: int, density: str) -> Scene:
    return landcover_scene("farmland", rng, size)


def compose_forest(rng: np.random.Generator, size: int, density: str) -> Scene:
    return landcover_scene("forest", rng, size)


COMPOSERS = {
    "airport": compose_airport, "parking": compose_parking, "harbor": compose_harbor, "tanks": compose_tanks,
    "residential": compose_residential, "highway": compose_highway, "farmland": compose_farmland, "forest": compose_forest,
}
DETECTION_KINDS = ("airport", "parking", "harbor", "tanks", "residential", "highway")
MANY_KINDS = ("parking", "highway", "tanks")  # the recipes that reliably reach more than 10 of one class
CAPTION_KINDS = ("airport", "parking", "harbor", "tanks", "residential", "highway", "farmland", "forest")
SCENE_KINDS = {"airport": "airport", "denseresidential": "residential", "farmland": "farmland", "forest": "forest",
               "harbor": "harbor", "parkinglot": "parking"}


def finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera look: a slight blur and sensor noise over the painted scene."""
    img = cv2.GaussianBlur(image, (3, 3), 0.6).astype(np.float32)
    img += rng.standard_normal(img.shape[:2], dtype=np.float32)[..., None] * np.float32(1.8)
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def compose(kind: str, rng: np.random.Generator, size: int, density: str) -> tuple[Scene, np.ndarray]:
    """A finished scene of recipe ``kind``: (what was painted, the RGB image)."""
    scene = COMPOSERS[kind](rng, size, density)
    return scene, finish(scene.image, rng)


# ---------------------------------------------------------------- land cover (LoveDA masks, farmland, forest)


LANDCOVER_ODDS = {  # chance of each land-cover class appearing in a tile of this recipe
    "mixed": {"forest": 0.5, "barren": 0.4, "fields": 0.6, "water": 0.5, "road": 0.8, "buildings": 0.75},
    "farmland": {"forest": 0.2, "barren": 0.1, "fields": 1.0, "water": 0.2, "road": 0.6, "buildings": 0.5},
    "forest": {"forest": 1.0, "barren": 0.1, "fields": 0.1, "water": 0.35, "road": 0.5, "buildings": 0.3},
}


@dataclass
class Landcover:
    """A class-index mask (LoveDA values) and the pieces needed to paint an image that matches it."""

    mask: np.ndarray
    fields: np.ndarray  # field id (1..) per pixel, 0 outside fields
    buildings: list[np.ndarray]
    facts: dict


def landcover_layout(rng: np.random.Generator, size: int, recipe: str) -> Landcover:
    """Random land cover: later classes cover earlier ones (forest < barren < fields < water < road < buildings)."""
    odds = LANDCOVER_ODDS[recipe]
    mask = np.full((size, size), BACKGROUND, np.uint8)
    fields = np.zeros((size, size), np.int32)
    facts: dict = {}
    if rng.random() < odds["forest"]:
        cover = rng.uniform(0.6, 0.85) if recipe == "forest" else rng.uniform(0.15, 0.4)
        noise = value_noise(rng, (size, size), size // 5)
        mask[noise > np.quantile(noise, 1 - cover)] = FOREST
        facts["forest"] = cover
    if rng.random() < odds["barren"]:
        centre, axes = rng.uniform(0.2, 0.8, 2) * size, rng.uniform(0.1, 0.25, 2) * size
        cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), float(rng.uniform(0, 180)), 0, 360, BARREN, -1)
        facts["barren"] = True
    if rng.random() < odds["fields"]:
        facts["fields"] = layout_fields(rng, size, mask, fields, patchwork=recipe == "farmland")
    if rng.random() < odds["water"]:
        if rng.random() < 0.5:
            bends = cv2.resize(rng.uniform(0.2, 0.8, (1, 5)).astype(np.float32), (40, 1), interpolation=cv2.INTER_CUBIC)[0]
            pts = np.stack([np.linspace(-10, size + 10, 40), np.clip(bends, 0.1, 0.9) * size], axis=1)
            pts = pts[:, ::-1] if rng.random() < 0.5 else pts
            cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, WATER, max(3, int(size * rng.uniform(0.04, 0.09))))
            facts["water"] = "river"
        else:
            centre, axes = rng.uniform(0.25, 0.75, 2) * size, rng.uniform(0.08, 0.18, 2) * size
            cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), float(rng.uniform(0, 180)), 0, 360, WATER, -1)
            facts["water"] = "pond"
    if rng.random() < odds["road"]:
        p = rng.uniform(0.2, 0.8, 2) * size
        d = np.array([math.cos(a := rng.uniform(0, math.pi)), math.sin(a)]) * size * 1.5
        cv2.line(mask, tuple(np.round(p - d).astype(int)), tuple(np.round(p + d).astype(int)), ROAD, max(3, int(size * 0.03)))
        facts["road"] = True
    buildings = layout_buildings(rng, size, mask) if rng.random() < odds["buildings"] else []
    if (mask == BACKGROUND).all():  # a tile meant to have classes always gets at least a road
        cv2.line(mask, (0, size // 2), (size, size // 3), ROAD, max(3, int(size * 0.03)))
        facts["road"] = True
    return Landcover(mask, fields, buildings, facts)


def layout_fields(rng: np.random.Generator, size: int, mask: np.ndarray, fields: np.ndarray, patchwork: bool) -> int:
    """Fields as rotated rectangles: a patchwork over the whole tile, or a few plots."""
    angle = rng.normal(0, 0.15)
    if patchwork:
        cuts_x = np.cumsum(rng.uniform(0.18, 0.4, 6)) * size - 0.3 * size
        cuts_y = np.cumsum(rng.uniform(0.2, 0.45, 6)) * size - 0.3 * size
        cells = [(a, b, c, d) for a, b in zip(cuts_x, cuts_x[1:]) for c, d in zip(cuts_y, cuts_y[1:])]
    else:
        cells = []
        for _ in range(int(rng.integers(1, 4))):
            x, y = rng.uniform(0, 0.7, 2) * size
            cells.append((x, x + rng.uniform(0.2, 0.4) * size, y, y + rng.uniform(0.2, 0.4) * size))
    gap = max(1.0, size * 0.006)
    for i, (xa, xb, ya, yb) in enumerate(cells, start=1):
        corners = rotate(box(xb - xa - gap, yb - ya - gap), (xa + xb) / 2, (ya + yb) / 2, angle)
        pts = [np.round(corners).astype(np.int32)]
        cv2.fillPoly(mask, pts, AGRICULTURE)
        cv2.fillPoly(fields, pts, i)
    return len(cells)


def layout_buildings(rng: np.random.Generator, size: int, mask: np.ndarray) -> list[np.ndarray]:
    """Small houses on background or barren ground, never on each other, a road or water."""
    buildings = []
    for _ in range(int(rng.integers(3, 12))):
        l, w = size * rng.uniform(0.045, 0.08), size * rng.uniform(0.035, 0.06)
        cx, cy = rng.uniform(0.08, 0.92, 2) * size
        corners = rotate(box(l + 4, w + 4), cx, cy, rng.normal(0, 0.2) + rng.choice([0, math.pi / 2]))
        area = polygon_mask(size, corners) > 0
        if np.isin(mask[area], (BACKGROUND, BARREN)).all():
            inner = rotate(box(l, w), cx, cy, math.atan2(*(corners[1] - corners[0])[::-1]))
            cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], BUILDING)
            buildings.append(inner)
    return buildings


def paint_landcover(rng: np.random.Generator, cover: Landcover) -> np.ndarray:
    """An image that matches the mask: one texture per class, a crop per field, a roof per building."""
    mask = cover.mask
    size = mask.shape[0]
    img = ground(rng, size, str(rng.choice(["meadow", "grass"])))
    layers = {BARREN: str(rng.choice(["sand", "soil"])), FOREST: lambda r, shape: canopy(r, shape, size * 0.016), WATER: "water", ROAD: "asphalt"}
    for value, texture in layers.items():
        fill_textured(img, rng, mask == value, texture)
    for field_id in range(1, int(cover.fields.max()) + 1):
        fill_textured(img, rng, (cover.fields == field_id) & (mask == AGRICULTURE), crop_texture)
    for corners in cover.buildings:
        paint_roof(img, rng, corners)
    img[mask == NO_DATA] = 0
    return img


def landcover_scene(kind: str, rng: np.random.Generator, size: int) -> Scene:
    """Farmland or forest tiles for captions and scene folders: the land-cover painter plus its houses."""
    cover = landcover_layout(rng, size, kind)
    scene = Scene(kind, paint_landcover(rng, cover), kind, facts=dict(cover.facts))
    for corners in cover.buildings:
        scene.objects.append(Obj("building", corners, corners))
    return scene


# ---------------------------------------------------------------- files


def encode(path: Path, rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """PNG or JPEG bytes of an RGB image with fixed encoder settings (same pixels -> same bytes)."""
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if jpeg else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, data = cv2.imencode(".jpg" if jpeg else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"cannot encode {path}")
    return data.tobytes()


def write_image(path: Path, rgb: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(path, rgb, quality))


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def write_json(path: Path, data, **dumps) -> None:
    """A json file; ``dumps`` picks the layout of the real files (COCO compact, Karpathy on one line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, **dumps), encoding="utf-8")


@dataclass
class Written:
    """An image written to one source: its path relative to the demo root and what is in it."""

    rel: str
    objects: list[Obj]
    scene: Scene | None = None
    split: str | None = None


def dota_density(index: int) -> str:
    """Every 7th image holds exactly one object, every 3rd (from the 2nd) more than 10 of one class."""
    return "one" if index % 7 == 0 else "many" if index % 3 == 1 else "few"


def detection_kind(i: int, density: str) -> str:
    """Image ``i``'s recipe: "many" images (every 3rd, from the 2nd) take turns over MANY_KINDS, the others
    over all detection recipes."""
    if density == "many":
        return MANY_KINDS[(i // 3) % len(MANY_KINDS)]
    return DETECTION_KINDS[(i - (i + 1) // 3) % len(DETECTION_KINDS)]


def write_dota(out: Path, seed: int, n: int, size: int) -> list[Written]:
    """``dota/images/P####.png`` + ``dota/labelTxt/P####.txt`` (DOTA v1.5 lines with the two header lines)."""
    written = []
    for i in range(n):
        density = dota_density(i)
        kind = detection_kind(i, density)
        rng = rng_for(seed, "dota", i)
        scene, image = compose(kind, rng, size, density)
        name = f"P{i + 1:04d}"
        write_image(out / "dota" / "images" / f"{name}.png", image)
        label = out / "dota" / "labelTxt" / f"{name}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(dota_label_text(scene.objects), encoding="utf-8")
        written.append(Written(f"dota/images/{name}.png", scene.objects, scene))
    return written


def dota_label_text(objects: list[Obj]) -> str:
    lines = ["imagesource:GoogleEarth", f"gsd:{GSD}"]
    for obj in objects:
        if obj.cls in DOTA_NAMES:
            coords = " ".join(f"{v:.1f}" for v in np.round(obj.obb).ravel() + 0.0)  # + 0.0: no "-0.0"
            lines.append(f"{coords} {DOTA_NAMES[obj.cls]} {int(obj.difficult)}")
    return "\n".join(lines) + "\n"


def write_coco(out: Path, seed: int, n: int, size: int, extra: list[Written]) -> list[Written]:
    """``coco/images/<12 digits>.jpg`` + ``coco/annotations.json``; ``extra`` (the planted copies, already
    written under coco/images) are appended to the json after the ``n`` generated images."""
    written = []
    for i in range(n):
        density = "many" if (i + 3) % 3 == 1 else "few"
        kind = detection_kind(i + 3, density)
        scene, image = compose(kind, rng_for(seed, "coco", i), size, density)
        rel = f"coco/images/{coco_file_name(i + 1)}"
        write_image(out / rel, image)
        written.append(Written(rel, scene.objects, scene))
    entries = written + extra
    write_json(out / "coco" / "annotations.json", coco_json(entries, size), separators=(",", ":"))
    return entries


def coco_file_name(image_id: int) -> str:
    return f"{image_id:012d}.jpg"


def coco_json(entries: list[Written], size: int) -> dict:
    images, annotations = [], []
    for image_id, entry in enumerate(entries, start=1):
        images.append({"id": image_id, "file_name": Path(entry.rel).name, "width": size, "height": size})
        for obj in entry.objects:
            if obj.cls in COCO_IDS:
                annotations.append(coco_annotation(len(annotations) + 1, image_id, obj, size))
    return {
        "info": {"description": "synthetic aerial scenes (rs-clip-toolkit demo)", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in COCO_CATEGORIES],
    }


def coco_annotation(ann_id: int, image_id: int, obj: Obj, size: int) -> dict:
    outline = np.clip(obj.outline, 0, size)
    (x0, y0), (x1, y1) = outline.min(0), outline.max(0)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": COCO_IDS[obj.cls],
        "segmentation": [[round(float(v), 1) for v in outline.ravel()]],
        "area": round(float(cv2.contourArea(outline.astype(np.float32))), 2),
        "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
        "iscrowd": 0,
    }


def write_masks(out: Path, seed: int, n: int, size: int) -> tuple[list[Written], str]:
    """``masks/img_dir/<i>.png`` + ``masks/ann_dir/<i>.png`` (mode L, LoveDA values). One tile is all
    background (the build skips it as ``empty_mask``); one has a no-data (0) strip, as LoveDA tiles do."""
    empty_index = n // 2
    written = []
    for i in range(n):
        rng = rng_for(seed, "masks", i)
        if i == empty_index:
            cover = Landcover(np.full((size, size), BACKGROUND, np.uint8), np.zeros((size, size), np.int32), [], {})
        else:
            cover = landcover_layout(rng, size, "mixed")
            if i == 1 and n > 2:
                cover.mask[:, size - max(2, size // 12):] = NO_DATA
        image = paint_landcover(rng, cover)
        image = finish(image, rng)
        image[cover.mask == NO_DATA] = 0
        write_image(out / "masks" / "img_dir" / f"{i}.png", image)
        write_mask(out / "masks" / "ann_dir" / f"{i}.png", cover.mask)
        written.append(Written(f"masks/img_dir/{i}.png", []))
    return written, f"masks/ann_dir/{empty_index}.png"


def write_mask(path: Path, mask: np.ndarray) -> None:
    """A single-channel 8-bit PNG (Pillow reads it as mode L, like LoveDA's masks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError(f"cannot encode {path}")
    path.write_bytes(data.tobytes())


def write_scenes(out: Path, seed: int, n_per_class: int, size: int) -> list[Written]:
    """``scenes/<class>/<class>_<n>.jpg``, AID-style."""
    written = []
    for c, name in enumerate(SCENE_CLASSES):
        for i in range(n_per_class):
            density = "many" if i % 2 else "few"
            scene, image = compose(SCENE_KINDS[name], rng_for(seed, "scenes", c * 100_000 + i), size, density)
            rel = f"scenes/{name}/{name}_{i + 1}.jpg"
            write_image(out / rel, image)
            written.append(Written(rel, scene.objects, scene))
    return written


# ---------------------------------------------------------------- captions


NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
PLACES = {"airport": "an airport", "parking": "a parking lot", "harbor": "a harbor", "tanks": "some storage tanks",
          "residential": "a residential area", "highway": "a road", "farmland": "farmland", "forest": "a forest"}


def amount(rng: np.random.Generator, n: int, noun: str, plural: str | None = None) -> str:
    """How annotators write counts: "a plane", "three planes", "many planes"."""
    plural = plural or noun + "s"
    if n == 1:
        return ("an " if noun[0] in "aeiou" else "a ") + noun
    if n <= 10:
        return f"{NUMBER_WORDS[n]} {plural}"
    return f"{rng.choice(['many', 'lots of', 'a lot of', 'a large number of'])} {plural}"


def be(n: int) -> str:
    return "is" if n == 1 else "are"


@dataclass
class Said:
    """What captions may say about a scene: its object counts and facts, and ``a(n, noun)`` for counts."""

    scene: Scene
    rng: np.random.Generator

    def __getattr__(self, name: str) -> int:
        classes = {"planes": "plane", "ships": "ship", "tanks": "storage-tank", "cars": "small-vehicle",
                   "trucks": "large-vehicle", "piers": "harbor", "houses": "building", "pools": "swimming-pool"}
        if name not in classes:
            raise AttributeError(name)
        return self.scene.count(classes[name])

    def a(self, n: int, noun: str) -> str:
        return amount(self.rng, n, noun)

    def fact(self, key: str, default=None):
        return self.scene.facts.get(key, default)


def airport_sentences(x: Said) -> list[str]:
    n = x.planes
    s = [f"{x.a(n, 'plane')} {be(n)} parked at the airport", f"there {be(n)} {x.a(n, 'airplane')} on the apron",
         f"{x.a(n, 'white plane')} {be(n)} stopped on the gray ground of the airport",
         f"an airport with {x.a(n, 'plane')} and some yellow lines on the ground", "a piece of green grass lies beside the apron"]
    s += ["a single plane is parked on the open apron"] if n == 1 else ["several planes are parked in different directions"]
    vehicles = x.cars + x.trucks
    return s + ([f"{x.a(vehicles, 'vehicle')} {be(vehicles)} parked beside the planes"] if vehicles else [])


def parking_sentences(x: Said) -> list[str]:
    cars, trucks = x.cars, x.trucks
    s = [f"{x.a(cars, 'car')} {be(cars)} parked in the parking lot",
         f"a parking lot with {x.a(cars, 'car')}" + (f" and {x.a(trucks, 'truck')}" if trucks else ""),
         "white lines divide the parking lot into parking spaces", "the parking lot is surrounded by green grass"]
    s += ["many cars are parked neatly in rows"] if cars > 10 else ["only one car is parked in the large parking lot"] if cars == 1 else []
    s += ["some parking spaces are empty"] if x.fact("free_slots", 0) > 0 else []
    return s + ([f"{x.a(trucks, 'truck')} {be(trucks)} parked at the side of the parking lot"] if trucks else [])


def harbor_sentences(x: Said) -> list[str]:
    ships, piers, moving, houses = x.ships, x.piers, x.fact("moving_ships", 0), x.houses
    s = [f"{x.a(ships, 'ship')} {be(ships)} in the harbor", f"there {be(ships)} {x.a(ships, 'boat')} on the dark blue water",
         "a harbor beside the sea", "the water in the harbor is calm"]
    s += [f"{x.a(piers, 'pier')} {be(piers)} extending into the water"] if piers else []
    s += ["some ships are docked at the piers"] if piers and ships - moving > 1 else []
    s += [f"{x.a(moving, 'ship')} {be(moving)} sailing on the sea with white waves behind"] if moving else []
    return s + ([f"{x.a(houses, 'warehouse')} {be(houses)} built on the shore"] if houses else [])


def tanks_sentences(x: Said) -> list[str]:
    tanks, trucks = x.tanks, x.trucks
    s = [f"there {be(tanks)} {x.a(tanks, 'white storage tank')} on the bare land",
         f"{x.a(tanks, 'round tank')} {be(tanks)} standing in an industrial area",
         f"an oil depot with {x.a(tanks, 'storage tank')}", f"the {'storage tanks are' if tanks > 1 else 'storage tank is'} built on a concrete ground"]
    s += [f"{x.a(tanks, 'storage tank')} {be(tanks)} arranged neatly in rows"] if tanks > 3 else []
    s += ["a road passes by the storage tanks" if tanks > 1 else "a road passes by the storage tank"] if x.fact("road") else []
    return s + ([f"{x.a(trucks, 'truck')} {be(trucks)} on the road near the tanks"] if trucks else [])


def residential_sentences(x: Said) -> list[str]:
    houses, cars, pools = x.houses, x.cars, x.pools
    s = [f"{x.a(houses, 'house')} {be(houses)} built along the road", "a residential area with houses and green trees",
         "many houses are arranged neatly along the road" if houses > 10 else "some houses are scattered along the road",
         "a road goes through this residential area", "some green trees are planted around the houses"]
    s += [f"{x.a(cars, 'car')} {be(cars)} driving on the road"] if cars else []
    s += [f"{x.a(pools, 'swimming pool')} {be(pools)} next to the houses"] if pools else []
    return s + (["this is a dense residential area"] if houses > 14 else [])


def highway_sentences(x: Said) -> list[str]:
    cars, trucks = x.cars, x.trucks
    n = cars + trucks
    s = [f"a straight road with {x.a(n, 'vehicle')} on it", "white lines separate the lanes of the road",
         f"a road with {NUMBER_WORDS[min(x.fact('lanes', 2), 10)]} lanes",
         "the road goes across the green field" if x.fact("grass") else "the road passes through the bare land"]
    s += [f"{x.a(cars, 'car')} {be(cars)} driving on the road"] if cars else []
    s += [f"{x.a(trucks, 'truck')} and {x.a(cars, 'car')} are running on the highway"] if trucks and cars else []
    return s + (["the traffic on this road is heavy"] if n > 10 else ["there are few vehicles on the road"] if n <= 3 else [])


def farmland_sentences(x: Said) -> list[str]:
    s = ["there is a piece of farmland", "many pieces of farmland are arranged neatly", "the fields are green and yellow",
         "some farmland with different crops", "it is a piece of cropland"]
    s += [f"{x.a(x.houses, 'house')} {be(x.houses)} beside the farmland"] if x.houses else []
    s += ["a road goes across the fields"] if x.fact("road") else []
    water = x.fact("water")
    return s + ([{"river": "a river flows past the fields", "pond": "a pond lies next to the fields"}[water]] if water else [])


def forest_sentences(x: Said) -> list[str]:
    s = ["a dense forest with many green trees", "there is a large piece of forest", "the trees are dark green and close to each other",
         "it is a piece of forest"]
    s += ["a road passes through the forest"] if x.fact("road") else []
    water = x.fact("water")
    s += [{"river": "a river runs through the forest", "pond": "there is a pond in the forest"}[water]] if water else []
    return s + ([f"{x.a(x.houses, 'house')} {be(x.houses)} in the forest"] if x.houses else [])


SENTENCES = {
    "airport": airport_sentences, "parking": parking_sentences, "harbor": harbor_sentences, "tanks": tanks_sentences,
    "residential": residential_sentences, "highway": highway_sentences, "farmland": farmland_sentences, "forest": forest_sentences,
}


def caption_candidates(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Sentences that are true of what was painted, in the plain style of UCM/Sydney captions."""
    place = PLACES[scene.kind]
    generic = [f"this is an aerial image of {place}", f"it is a remote sensing image of {place}", f"here is a top view of {place}"]
    return SENTENCES[scene.kind](Said(scene, rng)) + generic


def pick_captions(scene: Scene, rng: np.random.Generator, k: int = 5) -> list[str]:
    """Five different sentences, capitalised and ending in " ." like the Karpathy caption files."""
    unique = list(dict.fromkeys(caption_candidates(scene, rng)))
    chosen = [unique[i] for i in sorted(rng.choice(len(unique), k, replace=False))]
    return [c[0].upper() + c[1:] + " ." for c in chosen]


def split_plan(n: int, eligible: list[int], rng: np.random.Generator) -> list[str]:
    """~80/10/10 train/val/test; test (at least 2) drawn first from ``eligible`` (images COCO can annotate,
    so the contamination copies carry objects and are not skipped before they are hashed). Tiny sets keep
    one train image before they get a val image."""
    n_test = max(2, round(0.1 * n))
    n_val = min(max(1, round(0.1 * n)), max(0, n - n_test - 1))
    others = [i for i in range(n) if i not in set(eligible)]
    order = [int(i) for i in rng.permutation(eligible)] + [int(i) for i in rng.permutation(others)]
    splits = ["train"] * n
    for i in order[:n_test]:
        splits[i] = "test"
    rest = [i for i in range(n) if splits[i] == "train"]
    for i in rng.permutation(rest)[:n_val]:
        splits[int(i)] = "val"
    return splits


def write_captions(out: Path, seed: int, n: int, size: int) -> list[Written]:
    """``captions/images/<n>.jpg`` + ``captions/dataset.json`` (Karpathy form, 5 sentences an image)."""
    written, sentences = [], []
    for i in range(n):
        kind = CAPTION_KINDS[i % len(CAPTION_KINDS)]
        density = "one" if i % 11 == 5 else "many" if i % 4 == 2 else "few"
        rng = rng_for(seed, "captions", i)
        scene, image = compose(kind, rng, size, density)
        rel = f"captions/images/{i + 1}.jpg"
        write_image(out / rel, image)
        written.append(Written(rel, scene.objects, scene))
        sentences.append(pick_captions(scene, rng))
    eligible = [i for i, w in enumerate(written) if any(o.cls in COCO_IDS for o in w.objects)]
    for entry, split in zip(written, split_plan(n, eligible, rng_for(seed, "splits", 0))):
        entry.split = split
    write_json(out / "captions" / "dataset.json", karpathy_json(written, sentences))
    return written


def karpathy_json(written: list[Written], sentences: list[list[str]]) -> dict:
    images, sentid = [], 0
    for imgid, (entry, raws) in enumerate(zip(written, sentences)):
        sents = []
        for raw in raws:
            sents.append({"tokens": raw.rstrip(" .").split(), "raw": raw, "imgid": imgid, "sentid": sentid})
            sentid += 1
        images.append({"sentids": [s["sentid"] for s in sents], "imgid": imgid, "sentences": sents,
                       "split": entry.split, "filename": Path(entry.rel).name})
    return {"dataset": "synthetic", "images": images}


# ---------------------------------------------------------------- planted duplicates


def phash_distance(a: Path, b: Path) -> int:
    """Hamming distance of ``imagehash.phash`` of two image files (what the build's dedup compares)."""
    import imagehash
    from PIL import Image

    with Image.open(a) as ia, Image.open(b) as ib:
        return int(imagehash.phash(ia.convert("RGB")) - imagehash.phash(ib.convert("RGB")))


def near_copy(src: Path, dst: Path, variants: tuple[tuple[int, int], ...]) -> int:
    """Re-save ``src`` as ``dst`` with a brightness shift and a JPEG quality, the first variant whose
    p-Hash stays within 1 of the original (a margin under the build's threshold of 2); an exact copy as
    the last resort. Returns the distance."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    rgb = read_rgb(src)
    for brightness, quality in variants:
        dst.write_bytes(encode(dst, np.clip(rgb.astype(np.int16) + brightness, 0, 255).astype(np.uint8), quality))
        distance = phash_distance(src, dst)
        if distance <= 1:
            return distance
    if src.suffix.lower() == dst.suffix.lower():
        shutil.copyfile(src, dst)
    else:
        dst.write_bytes(encode(dst, rgb, 100))
    return phash_distance(src, dst)


def plant_cross_source(out: Path, dota: list[Written], image_id: int) -> tuple[Written, dict]:
    """A DOTA image re-saved into COCO (brighter by 2, JPEG), with its objects as COCO annotations."""
    usable = [w for w in dota if any(o.cls in COCO_IDS for o in w.objects)] or dota
    original = next((w for w in usable[1:] if w.scene and w.scene.kind != "tanks"), usable[0])
    rel = f"coco/images/{coco_file_name(image_id)}"
    distance = near_copy(out / original.rel, out / rel, ((2, 90), (1, 95), (0, 100)))
    return Written(rel, original.objects), {"kind": "cross_source", "original": original.rel, "copy": rel, "distance": distance}


def plant_contamination(out: Path, captions: list[Written], first_id: int, n: int = 2) -> tuple[list[Written], list[dict]]:
    """Test-split caption images copied into COCO (re-compressed, annotated): leakage to catch."""
    tests = [w for w in captions if w.split == "test" and any(o.cls in COCO_IDS for o in w.objects)]
    tests = (tests + [w for w in captions if w.split == "test" and w not in tests])[:n]
    copies, pairs = [], []
    for k, original in enumerate(tests):
        rel = f"coco/images/{coco_file_name(first_id + k)}"
        distance = near_copy(out / original.rel, out / rel, ((1, 90), (0, 93)))
        copies.append(Written(rel, original.objects))
        pairs.append({"eval": original.rel, "copy": rel, "distance": distance})
    return copies, pairs


def plant_within_source(out: Path, scenes: list[Written], n_per_class: int) -> dict:
    """A scene image saved a second time under the next free name of its class folder."""
    original = scenes[min(n_per_class, len(scenes) - 1)]  # the first image of the second class
    folder = Path(original.rel).parent
    rel = f"{folder.as_posix()}/{folder.name}_{n_per_class + 1}.jpg"
    distance = near_copy(out / original.rel, out / rel, ((0, 88), (0, 95)))
    return {"kind": "within_source", "original": original.rel, "copy": rel, "distance": distance}


# ---------------------------------------------------------------- entry points


DEMO_MARKER = ".rs-demo-data"  # written first into a folder of generated demo data: "the generator owns this"


def prepare_out(out: Path) -> Path:
    """Create ``out``; an earlier demo there (marked, and holding only our own folders) is replaced, anything else
    refused - a folder that merely holds a ``dota/`` or ``coco/`` may be someone's real dataset."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        ours = set(SOURCES) | {"planted.json", DEMO_MARKER}
        foreign = [p.name for p in out.iterdir() if p.name not in ours]
        if foreign or not (out / DEMO_MARKER).is_file():
            what = f"files that are not demo data ({', '.join(sorted(foreign)[:5])})" if foreign else f"no {DEMO_MARKER} marker"
            raise FileExistsError(f"{out} is not empty and holds {what}; use an empty or new folder - nothing was changed")
        for name in SOURCES:
            path = out / name
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
        (out / "planted.json").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("demo data written by shards.synthetic; safe to delete\n")
    return out


@contextlib.contextmanager
def opencv_without_thread_pool():
    """Paint with OpenCV's worker threads off, restoring the setting after.

    Why: a process that forks after OpenCV has started its thread pool hands the children a pool whose
    threads do not exist; a child that then calls ``cv2.setNumThreads`` (as the build's workers do) waits
    for them forever. The demo is generated in the process that then builds the shards (tests, launch/demo.py),
    so it must leave no pool running. The painting is fast enough on one thread."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def check_arguments(seed: int, n_dota: int, n_coco: int, n_masks: int, n_captions: int, n_scenes_per_class: int, size: int) -> None:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if size < 96:
        raise ValueError(f"size must be >= 96 pixels, got {size}")
    if n_dota < 2 or n_coco < 1 or n_scenes_per_class < 1:
        raise ValueError("need n_dota >= 2, n_coco >= 1 and n_scenes_per_class >= 1")
    if n_masks < 1:
        raise ValueError(f"n_masks must be >= 1 (one of them is the all-background mask), got {n_masks}")
    if n_captions < 2:
        raise ValueError(f"n_captions must be >= 2 (2 test images are copied into COCO as contamination), got {n_captions}")


def generate_demo(out: Path, seed: int = 0, n_dota: int = 40, n_coco: int = 40, n_masks: int = 12, n_captions: int = 120,
                  n_scenes_per_class: int = 8, size: int = 384) -> dict:
    """Write the demo data set under ``out`` (see the module docstring) and return a summary of it.

    ``planted.json`` is written last, so its presence means a complete set."""
    check_arguments(seed, n_dota, n_coco, n_masks, n_captions, n_scenes_per_class, size)
    out = prepare_out(out)
    with opencv_without_thread_pool():
        return write_demo(out, seed, n_dota, n_coco, n_masks, n_captions, n_scenes_per_class, size)


def write_demo(out: Path, seed: int, n_dota: int, n_coco: int, n_masks: int, n_captions: int, n_scenes_per_class: int,
               size: int) -> dict:
    dota = write_dota(out, seed, n_dota, size)
    captions = write_captions(out, seed, n_captions, size)
    masks, empty_mask = write_masks(out, seed, n_masks, size)
    scenes = write_scenes(out, seed, n_scenes_per_class, size)
    cross_copy, cross = plant_cross_source(out, dota, n_coco + 1)
    contamination_copies, contaminated = plant_contamination(out, captions, n_coco + 2)
    within = plant_within_source(out, scenes, n_scenes_per_class)
    coco = write_coco(out, seed, n_coco, size, [cross_copy, *contamination_copies])
    planted = {"duplicates": [cross, within], "contaminated": contaminated}
    write_json(out / "planted.json", planted, indent=1)
    objects = Counter(o.cls for w in dota + coco + captions + scenes for o in w.objects)
    return {
        "out": str(out),
        "seed": seed,
        "size": size,
        "images": {"dota": len(dota), "coco": len(coco), "masks": len(masks), "captions": len(captions),
                   "scenes": len(scenes) + 1},
        "caption_splits": dict(Counter(w.split for w in captions)),
        "scene_classes": list(SCENE_CLASSES),
        "empty_mask": empty_mask,
        "objects": dict(sorted(objects.items())),
        "planted": planted,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shards.synthetic",
        description="Write synthetic aerial scenes in the real RS formats (DOTA, COCO, LoveDA masks, Karpathy "
                    "captions, scene folders) with planted duplicates and contamination listed in planted.json.",
    )
    parser.add_argument("out", type=Path, help="folder to write (created; an earlier demo there is replaced)")
    parser.add_argument("--seed", type=plain_int, default=0, help="random seed; the same seed gives byte-identical files")
    parser.add_argument("--size", type=plain_int, default=384, help="side of every image in pixels")
    parser.add_argument("--n-dota", type=plain_int, default=40, help="DOTA images")
    parser.add_argument("--n-coco", type=plain_int, default=40, help="COCO images (plus 3 planted copies)")
    parser.add_argument("--n-masks", type=plain_int, default=12, help="LoveDA-style image/mask pairs")
    parser.add_argument("--n-captions", type=plain_int, default=120, help="captioned images (Karpathy json)")
    parser.add_argument("--n-scenes-per-class", type=plain_int, default=8, help=f"images per scene class ({', '.join(SCENE_CLASSES)})")
    args = parser.parse_args(argv)
    try:
        summary = generate_demo(args.out, seed=args.seed, n_dota=args.n_dota, n_coco=args.n_coco, n_masks=args.n_masks,
                                n_captions=args.n_captions, n_scenes_per_class=args.n_scenes_per_class, size=args.size)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
