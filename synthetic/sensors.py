"""SAR-like and infrared demo sources in the YOLO layout most SAR and infrared detection sets ship in (SSDD, HRSID):
``ROOT/images/*.tif`` + ``ROOT/labels/*.txt`` (``class cx cy w h``, normalised) + ``ROOT/classes.txt``.

SAR: float32 linear intensity, sea clutter as gamma-distributed speckle (4 looks) with bright ship targets (a few
pixels long, speckled too), the way an intensity product looks before dB conversion. Infrared: uint16 single band,
a cool background with noise and warm vehicles. Both are written with tifffile; the same seed gives the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _targets(rng: np.random.Generator, size: int, n: int, length: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """``n`` non-overlapping axis-aligned boxes (x0, y0, x1, y1), long side horizontal or vertical."""
    boxes: list[tuple[int, int, int, int]] = []
    while len(boxes) < n:
        long, short = int(rng.integers(*length)), int(rng.integers(3, 6))
        w, h = (long, short) if rng.random() < 0.5 else (short, long)
        x0, y0 = int(rng.integers(4, size - w - 4)), int(rng.integers(4, size - h - 4))
        box = (x0, y0, x0 + w, y0 + h)
        if all(box[2] + 3 < b[0] or b[2] + 3 < box[0] or box[3] + 3 < b[1] or b[3] + 3 < box[1] for b in boxes):
            boxes.append(box)
    return boxes


def _write(root: Path, name: str, image: np.ndarray, boxes, class_id: int = 0) -> None:
    import tifffile

    size = image.shape[0]
    tifffile.imwrite(root / "images" / f"{name}.tif", image)
    lines = [f"{class_id} {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} {(x1 - x0) / size:.6f} {(y1 - y0) / size:.6f}"
             for x0, y0, x1, y1 in boxes]
    (root / "labels" / f"{name}.txt").write_text("\n".join(lines) + "\n")


def _layout(root: Path, classes: list[str]) -> Path:
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def write_sar_yolo(root: Path, n_images: int = 6, size: int = 128, seed: int = 0) -> Path:
    """Ships on sea clutter as float32 linear intensity (sea ~0.05, ships ~5: about 20 dB brighter), 4-look speckle."""
    rng = np.random.default_rng(seed)
    root = _layout(root, ["ship"])
    for i in range(n_images):
        sigma = np.full((size, size), 0.05, dtype=np.float64)
        boxes = _targets(rng, size, int(rng.integers(1, 5)), (10, 24))
        for x0, y0, x1, y1 in boxes:
            sigma[y0:y1, x0:x1] = 5.0
        image = (sigma * rng.gamma(4.0, 1 / 4.0, size=(size, size))).astype(np.float32)
        _write(root, f"sar_{i:03d}", image, boxes)
    return root


def write_ir_yolo(root: Path, n_images: int = 6, size: int = 128, seed: int = 1) -> Path:
    """Warm vehicles on a cool background as uint16 (background ~20000, vehicles ~30000, sensor noise)."""
    rng = np.random.default_rng(seed)
    root = _layout(root, ["vehicle"])
    for i in range(n_images):
        image = 20000 + rng.normal(0, 600, size=(size, size))
        image += np.linspace(0, 1500, size)[None, :]  # a warm gradient across the scene
        boxes = _targets(rng, size, int(rng.integers(1, 6)), (6, 12))
        for x0, y0, x1, y1 in boxes:
            image[y0:y1, x0:x1] += 10000
        _write(root, f"ir_{i:03d}", np.clip(image, 0, 65535).astype(np.uint16), boxes)
    return root
