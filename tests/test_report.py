"""report.html / report.png from fake build results: escaping, tables, thumbnails, missing files, empty builds."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shards.build_config import ReportConfig
from shards.report import annotate, class_palette, load_font, write_html_report

EVIL_CAPTION = 'a <script>alert("x")</script> & a ship'


def random_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def fake_counts(balanced: bool = True) -> dict:
    dota = {"read": 6, "written": 3, "skipped": {"corrupt_image": 1}, "duplicates": 1, "contaminated": 1}
    coco = {"read": 4, "written": 3, "skipped": {"too_small": 1}, "duplicates": 0, "contaminated": 0}
    counts = {
        "read": 10, "written": 6, "skipped": {"corrupt_image": 1, "too_small": 1}, "duplicates": 1, "contaminated": 1,
        "sources": {"dota": dota, "coco": coco},
        "objects": {"read": 40, "kept": 35, "clipped": 4, "dropped": {"degenerate": 3, "unknown_class": 2}},
        "shards": 1, "eval_images": 20,
        "timing": {"hash_pass_seconds": 1.5, "images_per_s": 6.67, "seconds": 3.2},
        "issues_examples": [
            {"reason": "corrupt_image", "message": "/data/dota/P0003.png: cannot decode image (<bad> & worse)"},
            {"reason": "degenerate", "message": "labelTxt/P0001.txt:4: box narrower than 1 px"},
        ],
    }
    if not balanced:
        counts["written"] = 7
        counts["sources"]["coco"]["read"] = 5
    return counts


def fake_samples(rng: np.random.Generator) -> list[dict]:
    samples = []
    for i, (w, h) in enumerate([(320, 240), (200, 200), (160, 400), (64, 48)]):
        objects = [{"class": "ship", "hbb": [5, 5, w / 2, h / 2]}, {"class": "storage tank", "hbb": [w / 3, h / 3, w - 2, h - 2]}]
        if i == 0:
            objects.append({"class": "plane", "hbb": [10, 10, 60, 50], "obb": [10, 30, 35, 10, 60, 30, 35, 50]})
            objects.append({"class": "broken", "hbb": [1, 2]})  # malformed: skipped, not fatal
        captions = [EVIL_CAPTION if i == 0 else f"caption {i}.{j} of an aerial image" for j in range(5)]
        samples.append({"key": f"src{i % 2}_{i:06d}", "source": "dota" if i % 2 == 0 else "coco",
                        "image": random_image(rng, w, h), "captions": captions, "objects": objects,
                        "path": f"/data/img_{i}.png"})
    return samples


@pytest.fixture
def inputs(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    originals = tmp_path / "originals"
    originals.mkdir()
    kept_path, train_path, eval_path = originals / "kept.png", originals / "train.jpg", originals / "eval.jpg"
    random_image(rng, 120, 90).save(kept_path)
    random_image(rng, 100, 100).save(train_path)
    random_image(rng, 100, 100).save(eval_path)
    ref = {"key": "dota_000009", "source": "dota", "path": str(originals / "gone <&>.png"), "phash": "00ff00ff00ff00ff"}
    duplicates = [{"removed": ref, "matched": {"key": "dota_000001", "source": "dota", "path": str(kept_path),
                                             "phash": "00ff00ff00ff00fe"}, "distance": 1}]
    contaminated = [{"removed": {"key": "coco_000002", "source": "coco", "path": str(train_path), "phash": "0"},
                     "matched": {"path": str(eval_path), "phash": "1"}, "distance": 2,
                     "all_matches": [{"path": str(eval_path), "distance": 2}], "n_matches": 1}]
    return {"counts": fake_counts(), "samples": fake_samples(rng), "duplicates": duplicates, "contaminated": contaminated,
            "class_counts": {"ship": 12, "storage tank": 7, "plane": 3, "a<b>&c": 1}, "cfg": ReportConfig()}


def write(out: Path, inputs: dict) -> tuple[dict, str]:
    paths = write_html_report(out, inputs["counts"], inputs["samples"], inputs["duplicates"], inputs["contaminated"],
                              inputs["class_counts"], inputs["cfg"])
    return paths, paths["html"].read_text(encoding="utf-8")


def test_writes_both_files(tmp_path, inputs):
    paths, _ = write(tmp_path / "out", inputs)
    assert paths == {"html": tmp_path / "out" / "report.html", "png": tmp_path / "out" / "report.png"}
    assert paths["html"].stat().st_size > 0
    with Image.open(paths["png"]) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        assert 1200 <= png.width <= 1600 and 300 <= png.height <= 3000


def test_text_is_escaped_and_self_contained(tmp_path, inputs):
    _, page = write(tmp_path, inputs)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; a ship" in page
    assert "(&lt;bad&gt; &amp; worse)" in page  # issue message
    assert "a&lt;b&gt;&amp;c" in page  # class name in the histogram
    assert "http://" not in page and "https://" not in page
    assert all(src.startswith("data:image/jpeg;base64,") for src in re.findall(r'<img [^>]*src="([^"]+)"', page))


def test_per_source_table_and_balance_ok(tmp_path, inputs):
    _, page = write(tmp_path, inputs)
    rows = re.findall(r'<tr class="source">(.*?)</tr>', page)
    assert len(rows) == 2
    assert '<td class="name">dota</td>' in rows[0] and '<td class="name">coco</td>' in rows[1]
    assert all(">OK<" in row for row in rows)
    assert "skipped: corrupt_image" in page and "skipped: too_small" in page
    assert "MISMATCH" not in page
    assert "Balance:" in page


def test_balance_mismatch_is_shown(tmp_path, inputs):
    inputs["counts"] = fake_counts(balanced=False)
    _, page = write(tmp_path, inputs)
    assert re.search(r"Balance:.*MISMATCH", page)
    rows = dict(re.findall(r'<tr class="source"><td class="name">(\w+)</td>(.*?)</tr>', page))
    assert "MISMATCH" in rows["coco"] and "MISMATCH" not in rows["dota"]
    assert re.search(r"per source: .*MISMATCH.* in coco", page)


def test_per_source_mismatch_is_flagged_even_when_the_total_balances(tmp_path, inputs):
    inputs["counts"]["sources"]["dota"]["written"] = 2
    _, page = write(tmp_path, inputs)
    overall = re.search(r'<tr class="total">.*?</tr>', page).group(0)
    assert ">OK<" in overall
    assert re.search(r"per source: .*MISMATCH.* in dota", page)


def test_one_thumbnail_per_sample_with_captions(tmp_path, inputs):
    _, page = write(tmp_path, inputs)
    assert page.count('<img class="sample"') == len(inputs["samples"])
    assert page.count('<img class="pair"') == 4  # one duplicate pair + one contamination pair
    for sample in inputs["samples"][1:]:
        assert sample["key"] in page and sample["captions"][4] in page
    assert "storage tank" in page and "Objects" in page and "degenerate" in page


def test_missing_duplicate_file_gets_placeholder(tmp_path, inputs):
    _, page = write(tmp_path, inputs)
    assert 'class="missing"' in page
    assert "gone &lt;&amp;&gt;.png" in page
    assert page.count('class="missing"') == 1  # the kept image and the contamination pair opened fine


def test_max_pairs_limits_pairs(tmp_path, inputs):
    inputs["duplicates"] = inputs["duplicates"] * 5
    inputs["cfg"] = ReportConfig(grid_samples=24, max_pairs=2)
    _, page = write(tmp_path, inputs)
    assert "2 of 5 pairs shown" in page
    assert page.count('<img class="pair"') == 2 * 2 + 2


def test_empty_build_still_writes_a_report(tmp_path):
    counts = {"read": 0, "written": 0, "skipped": {}, "duplicates": 0, "contaminated": 0, "sources": {}}
    paths = write_html_report(tmp_path, counts, [], [], [], {}, ReportConfig())
    page = paths["html"].read_text(encoding="utf-8")
    assert "No samples were written" in page and "<img" not in page and ">OK<" in page
    with Image.open(paths["png"]) as png:
        assert png.mode == "RGB" and png.width >= 1200


def test_minimal_counts_are_tolerated(tmp_path):
    paths = write_html_report(tmp_path, {"read": 3, "written": 3}, [], [], [], {"ship": 2}, ReportConfig())
    assert ">OK<" in paths["html"].read_text(encoding="utf-8")


def test_boxes_are_drawn_scaled_in_class_colours():
    image = Image.new("RGB", (400, 200), (0, 0, 0))
    palette = class_palette(["ship"])
    thumb = annotate(image, [{"class": "ship", "hbb": [200, 100, 399, 199]}], 100, palette, load_font(11))
    assert thumb.size == (100, 50)
    px = np.asarray(thumb)
    assert tuple(px[49, 75]) == palette["ship"]  # bottom edge of the box, scaled by 1/4
    assert tuple(px[10, 10]) == (0, 0, 0)


def test_objects_take_the_histogram_colour_of_their_display_name():
    image = Image.new("RGB", (100, 100), (0, 0, 0))
    palette = class_palette(["large vehicle", "small vehicle"])  # class_counts use display names
    thumb = annotate(image, [{"class": "small-vehicle", "hbb": [20, 20, 80, 80]}], 100, palette, load_font(11))
    assert tuple(np.asarray(thumb)[79, 50]) == palette["small vehicle"]
