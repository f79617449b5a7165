"""Stage 0 under hostile input: what --overwrite may delete, names and keys, ids, hidden files, links, paths
that leave the dataset, EXIF orientation, DOTA pairing, object counts, one live build per folder."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from shards.build_config import BuildConfig
from shards.cli import main as build_main
from shards.cli import source_names
from rs_common.guards import RunLock
from shards.readers import read_records
from shards.record import DatasetIssue, Record
from shards.writer import write_shard
from tests.hostile.files import exif_jpeg


def png(path: Path, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def tree_digest(root: Path) -> dict[str, str]:
    """sha1 of every file under root (links not followed): what must not change."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = hashlib.sha1(p.read_bytes()).hexdigest() if not p.is_symlink() else "link"
    return out


def run(out: Path, *args: str) -> int:
    return build_main([*args, "--output", str(out), "--workers", "0", "--no-progress"])


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def balanced(c: dict) -> bool:
    return c["read"] == c["written"] + sum(c["skipped"].values()) + c["duplicates"] + c["contaminated"]


def objects_balanced(r: dict) -> bool:
    o = r["objects"]
    return o["read"] == o["kept"] + sum(o["dropped"].values())


def scenes(root: Path, per_class: int = 2) -> Path:
    for c, name in enumerate(("farmland", "harbor")):
        for i in range(per_class):
            png(root / name / f"{i}.png", seed=10 * c + i)
    return root


def dota(root: Path, n: int = 2) -> Path:
    for i in range(n):
        png(root / "images" / f"P{i}.png", seed=100 + i)
        (root / "labelTxt").mkdir(parents=True, exist_ok=True)
        (root / "labelTxt" / f"P{i}.txt").write_text("10 10 30 10 30 20 10 20 plane 0\n")
    return root


# ---------------------------------------------------------------- 1: --overwrite deletes only what a build wrote


def test_overwrite_of_an_input_is_refused_and_deletes_nothing(tmp_path, capsys):
    data = scenes(tmp_path / "aid")
    before = tree_digest(data)
    assert run(data, "--input", f"folders:{data}", "--overwrite") == 2
    err = capsys.readouterr().err
    assert "is the input" in err and str(data) in err
    inner = data / "shards"
    assert run(inner, "--input", f"folders:{data}") == 2
    assert "lies inside the input" in capsys.readouterr().err
    assert run(tmp_path, "--input", f"folders:{data}", "--overwrite") == 2  # output holding the input
    assert "contains the input" in capsys.readouterr().err
    assert tree_digest(data) == before and not inner.exists()


def test_a_folder_that_is_not_a_build_is_never_overwritten(tmp_path, capsys):
    data = scenes(tmp_path / "aid")
    other = tmp_path / "mine"
    (other / "notes").mkdir(parents=True)
    (other / "thesis.tex").write_text("years of work")
    (other / "notes" / "a.txt").write_text("x")
    before = tree_digest(other)
    for extra in ([], ["--overwrite"]):
        assert run(other, "--input", f"folders:{data}", *extra) == 2
        err = capsys.readouterr().err
        assert "holds no shard build" in err and "--overwrite" not in err
    assert tree_digest(other) == before


def test_overwrite_replaces_a_build_and_nothing_else(tmp_path, capsys):
    data = scenes(tmp_path / "aid")
    out = tmp_path / "out"
    assert run(out, "--input", f"folders:{data}") == 0
    assert (out / ".rs-shards-build.json").is_file()
    assert run(out, "--input", f"folders:{data}") == 2
    assert "--overwrite" in capsys.readouterr().err  # a finished build: overwriting is the way
    (out / "keep.me").write_text("user file")
    assert run(out, "--input", f"folders:{data}", "--overwrite") == 2
    err = capsys.readouterr().err
    assert "keep.me" in err and "nothing there was changed" in err
    assert (out / "manifest.json").exists() and (out / "keep.me").read_text() == "user file"
    (out / "keep.me").unlink()
    first = (out / "shard-000000.tar").read_bytes()
    assert run(out, "--input", f"folders:{data}", "--overwrite", "--seed", "1") == 0
    assert report(out)["written"] == 4 and (out / "shard-000000.tar").read_bytes() == first


def test_a_second_build_on_a_live_builds_folder_is_refused(tmp_path, capsys):
    data = scenes(tmp_path / "aid")
    out = tmp_path / "out"
    with RunLock(out, what="shard build"):
        assert run(out, "--input", f"folders:{data}") == 2
    assert f"in use by another shard build (pid {os.getpid()}" in capsys.readouterr().err
    assert run(out, "--input", f"folders:{data}") == 0  # released: the stale lock file does not block


# ---------------------------------------------------------------- 3: unique source names and keys


def test_source_names_are_unique_by_construction(tmp_path):
    names = [s.name for s in source_names([("folders", tmp_path / "p/a"), ("folders", tmp_path / "q/a"),
                                           ("folders", tmp_path / "r/a-2"), ("folders", tmp_path / "s/A")])]
    assert names == ["a", "a-2", "a-2-2", "a-3"]


def test_three_sources_with_colliding_names_keep_every_sample(tmp_path):
    roots = [scenes(tmp_path / p / n) for p, n in (("p", "a"), ("q", "a"), ("r", "a-2"))]
    for k, root in enumerate(roots):  # different pixels, same file names
        for f in root.rglob("*.png"):
            png(f, seed=1000 + 17 * k + hash(f.name) % 7)
    out = tmp_path / "out"
    assert run(out, *sum((["--input", f"folders:{r}"] for r in roots), []), "--dedup.within", "false") == 0
    r = report(out)
    assert r["written"] == 12 and set(r["sources"]) == {"a", "a-2", "a-2-2"}
    samples = list(wds.WebDataset([str(p) for p in sorted(out.glob("shard-*.tar"))], shardshuffle=False))
    keys = [s["__key__"] for s in samples]
    assert len(keys) == len(set(keys)) == 12


def test_a_shard_never_holds_a_key_twice(tmp_path):
    members = {"txt": b"a caption"}
    with pytest.raises(ValueError, match="twice"):
        write_shard(tmp_path / "shard-000000.tar", [("k1", members), ("k1", members)])
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- 4: COCO ids by value, dropped annotations counted


def test_coco_ids_match_by_value_and_every_dropped_annotation_is_counted(tmp_path):
    root = tmp_path / "coco"
    for i in range(4):
        png(root / "images" / f"{i}.png", seed=i)
    ann = lambda i, image_id: {"id": i, "image_id": image_id, "category_id": 1, "bbox": [5, 5, 20, 20]}  # noqa: E731
    data = {
        "images": [{"id": 4, "file_name": "0.png"}, {"id": "5", "file_name": "1.png"}, {"id": 6.0, "file_name": "2.png"},
                   {"id": 7, "file_name": "3.png"}],
        "categories": [{"id": 1, "name": "plane"}],
        "annotations": [ann(1, "4"), ann(2, 4.0), ann(3, 5), ann(4, "6"), ann(5, 99), ann(6, None), ann(7, 7)],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances.json").write_text(json.dumps(data))
    items = list(read_records("coco", root, "coco", BuildConfig()))
    records = [i for i in items if isinstance(i, Record)]
    dropped = [i for i in items if isinstance(i, DatasetIssue)]
    assert [len(r.objects) for r in records] == [2, 1, 1, 1]
    assert sorted(d.reason for d in dropped) == ["malformed_annotation", "unmatched_image_id"]
    assert "annotations[4]" in next(d.message for d in dropped if d.reason == "unmatched_image_id")
    out = tmp_path / "out"
    assert run(out, "--input", f"coco:{root}") == 0
    r = report(out)
    assert r["written"] == 4 and r["skipped"] == {}
    assert r["objects"]["read"] == 7 and r["objects"]["kept"] == 5 and objects_balanced(r)
    assert r["objects"]["dropped"] == {"malformed_annotation": 1, "unmatched_image_id": 1}
    logged = [json.loads(x) for x in (out / "issues.jsonl").read_text().splitlines()]
    assert sorted(x["reason"] for x in logged if x["key"] is None) == ["malformed_annotation", "unmatched_image_id"]


def test_coco_images_sharing_an_id_are_skipped_with_their_annotations_counted(tmp_path):
    root = tmp_path / "coco"
    png(root / "images" / "a.png", seed=1)
    png(root / "images" / "b.png", seed=2)
    data = {"images": [{"id": 3, "file_name": "a.png"}, {"id": "3", "file_name": "b.png"}],
            "categories": [{"id": 1, "name": "ship"}],
            "annotations": [{"id": 1, "image_id": 3, "category_id": 1, "bbox": [1, 1, 9, 9]}]}
    (root / "instances.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    assert run(out, "--input", f"coco:{root}") == 0
    r = report(out)
    assert r["read"] == 2 and r["skipped"] == {"malformed_annotation": 2} and balanced(r)
    assert r["objects"]["dropped"] == {"unmatched_image_id": 1} and objects_balanced(r)


# ---------------------------------------------------------------- 5, 6, 8: hidden files, build outputs, link loops


def test_hidden_files_are_counted_and_readable_on_request(tmp_path):
    data = scenes(tmp_path / "aid")
    png(data / "harbor" / "._2.png", seed=50)
    png(data / ".ipynb_checkpoints" / "0-checkpoint.png", seed=51)
    out = tmp_path / "out"
    assert run(out, "--input", f"folders:{data}") == 0
    r = report(out)
    assert r["read"] == 6 and r["skipped"] == {"hidden_file": 2} and r["written"] == 4 and balanced(r)
    assert run(tmp_path / "out2", "--input", f"folders:{data}", "--files.read-hidden", "true") == 0
    assert report(tmp_path / "out2")["written"] == 6


def test_an_old_build_inside_a_scene_folder_is_not_read_back_as_a_class(tmp_path):
    data = scenes(tmp_path / "aid")
    out = tmp_path / "out"
    assert run(out, "--input", f"folders:{data}") == 0
    os.rename(out, data / "shards")  # as a build placed there before outputs inside inputs were refused
    assert (data / "shards" / "report.png").exists()
    out2 = tmp_path / "out2"
    assert run(out2, "--input", f"folders:{data}") == 0
    r = report(out2)
    assert r["written"] == 4 and r["skipped"] == {"build_output": 1} and "shards" not in json.dumps(r["objects"])


def test_link_loops_neither_hang_nor_inflate_counts(tmp_path):
    data = scenes(tmp_path / "aid", per_class=1)
    os.symlink(data, data / "farmland" / "loop")  # a loop through the root
    os.symlink(data / "harbor", data / "harbor" / "self")  # a loop onto itself
    os.symlink(data / "harbor", data / "harbor-again")  # a second way into one real folder
    d = dota(tmp_path / "dota", n=1)
    os.symlink(d / "images", d / "images" / "again")
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert run(out, "--input", f"folders:{data}", "--input", f"dota:{d}", "--dedup.within", "false") == 0
    assert time.perf_counter() - t0 < 60
    r = report(out)
    assert r["sources"]["aid"]["read"] == 2 and r["sources"]["dota"]["read"] == 1 and balanced(r)


# ---------------------------------------------------------------- 13: paths that leave the dataset root


def test_annotation_paths_outside_the_dataset_are_never_read(tmp_path):
    secret = png(tmp_path / "private" / "secret.png", seed=9)
    root = tmp_path / "rsicd"
    png(root / "images" / "ok.png", seed=1)
    entries = [
        {"filename": "ok.png", "split": "train", "sentences": [{"raw": "a harbour."}]},
        {"filename": "../../private/secret.png", "split": "train", "sentences": [{"raw": "a secret."}]},
        {"filename": str(secret), "split": "train", "sentences": [{"raw": "a secret, absolute."}]},
    ]
    (root / "dataset.json").write_text(json.dumps({"images": entries}))
    coco = tmp_path / "coco"
    png(coco / "images" / "fine.png", seed=2)
    (coco / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "fine.png"}, {"id": 2, "file_name": "../../private/secret.png"}],
        "categories": [{"id": 1, "name": "ship"}],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 20, 20]} for i in (1, 2)]}))
    out = tmp_path / "out"
    assert run(out, "--input", f"captions:{root}", "--input", f"coco:{coco}") == 0
    r = report(out)
    assert r["written"] == 2 and r["skipped"] == {"path_outside_root": 3} and balanced(r)
    for sample in wds.WebDataset([str(p) for p in out.glob("shard-*.tar")], shardshuffle=False):
        meta = json.loads(sample["json"])
        text = sample["__key__"] + sample["json"].decode()
        assert "secret" not in text and str(tmp_path) not in text, meta
    allowed = tmp_path / "allowed"
    assert run(allowed, "--input", f"captions:{root}", "--files.allow-outside-root", "true") == 0
    assert report(allowed)["written"] == 2  # one copy of the secret; the other is its duplicate
    for sample in wds.WebDataset([str(p) for p in allowed.glob("shard-*.tar")], shardshuffle=False):
        assert str(tmp_path) not in sample["__key__"] + sample["json"].decode()


# ---------------------------------------------------------------- 14: EXIF orientation


@pytest.mark.parametrize("mode", ["apply", "ignore"])
def test_exif_orientation_is_applied_before_boxes_or_ignored_on_request(tmp_path, mode):
    root = tmp_path / "dota"
    exif_jpeg(root / "images" / "uav.jpg", 6)
    (root / "labelTxt").mkdir()
    # Orientation 6: shown rotated 90 degrees clockwise, 40 wide x 80 high; the square lands at x 25..35, y 60..70
    box = "25 60 35 60 35 70 25 70" if mode == "apply" else "60 5 70 5 70 15 60 15"
    (root / "labelTxt" / "uav.txt").write_text(f"{box} small-vehicle 0\n")
    out = tmp_path / "out"
    assert run(out, "--input", f"dota:{root}", "--image.exif-orientation", mode) == 0
    (sample,) = list(wds.WebDataset([str(out / "shard-000000.tar")], shardshuffle=False))
    meta = json.loads(sample["json"])
    image = Image.open(io.BytesIO(sample["jpg"]))
    assert 0x0112 not in image.getexif()  # every reader sees the same pixels
    assert image.size == ((40, 80) if mode == "apply" else (80, 40))
    x1, y1, x2, y2 = (round(v) for v in meta["objects"][0]["hbb"])
    assert np.asarray(image.convert("L"))[y1:y2, x1:x2].mean() > 200  # the box sits on the bright square
    assert any("EXIF orientation 6" in n for n in meta["conversion"])


# ---------------------------------------------------------------- 15: DOTA pairing and numbers


def test_dota_pairs_by_relative_path_and_reads_plain_numbers_only(tmp_path):
    root = tmp_path / "dota"
    png(root / "images" / "ok.png", seed=1)
    png(root / "images" / "sub" / "ok.png", seed=2)
    png(root / "images" / "part1" / "P9.png", seed=3)  # a nested zip: unique stem, label at the top
    (root / "labelTxt").mkdir()
    (root / "labelTxt" / "ok.txt").write_text("1_0 10 30 10 30 20 10 20 plane 0\n10 10 30 10 30 20 10 20 ship 1_0\n"
                                              "10 10 30 10 30 20 10 20 ship 0\n")
    (root / "labelTxt" / "P9.txt").write_text("10 10 30 10 30 20 10 20 plane 0\n")
    records = {r.rel_path: r for r in read_records("dota", root, "dota", BuildConfig())}
    assert records["images/sub/ok.png"].issues[0].reason == "missing_annotation"
    assert "cannot be assigned" in records["images/sub/ok.png"].issues[0].message
    ok = records["images/ok.png"]
    assert [o.cls for o in ok.objects] == ["ship"]
    assert [i.reason for i in ok.issues] == ["malformed_annotation"] * 2 and ":1:" in ok.issues[0].message
    assert len(records["images/part1/P9.png"].objects) == 1


# ---------------------------------------------------------------- 16: object counts and the issue log


def test_objects_of_skipped_images_are_counted_and_each_issue_logged_once(tmp_path):
    root = dota(tmp_path / "dota", n=2)
    (root / "images" / "P1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # its 2 objects go with it
    (root / "labelTxt" / "P1.txt").write_text("10 10 30 10 30 20 10 20 plane 0\n10 10 30 10 30 20 10 20 ship 0\n"
                                              "not a box\n")
    out = tmp_path / "out"
    assert run(out, "--input", f"dota:{root}") == 0
    r = report(out)
    assert r["objects"]["read"] == 4 and r["objects"]["kept"] == 1 and objects_balanced(r)
    assert r["objects"]["dropped"] == {"image_skipped": 2, "malformed_annotation": 1}
    lines = (out / "issues.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == 2


def test_reader_layout_errors_are_one_line_before_any_work(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    for spec, needle in ((f"dota:{empty}", "needs images/ and labelTxt/"), (f"coco:{empty}", "no COCO json"),
                         (f"folders:{a_file}", "not a file"), (f"voc:{empty}", "needs Annotations/"),
                         (f"mask:{empty}", "no mask dataset"), (f"captions:{empty}", "no caption json")):
        assert run(tmp_path / "out", "--input", f"folders:{scenes(tmp_path / 'ok')}", "--input", spec) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and needle in err and spec.split(":", 1)[1] in err, err
        assert not (tmp_path / "out").exists()  # refused before anything was written


def test_demo_generator_never_replaces_a_real_dataset(tmp_path):
    """A folder that merely holds a dota/ may be someone's real DOTA: only a marked demo folder is replaced."""
    from synthetic.demo_data import prepare_out

    data = tmp_path / "data"
    png(data / "dota" / "images" / "P0001.png")
    before = tree_digest(data)
    with pytest.raises(FileExistsError, match="nothing was changed"):
        prepare_out(data)
    assert tree_digest(data) == before
    demo = prepare_out(tmp_path / "demo")
    png(demo / "dota" / "images" / "x.png")
    prepare_out(demo)  # an earlier demo: replaced
    assert not (demo / "dota").exists()
