"""End-to-end shard builds: demo data, real samples, bad input, cluster passes, open_clip compatibility."""

from __future__ import annotations

import json
import tarfile
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from shards.cli import main as build_main
from synthetic.demo_data import generate_demo


def counts_balance(c: dict) -> bool:
    return c["read"] == c["written"] + sum(c["skipped"].values()) + c["duplicates"] + c["contaminated"]


def build(out: Path, *args: str, workers: int = 0) -> dict:
    rc = build_main([*args, "--output", str(out), "--workers", str(workers), "--no-progress"])
    assert rc == 0
    return json.loads((out / "report.json").read_text())


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.tar"))}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    generate_demo(root, seed=0, n_dota=6, n_coco=6, n_masks=4, n_captions=20, n_scenes_per_class=2, size=192)
    return root


def demo_args(demo: Path) -> list[str]:
    return [
        "--input", f"dota:{demo / 'dota'}", "--input", f"coco:{demo / 'coco'}", "--input", f"mask:{demo / 'masks'}",
        "--input", f"captions:{demo / 'captions'}", "--input", f"folders:{demo / 'scenes'}",
        "--dedup-against", str(demo / "captions" / "dataset.json"), "--shard-size", "16",
    ]


@pytest.fixture(scope="module")
def demo_build(demo, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo_out") / "shards"
    return out, build(out, *demo_args(demo), workers=2)


def test_demo_counts_balance_overall_and_per_source(demo_build):
    out, report = demo_build
    assert counts_balance(report)
    assert set(report["sources"]) == {"dota", "coco", "masks", "captions", "scenes"}
    for name, c in report["sources"].items():
        assert counts_balance(c), name
    assert sum(c["read"] for c in report["sources"].values()) == report["read"]
    assert report["written"] == sum(json.loads((out / "sizes.json").read_text()).values())
    # held-out caption splits are counted, never silently dropped
    assert report["sources"]["captions"]["skipped"].get("held_out_split", 0) > 0


def test_demo_planted_duplicates_and_contamination_found(demo, demo_build):
    out, report = demo_build
    planted = json.loads((demo / "planted.json").read_text())
    dups = json.loads((out / "duplicates.json").read_text())
    cont = json.loads((out / "contaminated.json").read_text())
    assert report["duplicates"] == len(dups) >= 2
    assert report["contaminated"] == len(cont) >= 2
    for entry in dups + cont:
        assert entry["distance"] <= 2 and entry["removed"]["path"] and entry["matched"]["path"]
    removed_paths = {Path(e["removed"]["path"]).name for e in dups + cont}
    assert removed_paths, planted


def test_demo_shards_read_by_webdataset(demo_build):
    out, report = demo_build
    urls = [str(p) for p in sorted(out.glob("shard-*.tar"))]
    pairs = list(wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("jpg", "txt"))
    assert len(pairs) == report["written"]
    for image, text in pairs:
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        assert isinstance(text, str) and text
    keys, metas = [], []
    for sample in wds.WebDataset(urls, shardshuffle=False):
        keys.append(sample["__key__"])
        meta = json.loads(sample["json"])
        metas.append(meta)
        assert sample["txt"].decode() in meta["captions"]
        w, h = meta["width"], meta["height"]
        for obj in meta["objects"]:
            x1, y1, x2, y2 = obj["hbb"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    assert len(keys) == len(set(keys))
    b2c = [m for m in metas if m["caption_kind"] in ("b2c", "m2b+b2c")]
    assert b2c and all(len(m["captions"]) == 5 for m in b2c)
    assert any(m["caption_kind"] == "m2b+b2c" for m in metas)


def test_demo_reports_written(demo_build):
    out, report = demo_build
    for name in ("manifest.json", "sizes.json", "report.json", "report.html", "report.png", "duplicates.json", "contaminated.json", "issues.jsonl"):
        assert (out / name).exists(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == report["written"]
    assert [s["name"] for s in manifest["shards"]] == sorted(p.name for p in out.glob("shard-*.tar"))
    assert "webdataset" in manifest["versions"] and manifest["config"]["dedup"]["threshold"] == 2
    assert not (out / "_work").exists()
    assert not list(out.glob("*.tmp"))


def test_rebuild_is_identical_whatever_the_worker_count(demo, demo_build, tmp_path):
    out, _ = demo_build
    again = tmp_path / "again"
    build(again, *demo_args(demo), workers=0)
    assert shard_bytes(again) == shard_bytes(out)


def test_existing_output_is_not_overwritten_silently(demo, demo_build, capsys):
    out, _ = demo_build
    rc = build_main([*demo_args(demo), "--output", str(out), "--workers", "0", "--no-progress"])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err


def test_cluster_passes_equal_single_machine(demo, demo_build, tmp_path):
    out, _ = demo_build
    multi = tmp_path / "multi"
    common = [*demo_args(demo), "--output", str(multi), "--workers", "0", "--no-progress", "--num-nodes", "3"]
    for rank in range(3):
        assert build_main([*common, "--node-rank", str(rank), "--stage", "hash"]) == 0
    assert build_main([*common, "--stage", "dedup"]) == 0
    for rank in range(3):
        assert build_main([*common, "--node-rank", str(rank), "--stage", "write"]) == 0
    assert build_main([*common, "--stage", "finalize"]) == 0
    assert shard_bytes(multi) == shard_bytes(out)
    assert json.loads((multi / "duplicates.json").read_text()) == json.loads((out / "duplicates.json").read_text())


def test_finalize_before_write_is_a_clear_error(demo, tmp_path, capsys):
    common = [*demo_args(demo), "--output", str(tmp_path / "o"), "--workers", "0", "--no-progress"]
    assert build_main([*common, "--stage", "hash"]) == 0
    assert build_main([*common, "--stage", "finalize"]) == 2
    assert "write pass not finished" in capsys.readouterr().err
    # resuming with "all" skips the finished hash pass and completes
    assert build_main(common) == 0
    assert (tmp_path / "o" / "manifest.json").exists()


def test_open_clip_train_reads_the_shards(demo_build):
    """open_clip's own training data pipeline (open_clip_train.data.get_wds_dataset) on our shards."""
    pytest.importorskip("pandas", reason="open_clip_train.data imports pandas (pip install -e .[dev])")
    import open_clip
    from open_clip_train.data import get_wds_dataset
    from torchvision import transforms

    out, report = demo_build
    n_shards = len(list(out.glob("shard-*.tar")))
    args = Namespace(
        train_data=str(out / ("shard-{000000..%06d}.tar" % (n_shards - 1))), val_data=None, train_num_samples=None,
        dataset_resampled=False, train_data_upsampling_factors=None, seed=0, batch_size=4, workers=1, world_size=1,
    )
    preprocess = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
    info = get_wds_dataset(args, preprocess, is_train=True, tokenizer=open_clip.get_tokenizer("ViT-B-32"))
    images, texts = next(iter(info.dataloader))
    assert tuple(images.shape) == (4, 3, 32, 32) and tuple(texts.shape) == (4, 77)
    assert info.dataloader.num_samples >= report["written"]  # sizes.json was read


# ---------------------------------------------------------------- bad input


def write_png(path: Path, w: int = 64, h: int = 48, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def bad_dota(root: Path) -> Path:
    """A DOTA folder with one of each problem beside two good images."""
    lt = root / "labelTxt"
    lt.mkdir(parents=True)
    write_png(root / "images" / "good.png", seed=1)
    (lt / "good.txt").write_text("10 10 30 10 30 20 10 20 plane 0\n")
    write_png(root / "images" / "messy.png", seed=2)
    (lt / "messy.txt").write_text(
        "imagesource:GoogleEarth\ngsd:0.5\n"
        "10 10 30 10 30 20 10 20 small-vehicle 0\n"
        "garbage line here\n"                          # malformed, line 4
        "50 40 90 40 90 60 50 60 ship 0\n"             # leaves the 64x48 image: clipped
        "100 100 120 100 120 110 100 110 ship 0\n"     # fully outside: dropped
        "5 5 5 5 5 5 5 5 plane 0\n"                   # degenerate
        "10 10 20 10 20 20 10 20 flying-saucer 0\n"    # unknown class
    )
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (lt / "corrupt.txt").write_text("1 1 5 1 5 5 1 5 plane 0\n")
    (lt / "orphan.txt").write_text("1 1 5 1 5 5 1 5 plane 0\n")  # no image
    write_png(root / "images" / "nolabel.png", seed=3)
    write_png(root / "images" / "empty.png", seed=4)
    (lt / "empty.txt").write_text("imagesource:x\ngsd:1\n")
    return root


def test_bad_samples_are_counted_never_fatal(tmp_path):
    root = bad_dota(tmp_path / "dota")
    out = tmp_path / "out"
    report = build(out, "--input", f"dota:{root}")
    assert report["read"] == 6 and counts_balance(report)
    assert report["written"] == 2
    skipped = report["skipped"]
    assert skipped.get("corrupt_image", 0) + skipped.get("truncated_image", 0) == 1
    assert skipped["missing_image"] == 1 and skipped["missing_annotation"] == 1 and skipped["no_objects"] == 1
    objects = report["objects"]
    assert objects["clipped"] == 1
    assert objects["dropped"]["malformed_annotation"] == 1 and objects["dropped"]["unknown_class"] == 1
    assert objects["dropped"]["box_outside_image"] == 1 and objects["dropped"]["degenerate_box"] == 1
    issues = [json.loads(line) for line in (out / "issues.jsonl").read_text().splitlines()]
    malformed = [i for i in issues if i["reason"] == "malformed_annotation"]
    assert malformed and f"{root / 'labelTxt' / 'messy.txt'}:4" in malformed[0]["message"]


def test_strict_mode_stops_with_file_and_line(tmp_path, capsys):
    root = bad_dota(tmp_path / "dota")
    with pytest.raises(Exception) as info:
        build_main(["--input", f"dota:{root}", "--output", str(tmp_path / "o"), "--workers", "0", "--no-progress", "--strict", "true"])
    assert "labelTxt" in str(info.value) or "corrupt" in str(info.value)


# ---------------------------------------------------------------- real samples


def test_real_samples_build(shared_data, tmp_path):
    out = tmp_path / "real"
    d = shared_data
    report = build(
        out,
        "--input", f"dota:{d / 'detection/dota'}", "--input", f"voc:{d / 'detection/dior'}",
        "--input", f"voc:{d / 'detection/hrsc'}", "--input", f"mask:{d / 'segmentation/loveda'}",
        "--input", f"captions:{d / 'captions/ucm'}", "--input", f"captions:{d / 'captions/sydney'}",
        "--input", f"folders:{d / 'scenes/dota_p1888'}",
        "--dedup-against", str(d / "captions/dota_p1888/dataset.json"),
        workers=2,
    )
    assert counts_balance(report)
    src = report["sources"]
    # P1888 is written; of the two RGBA crops whose labels are in 1024-crop coordinates, P0004 keeps one box
    # (3 of 4 fall outside) and P2805 keeps none (no_objects)
    assert src["dota"]["written"] == 2 and src["dota"]["skipped"] == {"no_objects": 1}
    assert src["dior"]["written"] == 1
    assert src["hrsc"]["skipped"] == {"missing_image": 1}
    assert src["loveda"]["written"] + sum(src["loveda"]["skipped"].values()) == 3
    assert src["ucm"]["written"] == 9 and src["sydney"]["written"] == 9
    # the scene-folder tiles ARE the dota_p1888 caption tiles: its test split must be caught as contamination
    test_split = [i for i in json.loads((d / "captions/dota_p1888/dataset.json").read_text())["images"] if i["split"] == "test"]
    assert src["dota_p1888"]["contaminated"] >= len(test_split) > 0
    cont = json.loads((out / "contaminated.json").read_text())
    assert all(Path(c["removed"]["path"]).name == Path(c["matched"]["path"]).name for c in cont)
    with tarfile.open(out / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert any(n.endswith(".jpg") for n in names) and any(n.endswith(".json") for n in names)
