"""Segmentation masks (LoveDA / mmsegmentation layouts) for M2B.

Layouts: ``ROOT/img_dir`` + ``ROOT/ann_dir`` (mmsegmentation, optionally with split folders such as
``train/``), ``ROOT/images`` + ``ROOT/masks``, or LoveDA's own ``images_png`` + ``masks_png``; such a
pair is also found in sub-folders (LoveDA ``Train/Urban``, ``Train/Rural``). Image and mask are paired
by relative path without the extension. The worker loads the mask (``load_mask``) and runs M2B; the
reader only pairs files and resolves ``masks.classes`` once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image

from rs_common.config import ConfigError
from rs_common.errors import LayoutError
from rs_common.files import absolute, list_images, rel_posix, walk
from shards.build_config import BuildConfig
from shards.m2b import MaskKey
from shards.readers._common import index_by_rel_stem, record_issue, sort_records
from shards.record import Record

DIR_PAIRS = (("img_dir", "ann_dir"), ("images", "masks"), ("images_png", "masks_png"))

# LoveDA's labels; 0 is no-data and never a class.
LOVEDA_CLASSES: Mapping[int, str] = MappingProxyType({
    1: "background", 2: "building", 3: "road", 4: "water", 5: "barren", 6: "forest", 7: "agriculture",
})

INDEX_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "1")


def parse_mask_key(key: object) -> MaskKey:
    """A ``masks.classes`` key from YAML: 2, "2" -> 2; "255,0,0", "(255, 0, 0)", [255, 0, 0] -> (255, 0, 0)."""
    if isinstance(key, bool):
        raise ConfigError(f"masks.classes: key {key!r} is not a mask value")
    if isinstance(key, int):
        return key
    parts = list(key) if isinstance(key, (list, tuple)) else str(key).strip().strip("()[]").split(",")
    try:
        values = [int(str(p).strip()) for p in parts]
    except ValueError:
        raise ConfigError(f"masks.classes: key {key!r} must be an integer or 'r,g,b'") from None
    if len(values) == 1:
        return values[0]
    if len(values) == 3 and all(0 <= v <= 255 for v in values):
        return (values[0], values[1], values[2])
    raise ConfigError(f"masks.classes: key {key!r} must be an integer or 'r,g,b' with values 0..255")


def resolve_mask_classes(classes: Mapping) -> dict[MaskKey, str]:
    """``masks.classes`` with parsed keys; empty means LoveDA's map."""
    if not classes:
        return dict(LOVEDA_CLASSES)
    return {parse_mask_key(k): str(v) for k, v in classes.items()}


def load_mask(path: Path) -> np.ndarray:
    """A mask as a 2-D index array (L/P/I modes; P gives palette indices, not colours) or HxWx3 uint8 (RGB).

    Raises FileNotFoundError when absent, OSError/ValueError when it cannot be read or is no mask."""
    with Image.open(path) as image:
        image.load()
        if image.mode in INDEX_MODES:
            return np.asarray(image).astype(np.uint8) if image.mode == "1" else np.asarray(image)
        if image.mode == "LA":
            return np.asarray(image.getchannel("L"))
        if image.mode in ("RGB", "RGBA"):
            return np.asarray(image.convert("RGB"))
    raise ValueError(f"{path}: mask mode {image.mode!r} is neither an index (L/P/I) nor an RGB mask")


def find_pairs(root: Path) -> list[tuple[Path, Path]]:
    """Every (image folder, mask folder) pair at or under ``root``, sorted; a found pair is not searched."""
    if not root.is_dir():
        raise LayoutError(f"{root}: a mask dataset is a folder (img_dir/ + ann_dir/, ...), not a file")
    pairs: list[tuple[Path, Path]] = []
    for here, dirnames, _ in walk(root, hidden=False):
        found = [(here / img, here / ann) for img, ann in DIR_PAIRS if (here / img).is_dir() and (here / ann).is_dir()]
        pairs.extend(found[:1])
        if found:
            dirnames[:] = []
    if not pairs:
        layouts = ", ".join(f"{img}/ + {ann}/" for img, ann in DIR_PAIRS)
        raise LayoutError(f"{root}: no mask dataset found (expected {layouts})")
    return sorted(pairs)


def check_layout(root: Path) -> None:
    find_pairs(absolute(root))


def read(root: Path, source: str, cfg: BuildConfig) -> Iterator[Record]:
    root = absolute(root)
    mask_classes = resolve_mask_classes(cfg.masks.classes)
    records: list[Record] = []
    for image_dir, mask_dir in find_pairs(root):
        records.extend(pair_records(image_dir, mask_dir, root, source, mask_classes))
    yield from sort_records(records)


def pair_records(image_dir: Path, mask_dir: Path, root: Path, source: str, mask_classes: dict) -> list[Record]:
    """One record per image of the pair; a mask without its image still yields one (missing_image)."""
    images = index_by_rel_stem(list_images(image_dir, hidden=True), image_dir)
    masks = index_by_rel_stem(list_images(mask_dir, hidden=True), mask_dir)
    records = []
    for stem in sorted(images.keys() | masks.keys()):
        mask_path = masks.get(stem)
        image_path = images.get(stem) or image_dir / f"{stem}{mask_path.suffix}"
        record = Record(source=source, image_path=image_path, rel_path=rel_posix(image_path, root), split=split_of(stem))
        if mask_path is None:
            record.issues.append(record_issue("missing_annotation", image_path, None, f"no mask for it in {mask_dir}"))
        else:
            record.mask_path, record.mask_classes, record.origin = mask_path, dict(mask_classes), str(mask_path)
        records.append(record)
    return records


def split_of(stem: str) -> str | None:
    """mmsegmentation's split folder (``img_dir/train/x.png`` -> "train"), None for a flat folder."""
    head, sep, _ = stem.partition("/")
    return head if sep else None
