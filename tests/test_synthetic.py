"""The synthetic demo data: deterministic, in the real formats (read by the real readers), with the
planted duplicates and contamination the build must find, and no accidental near-duplicates."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from shards.build_config import BuildConfig
from shards.readers import read_records
from synthetic.demo_data import SCENE_CLASSES, generate_demo, main

SMALL = dict(n_dota=8, n_coco=5, n_masks=4, n_captions=20, n_scenes_per_class=2, size=192)
SIZE = SMALL["size"]


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def phash(path: Path) -> imagehash.ImageHash:
    with Image.open(path) as image:
        return imagehash.phash(image.convert("RGB"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    return root, generate_demo(root, seed=0, **SMALL)


def records(fmt: str, path: Path) -> list:
    return list(read_records(fmt, path, path.name, BuildConfig()))


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_and_another_seed_differs(demo, tmp_path):
    root, _ = demo
    again = tmp_path / "again"
    generate_demo(again, seed=0, **SMALL)
    assert all_files(again) == all_files(root)
    generate_demo(tmp_path / "other", seed=1, **SMALL)
    other, first = all_files(tmp_path / "other"), all_files(root)
    assert other.keys() == first.keys()
    images = [k for k in first if k.endswith((".png", ".jpg")) and "/ann_dir/" not in k]  # the empty mask is seedless
    assert all(other[k] != first[k] for k in images)
    assert other["coco/annotations.json"] != first["coco/annotations.json"]


def test_regenerating_into_an_earlier_demo_replaces_it_and_foreign_folders_are_refused(tmp_path):
    out = tmp_path / "d"
    generate_demo(out, seed=0, **{**SMALL, "n_dota": 3})
    generate_demo(out, seed=0, **SMALL)
    assert len(list((out / "dota" / "images").glob("*.png"))) == SMALL["n_dota"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate_demo(foreign, seed=0, **SMALL)
    assert (foreign / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------- formats, through the real readers


def test_dota_labels_have_header_and_8_point_lines_and_read_cleanly(demo):
    root, _ = demo
    labels = sorted((root / "dota" / "labelTxt").glob("*.txt"))
    assert len(labels) == SMALL["n_dota"]
    most_of_one_class = []
    for label in labels:
        lines = label.read_text().splitlines()
        assert lines[:2] == ["imagesource:GoogleEarth", "gsd:0.5"]
        classes = Counter()
        for line in lines[2:]:
            parts = line.split()
            assert len(parts) == 10 and parts[9] in ("0", "1")
            coords = [float(v) for v in parts[:8]]
            assert all(0 <= v <= SIZE for v in coords)
            classes[parts[8]] += 1
        most_of_one_class.append(max(classes.values(), default=0))
    assert 1 in most_of_one_class  # a single object
    assert max(most_of_one_class) > 10  # B2C's "many"
    recs = records("dota", root / "dota")
    assert len(recs) == SMALL["n_dota"]
    assert not [i for r in recs for i in r.issues]
    assert all(r.meta == {"imagesource": "GoogleEarth", "gsd": 0.5} for r in recs)
    assert all(len(o.obb) == 8 for r in recs for o in r.objects)
    assert {o.cls for r in recs for o in r.objects} >= {"plane", "small-vehicle", "storage-tank"}


def test_coco_json_is_read_with_its_planted_copies(demo):
    root, summary = demo
    data = json.loads((root / "coco" / "annotations.json").read_text())
    assert {c["name"] for c in data["categories"]} == {"airplane", "ship", "storage tank", "vehicle", "building"}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= SIZE and y + h <= SIZE and w > 0 and h > 0
        assert len(ann["segmentation"][0]) >= 6 and ann["iscrowd"] == 0
    recs = records("coco", root / "coco")
    assert len(recs) == SMALL["n_coco"] + 3 == summary["images"]["coco"]  # + cross-source + 2 contamination copies
    assert not [i for r in recs for i in r.issues]
    assert all(r.image_path.exists() and r.width == r.height == SIZE for r in recs)
    assert all(r.objects for r in recs)  # every image can be captioned (the planted copies too)


def test_masks_are_loveda_index_masks_and_exactly_one_is_all_background(demo):
    root, summary = demo
    recs = records("mask", root / "masks")
    assert len(recs) == SMALL["n_masks"] and all(r.mask_path is not None and not r.issues for r in recs)
    all_background = []
    for rec in recs:
        with Image.open(rec.mask_path) as mask, Image.open(rec.image_path) as image:
            assert mask.mode == "L" and mask.size == image.size == (SIZE, SIZE)
            values = np.asarray(mask)
        assert set(np.unique(values)) <= set(range(8))
        if (values == 1).all():
            all_background.append(rec.mask_path.relative_to(root).as_posix())
    assert all_background == [summary["empty_mask"]]


def test_mask_image_matches_its_mask(demo):
    """Painted from the mask: water pixels are blue, road grey, and no-data black."""
    root, _ = demo
    checked = Counter()
    for mask_path in sorted((root / "masks" / "ann_dir").glob("*.png")):
        mask = np.asarray(Image.open(mask_path))
        image = np.asarray(Image.open(root / "masks" / "img_dir" / mask_path.name).convert("RGB")).astype(int)
        for value, test in ((4, lambda px: px[:, 2] > px[:, 0] + 20), (0, lambda px: px.max(1) <= 10)):
            pixels = image[mask == value]
            if len(pixels) > 50:
                assert test(pixels).mean() > 0.9, (mask_path.name, value)
                checked[value] += 1
    assert checked[0] >= 1


def test_captions_are_karpathy_json_with_five_sentences_and_splits(demo):
    root, _ = demo
    data = json.loads((root / "captions" / "dataset.json").read_text())
    assert set(data) == {"images", "dataset"}
    sentids = []
    for imgid, entry in enumerate(data["images"]):
        assert set(entry) == {"filename", "imgid", "split", "sentences", "sentids"} and entry["imgid"] == imgid
        assert len(entry["sentences"]) == 5 and len({s["raw"] for s in entry["sentences"]}) == 5
        for sentence in entry["sentences"]:
            assert sentence["raw"].endswith(" .") and sentence["raw"][0].isupper()
            assert sentence["tokens"] == sentence["raw"][:-2].split() and sentence["imgid"] == imgid
        assert entry["sentids"] == [s["sentid"] for s in entry["sentences"]]
        sentids += entry["sentids"]
    assert sentids == list(range(5 * SMALL["n_captions"]))
    splits = Counter(e["split"] for e in data["images"])
    assert splits["test"] >= 2 and splits["val"] >= 1 and splits["train"] >= 0.7 * SMALL["n_captions"]
    recs = records("captions", root / "captions")
    assert len(recs) == SMALL["n_captions"] and all(r.image_path.exists() and len(r.captions) == 5 for r in recs)
    held_out = [r for r in recs if any(i.reason == "held_out_split" for i in r.issues)]
    assert len(held_out) == splits["test"]


def test_captions_say_what_was_drawn(demo):
    root, _ = demo
    data = json.loads((root / "captions" / "dataset.json").read_text())
    text = " ".join(s["raw"].lower() for e in data["images"] for s in e["sentences"])
    for word in ("plane", "car", "ship", "tank", "house", "road", "farmland", "forest"):
        assert word in text, word


def test_scene_folders(demo):
    root, _ = demo
    recs = records("folders", root / "scenes")
    labels = Counter(r.label for r in recs)
    assert set(labels) == set(SCENE_CLASSES)
    assert sum(labels.values()) == len(SCENE_CLASSES) * SMALL["n_scenes_per_class"] + 1  # + the within-source copy
    assert all(r.captions for r in recs)


# ---------------------------------------------------------------- planted duplicates


def test_planted_pairs_are_near_duplicates(demo):
    root, summary = demo
    planted = json.loads((root / "planted.json").read_text())
    assert planted == summary["planted"]
    kinds = [d["kind"] for d in planted["duplicates"]]
    assert sorted(kinds) == ["cross_source", "within_source"]
    pairs = [(d["original"], d["copy"]) for d in planted["duplicates"]] + [(c["eval"], c["copy"]) for c in planted["contaminated"]]
    assert len(planted["contaminated"]) == 2
    for original, copy in pairs:
        assert phash(root / original) - phash(root / copy) <= 2, (original, copy)
    cross = next(d for d in planted["duplicates"] if d["kind"] == "cross_source")
    assert cross["original"].startswith("dota/") and cross["copy"].startswith("coco/")
    within = next(d for d in planted["duplicates"] if d["kind"] == "within_source")
    assert Path(within["original"]).parent == Path(within["copy"]).parent


def test_contamination_copies_come_from_the_test_split(demo):
    root, _ = demo
    planted = json.loads((root / "planted.json").read_text())
    splits = {e["filename"]: e["split"] for e in json.loads((root / "captions" / "dataset.json").read_text())["images"]}
    for pair in planted["contaminated"]:
        assert pair["eval"].startswith("captions/images/") and splits[Path(pair["eval"]).name] == "test"
        assert pair["copy"].startswith("coco/images/")


def test_no_accidental_near_duplicates(demo):
    """Every pair of images that was not planted is far apart in p-Hash (the textures are random enough)."""
    root, _ = demo
    planted = json.loads((root / "planted.json").read_text())
    pairs = {frozenset((d["original"], d["copy"])) for d in planted["duplicates"]}
    pairs |= {frozenset((c["eval"], c["copy"])) for c in planted["contaminated"]}
    images = sorted(p for p in root.rglob("*") if p.suffix in (".png", ".jpg") and "ann_dir" not in p.parts)
    hashes = {p.relative_to(root).as_posix(): phash(p) for p in images}
    close = [(a, b, hashes[a] - hashes[b]) for a, b in itertools.combinations(sorted(hashes), 2)
             if hashes[a] - hashes[b] <= 2 and frozenset((a, b)) not in pairs]
    assert close == []


# ---------------------------------------------------------------- arguments, CLI


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="n_masks"):
        generate_demo(tmp_path / "a", **{**SMALL, "n_masks": 0})
    with pytest.raises(ValueError, match="n_captions"):
        generate_demo(tmp_path / "b", **{**SMALL, "n_captions": 1})
    with pytest.raises(ValueError, match="seed"):
        generate_demo(tmp_path / "c", seed=-1, **SMALL)


def test_smallest_sets_still_plant_everything(tmp_path):
    """The build benchmark asks for 1 mask and 3 captioned images: the invariants still hold."""
    summary = generate_demo(tmp_path / "tiny", seed=1, n_dota=2, n_coco=1, n_masks=1, n_captions=3, n_scenes_per_class=1, size=128)
    assert summary["caption_splits"] == {"train": 1, "test": 2}
    assert len(summary["planted"]["contaminated"]) == 2 and len(summary["planted"]["duplicates"]) == 2
    mask = np.asarray(Image.open(tmp_path / "tiny" / summary["empty_mask"]))
    assert (mask == 1).all()


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "--seed" in capsys.readouterr().out
    out = tmp_path / "cli"
    assert main([str(out), "--seed", "3", "--size", "128", "--n-dota", "2", "--n-coco", "1", "--n-masks", "2",
                 "--n-captions", "4", "--n-scenes-per-class", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["seed"] == 3 and summary["images"]["dota"] == 2 and (out / "planted.json").exists()
