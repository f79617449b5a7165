"""Planted faults the build must find: near-duplicates across and within sources, test-set contamination, and
undecodable image bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from synthetic.drawing import encode, read_rgb
from synthetic.formats import COCO_IDS, Written, coco_file_name

CORRUPT_JPEG = b"\xff\xd8 not a jpeg"  # a JPEG's first two bytes and then nothing any decoder accepts


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
