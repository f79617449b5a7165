"""Hostile inputs for ``launch/build_shards.py`` (stage 0)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.hostile import files as f
from tests.hostile.corpus import Case

TOOL = "build_shards.py"


def argv(ws: Path, *args: str, out: Path | None = None) -> list[str]:
    return [*args, "--output", str(out or ws / "out"), "--workers", "0", "--no-progress"]


def report(ws: Path) -> dict:
    return json.loads((ws / "out" / "report.json").read_text())


def balanced(ws: Path, **expect) -> None:
    """report.json's image and object counts balance; ``expect`` pins top-level values (skipped={...}, written=N)."""
    r = report(ws)
    assert r["read"] == r["written"] + sum(r["skipped"].values()) + r["duplicates"] + r["contaminated"], r
    for name, counts in r["sources"].items():
        assert counts["read"] == counts["written"] + sum(counts["skipped"].values()) + counts["duplicates"] + counts["contaminated"], name
    o = r["objects"]
    assert o["read"] == o["kept"] + sum(o["dropped"].values()), o
    for key, value in expect.items():
        got = o["dropped"] if key == "dropped" else r[key]
        assert got == value, f"{key}: {got} != {value}"


def scenes(ws: Path) -> Path:
    return f.scene_folders(ws / "in" / "aid")


# ---------------------------------------------------------------- output folders


def _overwrite_input(ws: Path) -> list[str]:
    data = scenes(ws)
    return argv(ws, "--input", f"folders:{data}", "--overwrite", out=data)


def _output_inside_input(ws: Path) -> list[str]:
    data = scenes(ws)
    return argv(ws, "--input", f"folders:{data}", out=data / "shards")


def _foreign_folder(ws: Path) -> list[str]:
    (ws / "out" / "notes").mkdir(parents=True)
    (ws / "out" / "thesis.tex").write_text("years of work")
    return argv(ws, "--input", f"folders:{scenes(ws)}", "--overwrite")


def _build_plus_user_file(ws: Path) -> list[str]:
    from shards.cli import main

    data = scenes(ws)
    assert main(argv(ws, "--input", f"folders:{data}")) == 0
    (ws / "out" / "keep.me").write_text("mine")
    return argv(ws, "--input", f"folders:{data}", "--overwrite")


def _second_live_build(ws: Path) -> list[str]:
    return argv(ws, "--input", f"folders:{scenes(ws)}")


def _hold_lock(ws: Path):
    from rs_common.guards import RunLock

    return RunLock(ws / "out", what="shard build")


# ---------------------------------------------------------------- names, ids, files the listing meets


def _colliding_names(ws: Path) -> list[str]:
    roots = [f.scene_folders(ws / "in" / p / n, seed=100 * k) for k, (p, n) in enumerate((("p", "a"), ("q", "a"), ("r", "a-2")))]
    return argv(ws, *sum((["--input", f"folders:{r}"] for r in roots), []))


def _colliding_names_check(ws: Path) -> None:
    import webdataset as wds

    balanced(ws, written=12)
    assert set(report(ws)["sources"]) == {"a", "a-2", "a-2-2"}
    keys = [s["__key__"] for s in wds.WebDataset([str(p) for p in (ws / "out").glob("shard-*.tar")], shardshuffle=False)]
    assert len(keys) == len(set(keys)) == 12


def _coco_ids(ws: Path) -> list[str]:
    root = f.coco(ws / "in" / "coco",
                  images=[{"id": 4, "file_name": "a.png"}, {"id": "5", "file_name": "b.png"}],
                  annotations=[f.box(1, "4"), f.box(2, 4.0), f.box(3, 5), f.box(4, 99), f.box(5, None)],
                  files=["a.png", "b.png"])
    return argv(ws, "--input", f"coco:{root}")


def _hidden(ws: Path) -> list[str]:
    data = scenes(ws)
    f.image(data / "harbor" / "._0.png", seed=7)
    f.image(data / ".ipynb_checkpoints" / "0-checkpoint.png", seed=8)
    return argv(ws, "--input", f"folders:{data}")


def _old_build_inside(ws: Path) -> list[str]:
    from shards.cli import main

    data = scenes(ws)
    assert main(argv(ws, "--input", f"folders:{data}", out=ws / "old")) == 0
    os.rename(ws / "old", data / "shards")
    return argv(ws, "--input", f"folders:{data}")


def _link_loops(ws: Path) -> list[str]:
    data = scenes(ws)
    os.symlink(data, data / "farmland" / "loop")
    os.symlink(data / "harbor", data / "harbor" / "self")
    dota = f.dota(ws / "in" / "dota")
    os.symlink(dota / "images", dota / "images" / "again")
    return argv(ws, "--input", f"folders:{data}", "--input", f"dota:{dota}")


def _outside_root(ws: Path) -> list[str]:
    secret = f.image(ws / "in" / "private" / "secret.png", seed=9)
    caps = f.karpathy(ws / "in" / "rsicd", [f.caption_entry("ok.png"), f.caption_entry("../../private/secret.png"),
                                            f.caption_entry(str(secret))], images={"ok.png": 1})
    coco = f.coco(ws / "in" / "coco", images=[{"id": 1, "file_name": "../../private/secret.png"}],
                  annotations=[f.box(1, 1)])
    return argv(ws, "--input", f"captions:{caps}", "--input", f"coco:{coco}")


def _outside_root_check(ws: Path) -> None:
    import webdataset as wds

    balanced(ws, written=1, skipped={"path_outside_root": 3})
    for sample in wds.WebDataset([str(p) for p in (ws / "out").glob("shard-*.tar")], shardshuffle=False):
        text = sample["__key__"] + sample["json"].decode()
        assert "secret" not in text and str(ws) not in text


# ---------------------------------------------------------------- images and annotations


def _bad_images(ws: Path) -> list[str]:
    root = f.dota(ws / "in" / "dota", {n: "10 10 30 10 30 20 10 20 plane 0\n" for n in ("good", "corrupt", "truncated", "empty")})
    f.corrupt(root / "images" / "corrupt.png")
    f.truncate(f.image(root / "images" / "truncated.png", 256, 256))
    (root / "images" / "empty.png").write_bytes(b"")
    return argv(ws, "--input", f"dota:{root}")


def _rasters(ws: Path) -> list[str]:
    root = ws / "in" / "scenes"
    f.tiff16(root / "farmland" / "grey16.tif")
    f.tiff16(root / "farmland" / "rgbn16.tif", bands=4)
    f.rgba(root / "harbor" / "rgba.png")
    f.image(root / "harbor" / "huge.png", 300, 300, seed=3)
    return argv(ws, "--input", f"folders:{root}", "--image.max-pixels", "50000")


def _band_past_last(ws: Path) -> list[str]:
    root = ws / "in" / "scenes"
    f.tiff16(root / "farmland" / "rgbn16.tif", bands=4)
    f.image(root / "harbor" / "ok.png", 48, 32, seed=4)
    return argv(ws, "--input", f"folders:{root}", "--image.bands", "4", "1", "0")


def _band_past_last_check(ws: Path) -> None:
    balanced(ws, written=0, skipped={"band_out_of_range": 2})
    lines = (ws / "out" / "issues.jsonl").read_text()
    assert "rgbn16.tif: has 4 bands, image.bands=[4, 1, 0] asks for band 4" in lines, lines
    assert "ok.png: has 3 bands, image.bands=[4, 1, 0] asks for band 4" in lines, lines


def _boxes(ws: Path) -> list[str]:
    root = f.dota(ws / "in" / "dota", {"P0": (
        "10 10 30 10 30 20 10 20 small-vehicle 0\n"
        "50 40 90 40 90 60 50 60 ship 0\n"          # leaves the 64x48 image: clipped
        "100 100 120 100 120 110 100 110 ship 0\n"  # wholly outside: dropped
        "5 5 5 5 5 5 5 5 plane 0\n"                 # zero size
        "10 10 20 10 20 20 10 20 flying-saucer 0\n"  # unknown class
        "1_0 10 30 10 30 20 10 20 plane 0\n"         # not a plain number
        "nan 10 30 10 30 20 10 20 plane 0\n"         # not finite
        "garbage\n")})
    return argv(ws, "--input", f"dota:{root}")


def _exif(ws: Path) -> list[str]:
    root = ws / "in" / "dota"
    f.exif_jpeg(root / "images" / "uav.jpg", 6)
    (root / "labelTxt").mkdir(parents=True)
    (root / "labelTxt" / "uav.txt").write_text("25 60 35 60 35 70 25 70 small-vehicle 0\n")  # upright frame
    return argv(ws, "--input", f"dota:{root}")


def _exif_check(ws: Path) -> None:
    import io

    import numpy as np
    import webdataset as wds
    from PIL import Image

    (sample,) = list(wds.WebDataset([str(ws / "out" / "shard-000000.tar")], shardshuffle=False))
    img = Image.open(io.BytesIO(sample["jpg"]))
    x1, y1, x2, y2 = (round(v) for v in json.loads(sample["json"])["objects"][0]["hbb"])
    assert img.size == (40, 80) and 0x0112 not in img.getexif()
    assert np.asarray(img.convert("L"))[y1:y2, x1:x2].mean() > 200


def _dota_pairing(ws: Path) -> list[str]:
    root = f.dota(ws / "in" / "dota", {"ok": "10 10 30 10 30 20 10 20 plane 0\n"})
    f.image(root / "images" / "sub" / "ok.png", seed=5)
    return argv(ws, "--input", f"dota:{root}")


def _empty_mask(ws: Path) -> list[str]:
    import numpy as np
    from PIL import Image

    root = ws / "in" / "loveda"
    f.image(root / "img_dir" / "0.png", 64, 64)
    f.image(root / "img_dir" / "1.png", 64, 64, seed=1)
    (root / "ann_dir").mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "ann_dir" / "0.png")  # no-data only
    Image.fromarray(np.full((32, 32), 2, np.uint8)).save(root / "ann_dir" / "1.png")  # wrong size
    return argv(ws, "--input", f"mask:{root}")


def _bad_xml(ws: Path) -> list[str]:
    root = ws / "in" / "dior"
    f.image(root / "JPEGImages" / "00001.jpg", seed=1)
    f.image(root / "JPEGImages" / "00002.jpg", seed=2)
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "00001.xml").write_text("<annotation><object><name>ship</name>")  # cut short
    (root / "Annotations" / "00002.xml").write_text(
        "<annotation><object><name>airplane</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>20</ymax>"
        "</bndbox></object></annotation>")
    return argv(ws, "--input", f"voc:{root}")


def _bad_label_bytes(ws: Path) -> list[str]:
    root = f.dota(ws / "in" / "dota", {"P0": "", "P1": "10 10 30 10 30 20 10 20 plane 0\n"})
    (root / "labelTxt" / "P0.txt").write_bytes(b"\xff\xfe\x00 10 10 \x80\x81")
    return argv(ws, "--input", f"dota:{root}")


# ---------------------------------------------------------------- fatal input errors: one line, nothing written


def _empty(ws: Path, fmt: str) -> list[str]:
    (ws / "in" / "empty").mkdir(parents=True)
    return argv(ws, "--input", f"{fmt}:{ws / 'in' / 'empty'}")


def _folders_on_file(ws: Path) -> list[str]:
    path = ws / "in" / "list.txt"
    path.parent.mkdir(parents=True)
    path.write_text("not a folder")
    return argv(ws, "--input", f"folders:{path}")


def _coco_not_json(ws: Path) -> list[str]:
    root = ws / "in" / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances.json").write_text('{"images": [\n{"id": 1,,}\n')
    return argv(ws, "--input", f"coco:{root}")


def _missing_dedup(ws: Path) -> list[str]:
    return argv(ws, "--input", f"folders:{scenes(ws)}", "--dedup-against", str(ws / "in" / "no_such_test_set"))


def _bad_setting(ws: Path, flag: str, value: str) -> list[str]:
    return argv(ws, "--input", f"folders:{scenes(ws)}", flag, value)


CASES = [
    Case(TOOL, "`--output` is the input dataset, with `--overwrite`", "refused before anything is written; the dataset is untouched",
         _overwrite_input, names=lambda ws: str(ws / "in" / "aid"), output=lambda ws: None),
    Case(TOOL, "`--output` inside a `folders:` input", "refused (it would be read back as a class next time)",
         _output_inside_input, names=lambda ws: str(ws / "in" / "aid"), output=lambda ws: None),
    Case(TOOL, "`--output` holds files no build wrote, with `--overwrite`",
         "refused without suggesting `--overwrite`; nothing deleted", _foreign_folder, names=lambda ws: str(ws / "out"),
         output=lambda ws: None),
    Case(TOOL, "a finished build plus a user's file, with `--overwrite`", "refused, naming the file; nothing deleted",
         _build_plus_user_file, names=lambda ws: "keep.me", output=lambda ws: None),
    Case(TOOL, "a second build on a folder a live build holds", "refused, naming the holder's pid",
         _second_live_build, names=lambda ws: f"pid {os.getpid()}", before=_hold_lock, output=lambda ws: ws / "out"),
    Case(TOOL, "inputs `p/a`, `q/a`, `r/a-2` (colliding source names)", "sources `a`, `a-2`, `a-2-2`; every key unique",
         _colliding_names, rc=0, check=_colliding_names_check),
    Case(TOOL, "COCO `image_id` as `\"4\"`, `4.0`, unknown, missing", "matched by value; the rest counted as dropped objects",
         _coco_ids, rc=0, check=lambda ws: balanced(ws, written=2, dropped={"unmatched_image_id": 1, "malformed_annotation": 1})),
    Case(TOOL, "hidden files (`._x.png`, `.ipynb_checkpoints/`)", "counted as `hidden_file` (`--files.read-hidden true` reads them)",
         _hidden, rc=0, check=lambda ws: balanced(ws, written=4, skipped={"hidden_file": 2})),
    Case(TOOL, "an old build folder inside a `folders:` input", "its images counted as `build_output`, never a class",
         _old_build_inside, rc=0, check=lambda ws: balanced(ws, written=4, skipped={"build_output": 1})),
    Case(TOOL, "symlink loops in a scene tree and an image folder", "each real folder listed once; no hang, no inflated counts",
         _link_loops, rc=0, check=lambda ws: balanced(ws, read=5), timeout=60),
    Case(TOOL, "annotation paths `../../x.png` or absolute (Karpathy, COCO)",
         "not read: counted as `path_outside_root`; no absolute path in keys or JSON", _outside_root, rc=0,
         check=_outside_root_check),
    Case(TOOL, "corrupt, truncated and zero-byte images", "skipped and counted by reason (`corrupt_image`, `truncated_image`)",
         _bad_images, rc=0, check=lambda ws: balanced(ws, written=1, read=4)),
    Case(TOOL, "16-bit grey and 4-band TIFF, RGBA PNG, an image over `image.max_pixels`",
         "converted to 8-bit RGB (noted in the sample JSON); the huge one skipped as `too_large`", _rasters, rc=0,
         check=lambda ws: balanced(ws, written=3, skipped={"too_large": 1})),
    Case(TOOL, "`--image.bands 4 1 0` on a 4-band TIFF (bands 0-3) and an RGB PNG",
         "both skipped as `band_out_of_range`, each naming the file, its band count and the band asked for",
         _band_past_last, rc=0, check=_band_past_last_check),
    Case(TOOL, "boxes outside the image, zero-size, unknown class, `1_0`, `nan`, garbage lines",
         "clipped or dropped, each counted by reason with file:line in issues.jsonl", _boxes, rc=0,
         check=lambda ws: balanced(ws, written=1, dropped={"box_outside_image": 1, "degenerate_box": 2, "unknown_class": 1,
                                                           "malformed_annotation": 2})),
    Case(TOOL, "a JPEG with EXIF Orientation 6", "turned upright before boxes are checked; tag not written",
         _exif, rc=0, check=_exif_check),
    Case(TOOL, "`images/sub/ok.png` beside `images/ok.png` and `labelTxt/ok.txt`",
         "the label goes to `images/ok.png` only; the other is `missing_annotation`", _dota_pairing, rc=0,
         check=lambda ws: balanced(ws, written=1, skipped={"missing_annotation": 1})),
    Case(TOOL, "an all-no-data mask, a mask of the wrong size", "skipped: `empty_mask`, `mask_size_mismatch`", _empty_mask,
         rc=0, check=lambda ws: balanced(ws, written=0, skipped={"empty_mask": 1, "mask_size_mismatch": 1})),
    Case(TOOL, "a VOC xml cut short", "that image skipped as `malformed_annotation` naming file:line; the rest built",
         _bad_xml, rc=0, check=lambda ws: balanced(ws, written=1, skipped={"malformed_annotation": 1})),
    Case(TOOL, "a label file that is not UTF-8", "that image skipped as `malformed_annotation`", _bad_label_bytes, rc=0,
         check=lambda ws: balanced(ws, written=1, skipped={"malformed_annotation": 1})),
    Case(TOOL, "`dota:` on an empty folder", "one-line error before any work", lambda ws: _empty(ws, "dota"),
         names=lambda ws: str(ws / "in" / "empty"), output=lambda ws: None),
    Case(TOOL, "`coco:` on an empty folder", "one-line error before any work", lambda ws: _empty(ws, "coco"),
         names=lambda ws: str(ws / "in" / "empty"), output=lambda ws: None),
    Case(TOOL, "`folders:` on a file", "one-line error before any work", _folders_on_file,
         names=lambda ws: str(ws / "in" / "list.txt"), output=lambda ws: None),
    Case(TOOL, "a COCO json that is not JSON", "one-line error naming file:line", _coco_not_json,
         names=lambda ws: f"{ws / 'in' / 'coco' / 'annotations' / 'instances.json'}:2"),
    Case(TOOL, "`--dedup-against` a path that does not exist", "one-line error before any work", _missing_dedup,
         names=lambda ws: "no_such_test_set", output=lambda ws: None),
    Case(TOOL, "`--dedup.threshold 99`", "one-line error naming the setting before any work",
         lambda ws: _bad_setting(ws, "--dedup.threshold", "99"), names=lambda ws: "dedup.threshold", output=lambda ws: None),
    Case(TOOL, "`--image.jpeg-quality inf`", "one-line error naming the setting before any work",
         lambda ws: _bad_setting(ws, "--image.jpeg-quality", "inf"), names=lambda ws: "image.jpeg_quality",
         output=lambda ws: None),
    Case(TOOL, "`--shard-size 1_0`", "one-line error naming the setting before any work",
         lambda ws: _bad_setting(ws, "--shard-size", "1_0"), names=lambda ws: "writer.shard_size",
         output=lambda ws: None),
]
