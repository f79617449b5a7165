"""A large DOTA-format scene for the tiling tests and bench: a blocky textured background (it compresses well and
no two tiles look alike to p-Hash) with rotated rectangles, many of them placed across the borders of a tile grid."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("small-vehicle", "large-vehicle", "ship", "storage-tank", "plane")


def background(side: int, rng: np.random.Generator, block: int = 64) -> np.ndarray:
    """(side, side, 3) uint8: random flat blocks of ``block`` px (cheap to make, to save and to tile)."""
    cells = -(-side // block)
    coarse = rng.integers(60, 200, size=(cells, cells, 3), dtype=np.uint8)
    return np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)[:side, :side].copy()


def rotated_rect(cx: float, cy: float, w: float, h: float, angle: float) -> np.ndarray:
    """(4, 2) corners of a w x h rectangle centred on (cx, cy), turned by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    corners = np.array([(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)])
    return corners @ np.array([[c, s], [-s, c]]) + (cx, cy)


def border_objects(side: int, tile: int, overlap: int, rng: np.random.Generator, n_free: int = 60) -> list[tuple[str, np.ndarray]]:
    """Objects straddling every tile edge of the grid (in steps of ``tile - overlap``), plus ``n_free`` anywhere."""
    step = tile - overlap
    edges = sorted({*range(step, side - 1, step), *range(tile, side - 1, step), side - tile, side - overlap})
    objects = []
    for e in edges:
        for _ in range(3):
            along = float(rng.uniform(40, side - 40))
            w, h = float(rng.uniform(12, 60)), float(rng.uniform(8, 30))
            offset = float(rng.uniform(-0.6, 0.6)) * w  # from well inside to well outside the edge
            x_edge = rng.random() < 0.5
            cx, cy = (e + offset, along) if x_edge else (along, e + offset)
            objects.append((CLASSES[len(objects) % len(CLASSES)], rotated_rect(cx, cy, w, h, float(rng.uniform(0, math.pi)))))
    for _ in range(n_free):
        cx, cy = rng.uniform(40, side - 40, size=2)
        objects.append((CLASSES[len(objects) % len(CLASSES)],
                        rotated_rect(float(cx), float(cy), float(rng.uniform(10, 50)), float(rng.uniform(8, 30)), float(rng.uniform(0, math.pi)))))
    return [(c, np.clip(p, 0, side - 1)) for c, p in objects]


def write_dota_scene(root: Path, side: int, tile: int = 1024, overlap: int = 200, seed: int = 0, ext: str = ".png",
                     name: str = "P9000") -> list[tuple[str, np.ndarray]]:
    """``root/images/<name><ext>`` (``.png``, or ``.tif`` written tiled 256 x 256 by tifffile) and
    ``root/labelTxt/<name>.txt`` (DOTA v1.0 lines); returns the objects (class, (4, 2) corners) as written."""
    rng = np.random.default_rng(seed)
    image = background(side, rng)
    objects = border_objects(side, tile, overlap, rng)
    for _, poly in objects:
        cv2.fillPoly(image, [np.round(poly).astype(np.int32)], (250, 250, 250))
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labelTxt").mkdir(parents=True, exist_ok=True)
    path = root / "images" / f"{name}{ext}"
    if ext == ".tif":
        import tifffile

        tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb")
    else:
        cv2.imwrite(str(path), image[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    lines = ["imagesource:synthetic", "gsd:0.5"]
    lines += [" ".join(f"{v:.1f}" for v in poly.reshape(-1)) + f" {cls} 0" for cls, poly in objects]
    (root / "labelTxt" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return [(cls, np.array([[float(f"{v:.1f}") for v in pt] for pt in poly])) for cls, poly in objects]
