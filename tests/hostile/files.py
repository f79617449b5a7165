"""Small files, good and bad, for the hostile-input corpus (all made at test time, a few KB each)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def image(path: Path, w: int = 64, h: int = 48, seed: int = 0, fmt: str | None = None) -> Path:
    """A random RGB image (PNG, JPEG... by extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def rgba(path: Path, w: int = 60, h: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 4), 120, np.uint8)).save(path)
    return path


def scene_folders(root: Path, classes=("farmland", "harbor"), per_class: int = 2, seed: int = 0) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            image(root / name / f"{i}.png", seed=seed + 10 * c + i)
    return root


def dota(root: Path, lines: dict[str, str] | None = None, size=(64, 48)) -> Path:
    """``images/<name>.png`` + ``labelTxt/<name>.txt`` for each entry of ``lines`` (default: one good image)."""
    lines = lines if lines is not None else {"P0": "10 10 30 10 30 20 10 20 plane 0\n"}
    (root / "labelTxt").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for k, (name, text) in enumerate(lines.items()):
        image(root / "images" / f"{name}.png", *size, seed=100 + k)
        (root / "labelTxt" / f"{name}.txt").write_text(text)
    return root


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def tiff16(path: Path, bands: int = 1, w: int = 48, h: int = 32) -> Path:
    """A 16-bit TIFF with 1 (grey) or 4 (RGB + NIR) bands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 4000, w * h).reshape(h, w).astype(np.uint16)
    if bands == 1:
        Image.fromarray(ramp).save(path)
    else:
        arr = np.stack([ramp, ramp // 2, ramp // 3, ramp // 4], axis=-1)
        assert cv2.imwrite(str(path), cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA))
    return path


def exif_jpeg(path: Path, orientation: int = 6) -> Path:
    """An 80x40 stored JPEG, dark but for a bright square at stored x 60..70, y 5..15, tagged ``orientation``."""
    pixels = np.full((40, 80, 3), 30, np.uint8)
    pixels[5:15, 60:70] = 240
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def karpathy(root: Path, entries: list[dict], images: dict[str, int] | None = None) -> Path:
    """``root/dataset.json`` with ``entries`` and ``root/images/<name>`` for each name in ``images``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, seed in (images or {}).items():
        image(root / "images" / name, seed=seed)
    (root / "dataset.json").write_text(json.dumps({"images": entries, "dataset": "hostile"}))
    return root


def caption_entry(name: str, split: str = "train", text: str = "a harbour with ships.") -> dict:
    return {"filename": name, "split": split, "sentences": [{"raw": text}] * 5}


def coco(root: Path, images: list[dict], annotations: list[dict], files: list[str] = ()) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(files):
        image(root / "images" / name, seed=200 + k)
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "ship"}]}
    (root / "annotations" / "instances.json").write_text(json.dumps(data))
    return root


def box(i: int, image_id, bbox=(5, 5, 20, 20)) -> dict:
    return {"id": i, "image_id": image_id, "category_id": 1, "bbox": list(bbox)}


def tar_of(path: Path, members: dict[str, bytes]) -> Path:
    """A tar holding ``members`` (name -> bytes)."""
    import io

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
