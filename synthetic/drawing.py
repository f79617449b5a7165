"""Drawing primitives of the synthetic scenes: geometry, anti-aliased polygons/lines/discs, shadows, ground
textures, and the fixed-setting image encoder every synthetic image goes through (demo files, tiny shards)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

JPEG_QUALITY = 95

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


# ---------------------------------------------------------------- geometry


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


# ---------------------------------------------------------------- image files


def encode(path: str | Path, pixels: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """PNG or JPEG bytes (by ``path``'s suffix) of an RGB image, or of a single-channel one (a PNG that Pillow reads
    as mode L, like LoveDA's masks), with fixed encoder settings (same pixels -> same bytes)."""
    jpeg = Path(path).suffix.lower() in (".jpg", ".jpeg")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if jpeg else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels
    ok, data = cv2.imencode(".jpg" if jpeg else ".png", bgr, params)
    if not ok:
        raise OSError(f"cannot encode {path}")
    return data.tobytes()


def write_image(path: Path, pixels: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(path, pixels, quality))


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
