"""Land cover: LoveDA-style class masks and images painted to match them (the masks source), and the farmland
and forest scenes built on them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from synthetic.drawing import box, canopy, crop_texture, fill_textured, ground, polygon_mask, rotate, value_noise
from synthetic.painters import Obj, Scene, paint_roof

# LoveDA's mask values (shards.readers.masks.LOVEDA_CLASSES); 0 is no-data.
NO_DATA, BACKGROUND, BUILDING, ROAD, WATER, BARREN, FOREST, AGRICULTURE = range(8)

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
