"""rs_common.report_kit: the page shell escapes and is self-contained; one box routine draws rectangles and polygons."""

from __future__ import annotations

import numpy as np
from PIL import Image

from rs_common import report_kit as kit


def test_page_shell_escapes_title_and_has_no_external_url():
    page = kit.html_page('a <b> & "c"', [kit.section("S", "<p>x</p>", note="1 < 2")], ".extra{}")
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and ".extra{}" in page
    assert "<title>a &lt;b&gt; &amp; &quot;c&quot;</title>" in page and "1 &lt; 2" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_img_tag_is_inline_jpeg():
    tag = kit.img_tag(Image.new("RGB", (8, 4)), alt="<k>", css_class="sample")
    assert tag.startswith('<img class="sample" src="data:image/jpeg;base64,') and 'width="8" height="4"' in tag
    assert 'alt="&lt;k&gt;"' in tag
    assert kit.jpeg_data_uri(Image.new("L", (2, 2)), quality=50).startswith("data:image/jpeg;base64,")


def test_draw_boxes_scales_rectangles_and_polygons():
    img = Image.new("RGB", (100, 100))
    boxes = [kit.Box(xyxy=(0, 0, 50, 50), colour=(255, 0, 0), width=1),  # 0-100 grid box on a 100 px image, scale 1
             kit.Box(polygon=((10, 60), (40, 60), (40, 90), (10, 90)), colour=(0, 255, 0), width=1)]
    kit.draw_boxes(img, boxes, scale=(2.0, 1.0))
    px = np.asarray(img)
    assert tuple(px[50, 50]) == (255, 0, 0)  # bottom edge of the rectangle, x scaled by 2
    assert tuple(px[60, 50]) == (0, 255, 0)  # top edge of the polygon
    assert tuple(px[75, 50]) == (0, 0, 0)


def test_malformed_boxes_are_skipped_and_labels_drawn():
    assert kit.Box.from_flat([1, 2]) is None and kit.Box.from_flat(None, [1, 2, 3]) is None
    assert kit.Box.from_flat([0, 0, float("nan"), 1]) is None
    img = Image.new("RGB", (64, 64))
    kit.draw_boxes(img, [kit.Box.from_flat([10, 20, 50, 60], colour=(255, 255, 0), label="ship"), None])
    assert (np.asarray(img)[:20] == (255, 255, 0)).all(axis=-1).any()  # the label tag above the box
