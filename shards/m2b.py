"""Mask-to-Box (M2B): one box per connected region of each class of a segmentation mask.

Following RemoteCLIP (arXiv 2306.11029, Sec. 3.2): for every class present, the binary mask of that
class goes through Suzuki-Abe border following (``cv2.findContours`` with ``RETR_EXTERNAL``, so only
outer borders: one contour per connected component, holes ignored) and each contour's bounding
rectangle is a box. OpenCV follows borders with 8-connectivity, so pixels that touch only at a corner
belong to one region and give one box. Boxes smaller than ``min_area`` pixels (w*h) are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import cv2
import numpy as np

from shards.record import ObjectAnn

MaskKey = int | tuple[int, int, int]


def mask_values(mask: np.ndarray) -> list[MaskKey]:
    """The distinct values of an index mask (ints) or colours of an RGB mask ((r, g, b) tuples), sorted."""
    if mask.ndim == 2:
        return [int(v) for v in np.unique(mask)]
    if mask.ndim == 3 and mask.shape[2] == 3:
        rgb = mask.reshape(-1, 3).astype(np.uint32)
        packed = np.unique((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2])  # far faster than unique(axis=0)
        return [(int(p >> 16), int((p >> 8) & 255), int(p & 255)) for p in packed]
    raise ValueError(f"a mask must be HxW (index) or HxWx3 (RGB), got shape {mask.shape}")


def binary_mask(mask: np.ndarray, value: MaskKey) -> np.ndarray:
    """uint8 0/1 image of the pixels equal to ``value``."""
    if mask.ndim == 2:
        return (mask == value).astype(np.uint8)
    return np.all(mask == np.asarray(value, dtype=mask.dtype), axis=2).astype(np.uint8)


def region_boxes(binary: np.ndarray, min_area: int) -> list[tuple[int, int, int, int]]:
    """Bounding rectangles (x1, y1, x2, y2) of the outer contours, those of at least ``min_area`` px."""
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        if w * h >= min_area:
            boxes.append((x, y, x + w, y + h))
    return sorted(boxes, key=lambda b: (b[1], b[0], b[3], b[2]))


def boxes_from_mask(mask: np.ndarray, classes: Mapping, ignore: Iterable[str], min_area: int) -> list[ObjectAnn]:
    """Boxes of every mapped, not ignored class in ``mask``, by class value then top-left (y, x).

    ``classes`` maps mask values to names (int keys for index masks, (r, g, b) tuples for RGB masks);
    values with no entry are skipped (see ``unmapped_values``). [] when nothing is left."""
    if mask.size == 0:
        return []
    ignored = {name.lower() for name in ignore}
    objects: list[ObjectAnn] = []
    for value in mask_values(mask):
        name = classes.get(value)
        if name is None or name.lower() in ignored:
            continue
        for box in region_boxes(binary_mask(mask, value), min_area):
            objects.append(ObjectAnn(cls=name, hbb=tuple(float(v) for v in box)))
    return objects


def unmapped_values(mask: np.ndarray, classes: Mapping) -> set[MaskKey]:
    """Values (or colours) present in the mask that ``classes`` has no name for, including no-data 0."""
    return {value for value in mask_values(mask) if value not in classes} if mask.size else set()
