"""The YOLO (Ultralytics HBB and OBB) reader: layouts, class names, pixel boxes, counted problems, a small build."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rs_common.errors import LayoutError
from shards.build_config import BuildConfig
from shards.cli import main as build_main
from shards.readers import read_records
from shards.record import Record

W, H = 64, 48


def write_image(path: Path, w: int = W, h: int = H, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def read(root: Path, cfg: BuildConfig | None = None) -> dict[str, Record]:
    items = list(read_records("yolo", root, "sar", cfg or BuildConfig()))
    return {r.rel_path: r for r in items}


def close(a, b, tol: float = 1e-6) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def test_hbb_pixels_split_folders_and_names_list(tmp_path):
    write(tmp_path / "data.yaml", "path: .\ntrain: images/train\nval: images/val\nnames: [ship, oil-tank]\n")
    write_image(tmp_path / "images" / "train" / "a.jpg")
    write_image(tmp_path / "images" / "val" / "b.png", w=100, h=50)
    write(tmp_path / "labels" / "train" / "a.txt", "0 0.5 0.5 0.25 0.5\n1 0.1 0.2 0.2 0.4\n")
    write(tmp_path / "labels" / "val" / "b.txt", "1 0.5 0.5 1 1\n")
    records = read(tmp_path)
    assert list(records) == ["images/train/a.jpg", "images/val/b.png"]
    a, b = records["images/train/a.jpg"], records["images/val/b.png"]
    assert (a.width, a.height, a.split, b.split) == (W, H, "train", "val")
    assert [o.cls for o in a.objects] == ["ship", "oil-tank"] and not a.issues
    assert close(a.objects[0].hbb, (0.375 * W, 0.25 * H, 0.625 * W, 0.75 * H))
    assert close(a.objects[1].hbb, (0.0, 0.0, 0.2 * W, 0.4 * H)) and a.objects[0].obb is None
    assert close(b.objects[0].hbb, (0, 0, 100, 50)) and a.objects[1].line == 2


def test_obb_corners_names_dict_and_roboflow_layout(tmp_path):
    write(tmp_path / "data.yaml", "names:\n  0: ship\n  3: plane\n")
    write_image(tmp_path / "train" / "images" / "s.png")
    write(tmp_path / "train" / "labels" / "s.txt", "3 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n")
    (record,) = read(tmp_path).values()
    assert record.rel_path == "train/images/s.png" and record.split == "train"
    (obj,) = record.objects
    assert obj.cls == "plane"
    assert close(obj.obb, (0.1 * W, 0.2 * H, 0.5 * W, 0.2 * H, 0.5 * W, 0.6 * H, 0.1 * W, 0.6 * H))
    assert close(obj.hbb, (0.1 * W, 0.2 * H, 0.5 * W, 0.6 * H))


def test_classes_txt_aliases_and_exif_turned_size(tmp_path):
    write(tmp_path / "classes.txt", "ship\nboat\n")
    img = Image.new("RGB", (W, H))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90: the upright image is H x W
    (tmp_path / "images").mkdir()
    img.save(tmp_path / "images" / "t.jpg", exif=exif)
    write(tmp_path / "labels" / "t.txt", "1 0.5 0.5 0.5 0.5\n")
    cfg = BuildConfig()
    cfg.classes.aliases = {"boat": "ship"}
    (record,) = read(tmp_path, cfg).values()
    assert (record.width, record.height) == (H, W)
    assert record.objects[0].cls == "ship" and close(record.objects[0].hbb, (H / 4, W / 4, 3 * H / 4, 3 * W / 4))


def test_each_problem_counted_with_file_and_line(tmp_path):
    write(tmp_path / "labels" / "classes.txt", "ship\n")
    for name in ("bad.png", "nolabel.png", "empty.png"):
        write_image(tmp_path / "images" / name)
    bad = write(tmp_path / "labels" / "bad.txt",
                "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n\n7 0.5 0.5 0.2 0.2\n0 1.2 0.5 0.2 0.2\nx 0.5 0.5 0.1 0.1\n"
                "0 0.5 0.5 -0.1 0.2\n")
    write(tmp_path / "labels" / "empty.txt", "\n  \n")
    write(tmp_path / "labels" / "orphan.txt", "0 0.5 0.5 0.1 0.1\n")
    records = read(tmp_path)
    got = records["images/bad.png"]
    assert len(got.objects) == 1 and got.objects[0].line == 1
    assert [(i.reason, i.level) for i in got.issues] == [
        ("malformed_annotation", "object"), ("unknown_class", "object"), ("box_outside_image", "object"),
        ("malformed_annotation", "object"), ("box_outside_image", "object")]
    assert [i.message.split(": ")[0] for i in got.issues] == [f"{bad}:{n}" for n in (2, 4, 5, 6, 7)]
    (missing,) = records["images/nolabel.png"].issues
    assert (missing.reason, missing.level) == ("missing_annotation", "record")
    assert str(tmp_path / "images" / "nolabel.png") in missing.message
    (empty,) = records["images/empty.png"].issues
    assert (empty.reason, empty.level) == ("empty_annotation", "record")
    assert empty.message.startswith(str(tmp_path / "labels" / "empty.txt"))
    orphan = records["images/orphan.jpg"]
    assert not orphan.image_path.exists() and orphan.origin == str(tmp_path / "labels" / "orphan.txt")


@pytest.mark.parametrize("setup, match", [
    (lambda root: None, "images/"),
    (lambda root: (root / "images").mkdir(), "data.yaml"),
    (lambda root: (write(root / "data.yaml", "names: 3\n"), (root / "images").mkdir()), "names"),
    (lambda root: (write(root / "classes.txt", "a\n\nb\n"), (root / "images").mkdir()), "classes.txt:2"),
])
def test_layout_errors(tmp_path, setup, match):
    setup(tmp_path)
    with pytest.raises(LayoutError, match=match):
        read(tmp_path)


def test_build_writes_b2c_captions_and_counts_balance(tmp_path):
    root = tmp_path / "ssdd"
    write(root / "data.yaml", "names: [ship]\n")
    for i in range(3):
        write_image(root / "images" / f"s{i}.png", seed=i + 1)
        write(root / "labels" / f"s{i}.txt", "0 0.3 0.3 0.2 0.2\n0 0.7 0.6 0.3 0.2\n")
    write_image(root / "images" / "bg.png", seed=9)  # no label file: counted as missing_annotation
    write(root / "labels" / "s0.txt", "0 0.3 0.3 0.2 0.2\n0 2 0.6 0.3 0.2\n")
    out = tmp_path / "out"
    assert build_main(["--input", f"yolo:{root}", "--output", str(out), "--workers", "0", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["read"] == 4 and report["written"] == 3
    assert report["read"] == report["written"] + sum(report["skipped"].values()) + report["duplicates"] + report["contaminated"]
    assert report["skipped"] == {"missing_annotation": 1}
    assert report["objects"]["dropped"]["box_outside_image"] == 1
    captions = []
    for shard in sorted(out.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            captions += [tar.extractfile(m).read().decode() for m in tar.getmembers() if m.name.endswith(".txt")]
    assert len(captions) == 3 and all("ship" in c for c in captions)
