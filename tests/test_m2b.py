"""M2B: boxes from hand-made masks with known answers, and from the real LoveDA masks."""

from __future__ import annotations

import numpy as np
import pytest

from shards.build_config import BuildConfig
from shards.m2b import boxes_from_mask, unmapped_values
from shards.readers import read_records
from shards.readers.masks import load_mask


def boxes(mask: np.ndarray, classes: dict, ignore=(), min_area: int = 1) -> list[tuple[str, tuple]]:
    return [(o.cls, o.hbb) for o in boxes_from_mask(mask, classes, list(ignore), min_area)]


def test_two_blobs_give_two_exact_boxes():
    mask = np.zeros((20, 20), np.uint8)
    mask[10:15, 12:18] = 2  # rows y 10..14, columns x 12..17
    mask[2:5, 3:8] = 2
    assert boxes(mask, {2: "building"}) == [("building", (3.0, 2.0, 8.0, 5.0)), ("building", (12.0, 10.0, 18.0, 15.0))]


def test_ring_gives_one_box_holes_ignored():
    mask = np.zeros((16, 16), np.uint8)
    mask[2:12, 3:13] = 1
    mask[5:9, 6:10] = 0
    assert boxes(mask, {1: "lake"}) == [("lake", (3.0, 2.0, 13.0, 12.0))]


def test_diagonal_touching_pixels_are_one_region():
    # OpenCV's border following is 8-connected: corner-touching pixels form one region, one box
    mask = np.zeros((6, 6), np.uint8)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = 4
    assert boxes(mask, {4: "road"}) == [("road", (1.0, 1.0, 4.0, 4.0))]


def test_min_area_is_on_the_box():
    mask = np.zeros((10, 10), np.uint8)
    mask[0:3, 0:3] = 1  # 3x3 = 9 px box
    assert boxes(mask, {1: "tree"}, min_area=9) == [("tree", (0.0, 0.0, 3.0, 3.0))]
    assert boxes(mask, {1: "tree"}, min_area=10) == []


def test_order_ignore_and_unmapped_values():
    mask = np.zeros((10, 10), np.uint8)
    mask[6:8, 0:2] = 3
    mask[0:2, 5:7] = 3
    mask[4:6, 4:6] = 2
    mask[8:10, 8:10] = 1
    mask[0:1, 0:1] = 9
    classes = {1: "background", 2: "building", 3: "road"}
    assert boxes(mask, classes, ignore=["Background"]) == [
        ("building", (4.0, 4.0, 6.0, 6.0)), ("road", (5.0, 0.0, 7.0, 2.0)), ("road", (0.0, 6.0, 2.0, 8.0))]
    assert unmapped_values(mask, classes) == {0, 9}


def test_rgb_palette_mask():
    mask = np.zeros((8, 10, 3), np.uint8)
    mask[1:3, 1:4] = (255, 0, 0)
    mask[4:8, 6:10] = (0, 255, 0)
    mask[0, 9] = (1, 2, 3)
    classes = {(255, 0, 0): "car", (0, 255, 0): "tree", (0, 0, 0): "clutter"}
    assert boxes(mask, classes, ignore=["clutter"]) == [("tree", (6.0, 4.0, 10.0, 8.0)), ("car", (1.0, 1.0, 4.0, 3.0))]
    assert unmapped_values(mask, classes) == {(1, 2, 3)}


def test_empty_masks_give_no_boxes():
    assert boxes(np.zeros((8, 8), np.uint8), {1: "building"}) == []
    assert boxes(np.zeros((0, 0), np.uint8), {1: "building"}) == []
    with pytest.raises(ValueError, match="shape"):
        boxes_from_mask(np.zeros((2, 2, 2), np.uint8), {}, [], 1)


def test_real_loveda_masks(shared_data):
    cfg = BuildConfig()
    seen = set()
    for record in read_records("mask", shared_data / "segmentation/loveda", "loveda", cfg):
        mask = load_mask(record.mask_path)
        height, width = mask.shape
        objects = boxes_from_mask(mask, record.mask_classes, cfg.masks.ignore, cfg.masks.min_area)
        assert objects
        for obj in objects:
            x1, y1, x2, y2 = obj.hbb
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            assert (x2 - x1) * (y2 - y1) >= cfg.masks.min_area
        seen |= {o.cls for o in objects}
        assert unmapped_values(mask, record.mask_classes) <= {0}
    assert "background" not in seen and {"building", "road"} <= seen
