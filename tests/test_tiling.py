"""Tiling large scenes (tile.*): DOTA_devkit's grid, objects clipped and kept by min_visible (checked against a
brute-force shapely clip), masks tiled before M2B, the too_large path, windowed TIFF reading, split integrity."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image
from shapely.geometry import Polygon, box as shapely_box

from rs_common.config import ConfigError
from shards.build_config import BuildConfig, TileConfig
from shards.cli import main as build_main
from shards.readers import read_records
from shards.scene_reader import WindowedTiff
from shards.tiling import clip_polygon, polygon_area, tile_grid
from synthetic.large_scene import write_dota_scene


def build(out: Path, *args: str) -> dict:
    assert build_main([*args, "--output", str(out), "--workers", "0", "--no-progress"]) == 0
    return json.loads((out / "report.json").read_text())


def balanced(c: dict) -> bool:
    return c["read"] == c["written"] + sum(c["skipped"].values()) + c["duplicates"] + c["contaminated"]


def check_counts(report: dict) -> None:
    scenes, objects = report["scenes"], report["objects"]
    assert balanced(report) and balanced(scenes["tiles"])
    assert scenes["read"] == scenes["whole"] + scenes["tiled"] + sum(scenes["skipped"].values())
    assert objects["read"] == objects["kept"] + sum(objects["dropped"].values())


def shard_tiles(out: Path) -> dict[str, dict]:
    """key -> sample json of every sample in the shards."""
    metas = {}
    for tar in sorted(out.glob("shard-*.tar")):
        with tarfile.open(tar) as tf:
            for member in tf.getmembers():
                if member.name.endswith(".json"):
                    metas[member.name[:-5]] = json.loads(tf.extractfile(member).read())
    return metas


def devkit_starts(length: int, size: int, overlap: int) -> list[int]:
    """ImgSplit's loop, written out: step size - overlap, the last start moved back to end on the border."""
    starts, left = [], 0
    while left < length:
        if left + size >= length:
            left = max(length - size, 0)
        starts.append(left)
        if left + size >= length:
            break
        left += size - overlap
    return starts


def expected_objects(polys: list[tuple[str, np.ndarray]], tile: tuple[int, int, int, int], min_visible: float) -> list[tuple]:
    """Brute force: shapely intersection of every object with the tile; kept when inside area / area >= min_visible."""
    x0, y0, x1, y1 = tile
    window = shapely_box(x0, y0, x1, y1)
    kept = []
    for cls, poly in polys:
        shape = Polygon(poly).convex_hull  # the product's object polygon (DOTA has self-crossing quads)
        if shape.area <= 0:
            continue
        inter = shape.intersection(window)
        if inter.area > 0 and inter.area / shape.area >= min_visible - 1e-9:
            bx0, by0, bx1, by1 = inter.bounds
            kept.append((cls, bx0 - x0, by0 - y0, bx1 - x0, by1 - y0, inter))
    return sorted(kept, key=lambda k: k[:5])


def check_tiles_against_brute_force(out: Path, polys_by_scene: dict[str, list], size: int, overlap: int, min_visible: float = 0.7):
    metas = [m for m in shard_tiles(out).values() if "tile" in m]
    assert metas
    for meta in metas:
        scene = meta["scene"]
        tile = tuple(meta["tile"])
        assert tile in tile_grid(scene["width"], scene["height"], size, overlap)
        assert (meta["orig_width"], meta["orig_height"]) == (tile[2] - tile[0], tile[3] - tile[1])
        want = expected_objects(polys_by_scene[scene["rel_path"]], tile, min_visible)
        got = [(o["class"], *o["hbb"]) for o in meta["objects"]]
        assert len(got) == len(want), (meta["key"], got, [w[:5] for w in want])
        unmatched = list(want)
        for g in got:  # each kept box is the bounds of one brute-force clip (json keeps 2 decimals)
            match = next(w for w in unmatched if w[0] == g[0] and np.allclose(g[1:], w[1:5], atol=0.011))
            unmatched.remove(match)
        for obj in meta["objects"]:  # an oriented box stays oriented and covers the clipped polygon
            assert len(obj["obb"]) == 8
            local = [(x + tile[0], y + tile[1]) for x, y in np.reshape(obj["obb"], (4, 2))]
            assert any(Polygon(local).convex_hull.buffer(0.05).contains(w[5]) for w in want if w[0] == obj["class"])
    return metas


# ---------------------------------------------------------------- grid and clipping rules


@pytest.mark.parametrize("length,size,overlap", [(712, 256, 64), (557, 256, 64), (8192, 1024, 200), (1024, 1024, 200),
                                                 (1025, 1024, 200), (100, 256, 64), (2472, 1024, 200)])
def test_grid_is_the_devkit_rule(length, size, overlap):
    grid = tile_grid(length, 50, size, overlap)
    assert [b[0] for b in grid] == devkit_starts(length, size, overlap)
    assert grid[-1][2] == length  # the last tile ends on the border
    assert all(b[2] - b[0] == min(size, length) for b in grid)  # whole tiles; a short side is one tile, not padded


def test_p1888_grid():
    xs = sorted({b[0] for b in tile_grid(712, 557, 256, 64)})
    ys = sorted({b[1] for b in tile_grid(712, 557, 256, 64)})
    assert xs == [0, 192, 384, 456] and ys == [0, 192, 301]


def test_polygon_clip_matches_shapely():
    rng = np.random.default_rng(0)
    for _ in range(300):
        centre = rng.uniform(-20, 120, 2)
        angle, w, h = rng.uniform(0, np.pi), rng.uniform(1, 60), rng.uniform(1, 60)
        c, s = np.cos(angle), np.sin(angle)
        poly = np.array([(-w, -h), (w, -h), (w, h), (-w, h)]) / 2 @ np.array([[c, s], [-s, c]]) + centre
        clipped = clip_polygon(poly, (0, 0, 100, 80))
        want = Polygon(poly).intersection(shapely_box(0, 0, 100, 80)).area
        assert polygon_area(clipped) == pytest.approx(want, abs=1e-6)


def test_tile_config_checks():
    with pytest.raises(ConfigError, match="tile.overlap"):
        TileConfig(size=256, overlap=256).validate()
    with pytest.raises(ConfigError, match="min_visible"):
        TileConfig(min_visible=0).validate()
    with pytest.raises(ConfigError, match="too_large"):
        TileConfig(too_large="drop").validate()


# ---------------------------------------------------------------- builds


def dota_polys(root: Path, source: str) -> dict[str, list]:
    """rel_path -> [(class, (4, 2) polygon)] as the DOTA reader yields them (class names resolved)."""
    out = {}
    for record in read_records("dota", root, source, BuildConfig()):
        if hasattr(record, "rel_path"):
            out[record.rel_path] = [(o.cls, np.reshape(o.obb, (4, 2))) for o in record.objects]
    return out


def test_shared_dota_scenes_tiled(shared_data, tmp_path):
    dota = shared_data / "detection/dota"
    report = build(tmp_path / "o", "--input", f"dota:{dota}", "--tile.size", "256", "--tile.overlap", "64")
    check_counts(report)
    metas = check_tiles_against_brute_force(tmp_path / "o", dota_polys(dota, "dota"), 256, 64)
    p1888 = [m for m in metas if m["scene"]["rel_path"].endswith("P1888.png")]
    assert p1888 and all(m["scene"]["width"] == 712 and m["scene"]["height"] == 557 for m in p1888)
    assert report["objects"]["dropped"].get("tile_partial_object", 0) > 0
    sizes = {m["scene"]["rel_path"]: (m["scene"]["width"], m["scene"]["height"]) for m in metas}
    tiles = report["scenes"]["tiles"]
    assert report["scenes"]["tiled"] == len(sizes)
    assert tiles["read"] == sum(len(tile_grid(w, h, 256, 64)) for w, h in sizes.values())  # every grid tile, written or counted
    assert report["read"] == tiles["read"] + report["scenes"]["whole"] + sum(report["scenes"]["skipped"].values())


def test_large_generated_scene(tmp_path):
    """An 8192 x 8192 PNG (blocky background, ~1 MB) with objects across every tile border: ~4 s to write, ~4 s to tile."""
    root = tmp_path / "big"
    polys = write_dota_scene(root, 8192, tile=1024, overlap=200)
    report = build(tmp_path / "o", "--input", f"dota:{root}", "--tile.size", "1024", "--tile.overlap", "200")
    check_counts(report)
    assert report["scenes"]["tiled"] == 1 and report["scenes"]["tiles"]["read"] == len(tile_grid(8192, 8192, 1024, 200)) == 100
    metas = check_tiles_against_brute_force(tmp_path / "o", {"images/P9000.png": polys}, 1024, 200)
    assert sum(1 for m in metas for o in m["objects"]) == report["objects"]["kept"]
    assert report["objects"]["clipped"] > 0 and report["objects"]["dropped"]["tile_partial_object"] > 0
    assert all(m["key"].endswith(f"__{m['tile'][0]}_{m['tile'][1]}") for m in metas)


def write_mask_scene(root: Path) -> np.ndarray:
    (root / "img_dir").mkdir(parents=True)
    (root / "ann_dir").mkdir(parents=True)
    rng = np.random.default_rng(1)
    mask = np.ones((500, 700), np.uint8)  # LoveDA 1 = background
    for _ in range(25):
        x, y = rng.integers(0, 680), rng.integers(0, 480)
        mask[y:y + rng.integers(10, 90), x:x + rng.integers(10, 90)] = rng.integers(2, 8)
    image = np.dstack([mask * 30] * 3).astype(np.uint8)
    Image.fromarray(image).save(root / "img_dir/scene.png")
    Image.fromarray(mask).save(root / "ann_dir/scene.png")
    return mask


def test_mask_scene_tiled_before_m2b(tmp_path):
    mask = write_mask_scene(tmp_path / "masks")
    report = build(tmp_path / "o", "--input", f"mask:{tmp_path / 'masks'}", "--tile.size", "256", "--tile.overlap", "64",
                   "--masks.min-area", "1")
    check_counts(report)
    metas = list(shard_tiles(tmp_path / "o").values())
    assert report["scenes"]["tiled"] == 1 and len(metas) == report["written"] > 1
    names = {2: "building", 3: "road", 4: "water", 5: "barren", 6: "forest", 7: "agriculture"}
    for meta in metas:
        x0, y0, x1, y1 = meta["tile"]
        part = mask[y0:y1, x0:x1]
        want = []
        for value, name in names.items():  # brute force: 8-connected components of each class inside the tile
            n, _, stats, _ = cv2.connectedComponentsWithStats((part == value).astype(np.uint8), connectivity=8)
            want += [(name, float(s[0]), float(s[1]), float(s[0] + s[2]), float(s[1] + s[3])) for s in stats[1:n]]
        got = [(o["class"], *o["hbb"]) for o in meta["objects"]]
        assert sorted(got) == sorted(want), meta["tile"]


def test_too_large_is_tiled_by_default(shared_data, tmp_path):
    dota = shared_data / "detection/dota"
    small = ("--image.max-pixels", "300000", "--tile.too-large-size", "256", "--tile.overlap", "64")  # P1888: 396k px
    report = build(tmp_path / "tiled", "--input", f"dota:{dota}", *small)
    check_counts(report)
    assert "too_large" not in report["skipped"]
    assert any(m["scene"]["rel_path"].endswith("P1888.png") for m in shard_tiles(tmp_path / "tiled").values() if "scene" in m)
    report = build(tmp_path / "skip", "--input", f"dota:{dota}", *small, "--tile.too-large", "skip")
    assert report["skipped"].get("too_large", 0) >= 1 and report["scenes"]["tiled"] == 0
    report = build(tmp_path / "whole", "--input", f"dota:{dota}", "--tile.size", "1024")  # all fit in one tile
    assert report["scenes"]["tiled"] == 0 and report["scenes"]["whole"] == report["written"]


# ---------------------------------------------------------------- windowed TIFF


@pytest.mark.parametrize("kwargs", [
    dict(tile=(256, 256), photometric="rgb"),
    dict(tile=(128, 256), photometric="rgb", compression="zlib"),
    dict(rowsperstrip=37, photometric="rgb", compression="zlib"),
    dict(tile=(256, 256), photometric="minisblack", planarconfig="separate", dtype=np.uint16),
])
def test_windowed_tiff_reads_the_window(tmp_path, kwargs):
    dtype = kwargs.pop("dtype", np.uint8)
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255 if dtype == np.uint8 else 4000, size=(700, 900, 3)).astype(dtype)
    path = tmp_path / "x.tif"
    if kwargs.get("planarconfig") == "separate":
        tifffile.imwrite(path, np.moveaxis(array, -1, 0), **kwargs)
    else:
        tifffile.imwrite(path, array, **kwargs)
    assert WindowedTiff.usable(path)
    scene = WindowedTiff(path, BuildConfig().image)
    for box in [(0, 0, 256, 256), (300, 200, 556, 456), (644, 444, 900, 700), (10, 690, 900, 700)]:
        x0, y0, x1, y1 = box
        assert np.array_equal(scene.read_array(box), array[y0:y1, x0:x1])
    scene.close()


def test_tiff_scene_read_windowed_in_build(tmp_path, monkeypatch):
    root = tmp_path / "tif"
    polys = write_dota_scene(root, 3000, tile=512, overlap=128, ext=".tif")
    windows = []
    real = WindowedTiff.read_array

    def spy(self, box):
        windows.append(box)
        return real(self, box)

    def never(*args, **kwargs):
        raise AssertionError("the whole TIFF was decoded")

    monkeypatch.setattr(WindowedTiff, "read_array", spy)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", never)
    monkeypatch.setattr(tifffile.TiffFile, "asarray", never)
    report = build(tmp_path / "o", "--input", f"dota:{root}", "--tile.size", "512", "--tile.overlap", "128")
    check_counts(report)
    assert windows and all(b[2] - b[0] <= 512 and b[3] - b[1] <= 512 for b in windows)
    assert len(windows) == report["scenes"]["tiles"]["written"]  # only tiles with objects are decoded
    check_tiles_against_brute_force(tmp_path / "o", {"images/P9000.tif": polys}, 512, 128)
    monkeypatch.undo()
    image = tifffile.imread(root / "images/P9000.tif")
    with tarfile.open(tmp_path / "o/shard-000000.tar") as tf:
        name = next(n for n in tf.getnames() if n.endswith(".json"))
        meta = json.loads(tf.extractfile(name).read())
        tile = np.asarray(Image.open(tf.extractfile(name[:-5] + ".jpg")), dtype=np.int16)
    x0, y0, x1, y1 = meta["tile"]
    assert np.abs(tile - image[y0:y1, x0:x1]).mean() < 3  # the tile's pixels (JPEG)


# ---------------------------------------------------------------- split integrity


def test_scene_with_a_contaminated_tile_is_dropped_whole(tmp_path):
    root = tmp_path / "dota"
    write_dota_scene(root, 1500, tile=512, overlap=128, name="P9001")
    write_dota_scene(root, 1200, tile=512, overlap=128, seed=5, name="P9002")
    image = np.asarray(Image.open(root / "images/P9001.png"))
    x0, y0, x1, y1 = tile_grid(1500, 1500, 512, 128)[4]
    (tmp_path / "eval").mkdir()
    Image.fromarray(image[y0:y1, x0:x1]).save(tmp_path / "eval/crop.png")
    report = build(tmp_path / "o", "--input", f"dota:{root}", "--tile.size", "512", "--tile.overlap", "128",
                   "--dedup-against", str(tmp_path / "eval"))
    check_counts(report)
    assert report["contaminated"] == 1
    left = [m for m in shard_tiles(tmp_path / "o").values() if m["scene"]["rel_path"] == "images/P9001.png"]
    assert left == []  # no tile of the contaminated scene is written
    others = [m for m in shard_tiles(tmp_path / "o").values() if m["scene"]["rel_path"] == "images/P9002.png"]
    assert others and len(others) == report["written"]
    assert report["skipped"]["scene_contaminated"] >= 1
    issues = [json.loads(line) for line in (tmp_path / "o/issues.jsonl").read_text().splitlines()]
    dropped = [i for i in issues if i["reason"] == "scene_contaminated"]
    assert len(dropped) == report["skipped"]["scene_contaminated"]
    assert all("P9001" in i["key"] and "P9001" in i["message"] for i in dropped)
    contaminated = json.loads((tmp_path / "o/contaminated.json").read_text())
    assert len(contaminated) == 1 and contaminated[0]["distance"] == 0
    assert "P9001" in contaminated[0]["removed"]["key"] and contaminated[0]["removed"]["key"].endswith(f"__{x0}_{y0}")
