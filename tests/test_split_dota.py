"""rs-split-dota (shards.split_dota): DOTA_devkit's ImgSplit on shards.tiling's grid and clipping."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launch.split_dota import main
from rs_common.config import make_config
from rs_common.formats.dota import read_label_file
from shards.build_config import BuildConfig, ClassConfig
from shards.readers import read_records
from shards.split_dota import SplitDotaConfig, SplitError, split_dota
from shards.tiling import tile_grid, tile_objects
from synthetic.large_scene import write_dota_scene

NAME = re.compile(r"(?P<stem>.+)__1__(?P<x>\d+)___(?P<y>\d+)")


def records(root: Path) -> dict:
    cfg = BuildConfig(classes=ClassConfig(check_known=False))
    return {Path(r.rel_path).stem: r for r in read_records("dota", root, "dota", cfg) if hasattr(r, "rel_path")}


def split(src: Path, out: Path, size: int, overlap: int, **more) -> dict:
    return split_dota(make_config(SplitDotaConfig, {"input": str(src), "output": str(out), "tile.size": size,
                                                    "tile.overlap": overlap, **more}))


def check_balance(summary: dict) -> None:
    objs, tiles = summary["objects"], summary["tiles"]
    assert objs["read"] == objs["kept"] + sum(objs["dropped"].values())
    assert tiles["read"] == tiles["written"] + tiles["empty_not_written"]


def check_against_tiling(src: Path, out: Path, stem: str, size: int, overlap: int, min_visible: float = 0.7) -> int:
    """Every tile of scene ``stem``: written iff shards.tiling keeps an object in it, with the same boxes (as written
    and as read back by the dota reader) and the scene's pixels. Returns the number of tiles written."""
    scene = records(src)[stem]
    pixels = np.asarray(Image.open(scene.image_path).convert("RGB"))
    back = records(out)
    written = 0
    for box in tile_grid(pixels.shape[1], pixels.shape[0], size, overlap):
        expected, _ = tile_objects(scene.objects, box, min_visible)
        name = f"{stem}__1__{box[0]}___{box[1]}"
        label = out / "labelTxt" / f"{name}.txt"
        assert label.exists() == bool(expected), name
        if not expected:
            continue
        written += 1
        lines, problems = read_label_file(label)
        assert not problems and [o.cls for o in lines] == [o.cls for o in expected]
        assert np.allclose([o.coords for o in lines], [o.obb for o in expected], atol=0.006)
        assert [o.difficult for o in lines] == [o.difficult for o in expected]
        again = back[name]  # the round trip through shards' dota reader
        assert not again.issues and len(again.objects) == len(expected)
        assert np.allclose([o.obb for o in again.objects], [o.obb for o in expected], atol=0.006)
        assert again.meta == scene.meta
        tile = np.asarray(Image.open(out / "images" / f"{name}.png").convert("RGB"))
        assert np.array_equal(tile, pixels[box[1]:box[3], box[0]:box[2]])
    return written


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scene") / "dota"
    write_dota_scene(root, 1500, tile=512, overlap=128)
    return root


def test_tiles_equal_shards_tiling(scene, tmp_path):
    summary = split(scene, tmp_path / "out", 512, 128)
    check_balance(summary)
    assert check_against_tiling(scene, tmp_path / "out", "P9000", 512, 128) == summary["tiles"]["written"] > 1
    assert summary["scenes"] == {"read": 1, "split": 1, "skipped": {}}
    assert summary["objects"]["in_tiles"]["clipped"] > 0 and summary["objects"]["in_tiles"]["partial"] > 0
    assert json.loads((tmp_path / "out" / "split_dota.json").read_text()) == summary
    # the devkit's names, one per grid tile, labels beside images; the header lines copied
    names = sorted(p.stem for p in (tmp_path / "out" / "images").iterdir())
    assert names == sorted(p.stem for p in (tmp_path / "out" / "labelTxt").iterdir())
    assert all(NAME.fullmatch(n) and NAME.fullmatch(n)["stem"] == "P9000" for n in names)
    assert "P9000__1__0___384" in names and "P9000__1__988___988" in names
    assert (tmp_path / "out" / "labelTxt" / "P9000__1__0___0.txt").read_text().startswith("imagesource:synthetic\ngsd:0.5\n")


def test_min_visible_and_windowed_tiff(tmp_path):
    root = tmp_path / "tif"
    write_dota_scene(root, 1500, tile=512, overlap=128, ext=".tif")
    summary = split(root, tmp_path / "out", 512, 128, **{"tile.min_visible": 0.3})
    check_balance(summary)
    check_against_tiling(root, tmp_path / "out", "P9000", 512, 128, min_visible=0.3)


def test_shared_p1888(shared_data, tmp_path):
    src = shared_data / "detection/dota"
    summary = split(src, tmp_path / "out", 256, 64)
    check_balance(summary)
    assert summary["scenes"]["split"] == summary["scenes"]["read"] == 3
    assert summary["objects"]["in_tiles"]["partial"] > 0  # cut at some tile borders (whole in a neighbour)
    assert check_against_tiling(src, tmp_path / "out", "P1888", 256, 64) > 0
    assert (tmp_path / "out" / "labelTxt" / "P1888__1__0___0.txt").read_text().startswith("imagesource:GoogleEarth\ngsd:")


def corner_scene(root: Path) -> Path:
    """A 600 x 600 scene with one object near the top-left corner: most of its 256/64 tiles are empty."""
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    Image.new("RGB", (600, 600), (90, 120, 60)).save(root / "images" / "P0001.png")
    (root / "labelTxt" / "P0001.txt").write_text("imagesource:x\ngsd:null\n10 10 40 10 40 30 10 30 plane 1\n"
                                                 "700 700 720 700 720 720 700 720 ship 0\n1 2 3 plane\n")
    return root


def test_empty_tiles_and_rerun(tmp_path):
    src, out = corner_scene(tmp_path / "in"), tmp_path / "out"
    summary = split(src, out, 256, 64, keep_empty=True)
    check_balance(summary)
    assert summary["tiles"] == {"read": 9, "written": 9, "written_empty": 8, "empty_not_written": 0}
    assert summary["objects"]["dropped"] == {"box_outside_image": 1, "malformed_annotation": 1,
                                             "tile_partial_object": 0}
    assert (out / "labelTxt" / "P0001__1__0___0.txt").read_text() == "imagesource:x\ngsd:null\n10 10 40 10 40 30 10 30 plane 1\n"
    assert (out / "labelTxt" / "P0001__1__344___344.txt").read_text() == "imagesource:x\ngsd:null\n"
    summary = split(src, out, 256, 64)  # a rerun into its own output replaces what it wrote
    assert summary["tiles"] == {"read": 9, "written": 1, "written_empty": 0, "empty_not_written": 8}
    assert sorted(p.name for p in (out / "images").iterdir()) == ["P0001__1__0___0.png"]


def test_refusals(tmp_path, capsys):
    src = corner_scene(tmp_path / "in")
    with pytest.raises(SplitError, match="outside the input folder"):
        split(src, src, 256, 64)
    with pytest.raises(SplitError, match="outside the input folder"):
        split(src, src / "tiles", 256, 64)
    with pytest.raises(SplitError, match="outside the input folder"):
        split(src, tmp_path, 256, 64)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SplitError, match="not empty and not written by rs-split-dota"):
        split(src, foreign, 256, 64)
    split(src, tmp_path / "ok", 256, 64)
    (tmp_path / "ok" / "images" / "photo.jpg").write_bytes(b"x")  # someone else's file in our folder: not ours to clear
    with pytest.raises(SplitError, match="not empty"):
        split(src, tmp_path / "ok", 256, 64)
    assert (foreign / "notes.txt").read_text() == "mine" and (tmp_path / "ok" / "images" / "photo.jpg").exists()
    capsys.readouterr()
    assert main(["--input", str(src), "--output", str(foreign), "--tile.size", "256", "--tile.overlap", "64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["--input", str(src), "--output", str(tmp_path / "x"), "--tile.size", "0"])


def test_cli_prints_one_json_line(tmp_path, capsys):
    src = corner_scene(tmp_path / "in")
    assert main(["--input", str(src), "--output", str(tmp_path / "o"), "--tile.size", "256", "--tile.overlap", "64",
                 "--tile.min-visible", "0.5"]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and json.loads(line)["tiles"]["written"] == 1
