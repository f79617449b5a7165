"""Stage two's pictures for reports and inference: 0-100 grid boxes drawn with the report kit's one routine.

GeoChat boxes (:mod:`vlm_finetune.boxes`) live on a 0-100 grid, possibly rotated; :func:`draw_grid_boxes` turns
them into :class:`rs_common.report_kit.Box` polygons and draws them with :func:`rs_common.report_kit.draw_boxes`,
so boxes look the same in every report of the toolkit.
"""

from __future__ import annotations

from pathlib import Path

from rs_common.report_kit import Box as DrawnBox
from rs_common.report_kit import draw_boxes
from vlm_finetune.boxes import box_to_polygon

GREY = (200, 200, 200)


def draw_grid_boxes(img, boxes, colour=(230, 0, 0), width: int = 2):
    """Draw 0-100-grid boxes (rotated ones as polygons) onto a PIL image in place; returns the image."""
    shapes = [DrawnBox(polygon=tuple(box_to_polygon(b)), colour=tuple(colour), width=width) for b in boxes or []]
    return draw_boxes(img, shapes, scale=(img.size[0] / 100.0, img.size[1] / 100.0))


def thumbnail(path: Path | None, size: int):
    """The image at ``path`` as RGB, shrunk to fit ``size`` x ``size``; a grey square when it is missing or does
    not open (a report never fails on one bad file)."""
    from PIL import Image

    img = None
    if path is not None and Path(path).is_file():
        try:
            img = Image.open(path).convert("RGB")
        except OSError:
            img = None
    if img is None:
        img = Image.new("RGB", (size, size), GREY)
    img.thumbnail((size, size))
    return img
