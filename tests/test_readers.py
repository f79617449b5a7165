"""Readers: the real RS samples in their shipped layouts, and generated bad input."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from rs_common.errors import AnnotationError, LayoutError
from shards.build_config import BuildConfig
from shards.readers import FORMATS, IMAGE_EXTENSIONS, read_records
from shards.readers._common import rotated_box_corners
from shards.readers.classes import readable_class_name
from shards.readers.eval_sets import iter_eval_images
from shards.readers.masks import LOVEDA_CLASSES, load_mask, resolve_mask_classes
from shards.record import Record


def read(fmt: str, root: Path, cfg: BuildConfig | None = None, source: str = "src") -> list[Record]:
    return list(read_records(fmt, root, source, cfg or BuildConfig()))


def reasons(record: Record, level: str | None = None) -> list[str]:
    return [i.reason for i in record.issues if level is None or i.level == level]


def by_name(records: list[Record]) -> dict[str, Record]:
    return {Path(r.rel_path).stem: r for r in records}


def write_image(path: Path, w: int = 32, h: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def same_corners(a, b, tol: float = 1e-3) -> bool:
    """Same 4 points in the same cyclic order (either starting corner)."""
    pa, pb = np.asarray(a).reshape(4, 2), np.asarray(b).reshape(4, 2)
    return any(np.allclose(np.roll(pa, k, axis=0), pb, atol=tol) for k in range(4))


# ---------------------------------------------------------------- dispatch and names


def test_formats_and_dispatch_errors(tmp_path):
    assert FORMATS == ("coco", "dota", "voc", "yolo", "mask", "captions", "folders")
    assert {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"} <= set(IMAGE_EXTENSIONS)
    with pytest.raises(ValueError, match="coco, dota, voc, yolo, mask, captions, folders"):
        read_records("kitti", tmp_path, "s", BuildConfig())
    missing = tmp_path / "nowhere"
    with pytest.raises(LayoutError, match=str(missing)):
        read_records("dota", missing, "s", BuildConfig())


@pytest.mark.parametrize(
    "raw, readable",
    [("BareLand", "bare land"), ("large_vehicle", "large vehicle"), ("denseResidential", "dense residential"),
     ("small-vehicle", "small vehicle"), ("golffield", "golf field"), ("groundtrackfield", "ground track field"),
     ("baseballfield", "baseball field"), ("basketballcourt", "basketball court"), ("tenniscourt", "tennis court"),
     ("storagetank", "storage tank"), ("trainstation", "train station"),
     ("Expressway-Service-area", "expressway service area"), ("Expressway-toll-station", "expressway toll station"),
     ("baseball-diamond", "baseball diamond"), ("ground-track-field", "ground track field"), ("plane", "plane"),
     ("StorageTanks", "storage tanks"), ("RailwayStation", "railway station"), ("airplane", "airplane")],
)
def test_readable_class_name(raw, readable):
    assert readable_class_name(raw) == readable


# ---------------------------------------------------------------- real samples


def test_dota_real(shared_data):
    records = read("dota", shared_data / "detection/dota")
    assert [r.rel_path for r in records] == sorted(r.rel_path for r in records)
    assert len(records) == 3 and sum(len(r.objects) for r in records) == 72
    assert all(r.image_path.exists() and not r.issues for r in records)
    p1888 = by_name(records)["P1888"]
    assert len(p1888.objects) == 64
    assert {o.cls for o in p1888.objects} == {"small-vehicle", "large-vehicle"}
    assert p1888.meta == {"imagesource": "GoogleEarth", "gsd": pytest.approx(0.266170468393)}
    first = p1888.objects[0]  # line 3: 674 375 683 375 684 394 675 395 small-vehicle 0
    assert first.line == 3 and first.obb == (674, 375, 683, 375, 684, 394, 675, 395)
    assert first.hbb == (674, 375, 684, 395) and not first.difficult
    assert p1888.origin.endswith("labelTxt/P1888.txt")


def test_dior_oriented_box(shared_data):
    (record,) = read("voc", shared_data / "detection/dior")
    assert record.image_path.exists() and record.rel_path == "JPEGImages/00001.jpg"
    assert (record.width, record.height) == (800, 800) and not record.issues
    (obj,) = record.objects
    assert obj.cls == "golffield"
    assert obj.obb == (133, 237, 684, 237, 684, 672, 133, 672)  # lt, rt, rb, lb
    assert obj.hbb == (133, 237, 684, 672)
    assert obj.line == 15  # line of its <object> tag


def test_hrsc_record_without_image(shared_data):
    (record,) = read("voc", shared_data / "detection/hrsc")
    assert not record.image_path.exists() and record.image_path.name == "100000006.bmp"
    assert (record.width, record.height) == (1172, 816) and not record.issues
    (obj,) = record.objects
    assert obj.cls == "ship" and obj.hbb == (119, 75, 587, 789)
    expected = cv2.boxPoints(((341.2143, 443.3325), (778.4297, 178.2595), math.degrees(-1.122944)))
    assert same_corners(obj.obb, expected.reshape(-1), tol=0.05)


def test_rotated_box_corners_match_cv2():
    for cx, cy, w, h, ang in [(50, 40, 30, 10, 0.3), (0, 0, 5, 9, -1.2), (10, 10, 4, 4, 0.0)]:
        ours = rotated_box_corners(cx, cy, w, h, ang)
        theirs = cv2.boxPoints(((cx, cy), (w, h), math.degrees(ang))).reshape(-1)
        assert np.allclose(ours, theirs, atol=1e-3)


@pytest.mark.parametrize("name", ["ucm", "sydney"])
def test_human_caption_sets(shared_data, name):
    records = read("captions", shared_data / "captions" / name)
    assert len(records) == 9
    assert [r.rel_path for r in records] == sorted(r.rel_path for r in records)
    for r in records:
        assert r.image_path.exists() and r.split == "train" and not r.issues
        assert len(r.captions) == 5 and all(c == c.strip() and c for c in r.captions)


def test_caption_json_file_and_held_out_split(shared_data):
    json_path = shared_data / "captions/dota_p1888/dataset.json"
    splits = {e["filename"]: e["split"] for e in json.loads(json_path.read_text())["images"]}
    records = read("captions", json_path)
    assert len(records) == len(splits) == 30
    for r in records:
        assert r.image_path.exists() and r.split == splits[r.image_path.name]
        if r.split == "train":
            assert not r.issues and len(r.captions) == 5
        else:
            assert reasons(r, "record") == ["held_out_split"]
            assert str(json_path) in r.issues[0].message
    assert sum(r.split == "test" for r in records) > 0


def test_aid_scene_folders(shared_data):
    records = read("folders", shared_data / "scenes/aid")
    assert len(records) == 450 and len({r.label for r in records}) == 30
    assert [r.rel_path for r in records] == sorted(r.rel_path for r in records)
    bare = [r for r in records if r.label == "BareLand"]
    assert len(bare) == 15 and bare[0].captions[0] == "a satellite photo of bare land."
    assert len(bare[0].captions) == len(BuildConfig().folders.templates)


def test_loveda_masks(shared_data):
    records = read("mask", shared_data / "segmentation/loveda")
    assert [r.rel_path for r in records] == ["img_dir/0.png", "img_dir/1.png", "img_dir/2.png"]
    for r in records:
        assert r.image_path.exists() and r.mask_path.exists() and not r.issues
        assert r.mask_classes == dict(LOVEDA_CLASSES)
        assert load_mask(r.mask_path).shape == (1024, 1024)


def test_eval_sets(shared_data, tmp_path):
    cfg = BuildConfig()
    pairs = list(iter_eval_images(shared_data / "captions/dota_p1888/dataset.json", cfg))
    test_images = [p for p, _ in pairs]
    assert {root for _, root in pairs} == {shared_data / "captions/dota_p1888"}
    entries = json.loads((shared_data / "captions/dota_p1888/dataset.json").read_text())["images"]
    assert [p.name for p in test_images] == sorted(e["filename"] for e in entries if e["split"] == "test")
    assert all(p.exists() for p in test_images)
    with pytest.warns(UserWarning, match="no image is in the splits"):
        ucm = list(iter_eval_images(shared_data / "captions/ucm", cfg))  # all train: falls back to all
    assert len(ucm) == 9
    scenes = [p for p, _ in iter_eval_images(shared_data / "scenes/dota_p1888", cfg)]
    assert len(scenes) == 30 and scenes == sorted(scenes)
    with pytest.raises(LayoutError, match="absent"):
        list(iter_eval_images(tmp_path / "absent", cfg))


# ---------------------------------------------------------------- DOTA bad input


def dota_dir(tmp_path: Path, labels: dict[str, str], images: tuple[str, ...] = ()) -> Path:
    root = tmp_path / "dota"
    for stem, text in labels.items():
        write(root / "labelTxt" / f"{stem}.txt", text)
    for name in images:
        write_image(root / "images" / name)
    return root


def test_dota_malformed_line_keeps_other_objects(tmp_path):
    root = dota_dir(tmp_path, {"a": "1 1 9 1 9 9 1 9 plane 0\nfoo bar\n2 2 8 2 8 8 2 8 ship 1\n1 1 2 x 3 3 4 4 ship\n"}, ("a.png",))
    (record,) = read("dota", root)
    assert [o.cls for o in record.objects] == ["plane", "ship"] and record.objects[1].difficult
    assert reasons(record) == ["malformed_annotation", "malformed_annotation"]
    assert all(i.level == "object" for i in record.issues)
    label = root / "labelTxt" / "a.txt"
    assert record.issues[0].message.startswith(f"{label}:2: expected 8 coordinates + class [+ difficult], got 'foo bar'")
    assert f"{label}:4:" in record.issues[1].message


def test_dota_unknown_class_extra_and_aliases(tmp_path):
    root = dota_dir(tmp_path, {"a": "1 1 9 1 9 9 1 9 plane 0\n1 1 9 1 9 9 1 9 flying-saucer 0\n"}, ("a.png",))
    (record,) = read("dota", root)
    assert [o.cls for o in record.objects] == ["plane"] and reasons(record) == ["unknown_class"]
    assert "a.txt:2" in record.issues[0].message and "flying-saucer" in record.issues[0].message

    cfg = BuildConfig()
    cfg.classes.extra = ["flying-saucer"]
    cfg.classes.aliases = {"plane": "airplane"}
    (record,) = read("dota", root, cfg)
    assert [o.cls for o in record.objects] == ["airplane", "flying-saucer"] and not record.issues

    cfg = BuildConfig()
    cfg.classes.check_known = False
    (record,) = read("dota", root, cfg)
    assert len(record.objects) == 2 and not record.issues


def test_dota_missing_label_orphan_label_headers_and_bad_numbers(tmp_path):
    root = dota_dir(
        tmp_path,
        {"orphan": "1 1 9 1 9 9 1 9 plane 0\n", "b": "imagesource:GoogleEarth\ngsd:null\nnan 1 9 1 9 9 1 9 plane 0\n"},
        ("nolabel.jpg", "b.png"),
    )
    records = by_name(read("dota", root))
    assert [r.rel_path for r in records.values()] == ["images/b.png", "images/nolabel.jpg", "images/orphan.png"]
    assert reasons(records["nolabel"], "record") == ["missing_annotation"]
    orphan = records["orphan"]
    assert not orphan.image_path.exists() and len(orphan.objects) == 1 and not orphan.issues
    b = records["b"]
    assert b.meta == {"imagesource": "GoogleEarth", "gsd": None}
    assert reasons(b) == ["degenerate_box"] and "b.txt:3" in b.issues[0].message


def test_dota_pairs_by_stem_across_nested_image_folders(tmp_path):
    root = dota_dir(tmp_path, {"a": "1 1 9 1 9 9 1 9 plane 0\n"}, ("part1/a.png",))
    (record,) = read("dota", root)
    assert record.rel_path == "images/part1/a.png" and record.image_path.exists() and len(record.objects) == 1


# ---------------------------------------------------------------- VOC / DIOR bad input

VOC_OBJECT = "<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>12</ymax></bndbox></object>"


def voc_xml(*objects: str, filename: str = "a.jpg") -> str:
    return f"<annotation>\n<filename>{filename}</filename>\n<size><width>32</width><height>24</height></size>\n" + "\n".join(objects) + "\n</annotation>\n"


def test_voc_bad_xml_is_record_level(tmp_path):
    root = tmp_path / "voc"
    write_image(root / "JPEGImages" / "a.jpg")
    bad = write(root / "Annotations" / "a.xml", "<annotation><object><name>ship</name></annotation>")
    (record,) = read("voc", root)
    assert reasons(record, "record") == ["malformed_annotation"]
    assert str(bad) in record.issues[0].message and record.image_path == root / "JPEGImages" / "a.jpg"


def test_voc_objects_and_problems(tmp_path):
    root = tmp_path / "voc"
    write_image(root / "JPEGImages" / "a.jpg")
    objects = [VOC_OBJECT.format(name="ship", difficult=1), "<object><difficult>0</difficult></object>",
               VOC_OBJECT.format(name="ufo", difficult=0), VOC_OBJECT.format(name="Vehicle", difficult=0)]
    write(root / "Annotations" / "a.xml", voc_xml(*objects))
    (record,) = read("voc", root)
    assert [(o.cls, o.hbb, o.difficult, o.line) for o in record.objects] == [
        ("ship", (1, 2, 10, 12), True, 4), ("Vehicle", (1, 2, 10, 12), False, 7)]
    assert reasons(record) == ["malformed_annotation", "unknown_class"]
    assert "a.xml:5: object #2" in record.issues[0].message and "a.xml:6: object #3" in record.issues[1].message
    assert (record.width, record.height) == (32, 24)


def test_dior_prefers_oriented_annotation(tmp_path):
    root = tmp_path / "dior"
    write_image(root / "JPEGImages-trainval" / "00002.jpg")
    write(root / "Annotations" / "Horizontal Bounding Boxes" / "00002.xml", voc_xml(VOC_OBJECT.format(name="dam", difficult=0), filename="00002.jpg"))
    rob = ("<object><name>dam</name><robndbox><x_left_top>1</x_left_top><y_left_top>1</y_left_top><x_right_top>9</x_right_top>"
           "<y_right_top>3</y_right_top><x_right_bottom>7</x_right_bottom><y_right_bottom>11</y_right_bottom>"
           "<x_left_bottom>0</x_left_bottom><y_left_bottom>8</y_left_bottom></robndbox><angle>0</angle></object>")
    write(root / "Annotations" / "Oriented Bounding Boxes" / "00002.xml", voc_xml(rob, filename="00002.jpg"))
    (record,) = read("voc", root)
    assert record.image_path.exists() and "Oriented" in record.origin
    (obj,) = record.objects
    assert obj.obb == (1, 1, 9, 3, 7, 11, 0, 8) and obj.hbb == (0, 1, 9, 11)


# ---------------------------------------------------------------- COCO


def coco_json(images: list, annotations: list, categories: list | None = None) -> str:
    cats = categories if categories is not None else [{"id": 1, "name": "plane"}, {"id": 2, "name": "ship"}]
    return json.dumps({"images": images, "annotations": annotations, "categories": cats})


def test_coco_boxes_unknown_category_and_empty_images(tmp_path):
    root = tmp_path / "coco"
    write_image(root / "images" / "a.jpg")
    images = [{"id": 7, "file_name": "b.jpg"}, {"id": 3, "file_name": "a.jpg", "width": 32, "height": 24}]
    anns = [
        {"id": 1, "image_id": 3, "category_id": 1, "bbox": [1, 2, 10, 5], "iscrowd": 0},
        {"id": 2, "image_id": 3, "category_id": 99, "bbox": [1, 2, 10, 5]},
        {"id": 3, "image_id": 3, "category_id": 2, "bbox": [1, 2, "x"]},
        {"id": 4, "image_id": 3, "category_id": 2, "bbox": [4, 4, 3, 3], "iscrowd": 1},
    ]
    json_path = write(root / "annotations" / "train.json", coco_json(images, anns))
    cfg = BuildConfig()
    cfg.classes.aliases = {"plane": "airplane"}
    a, b = read("coco", root, cfg)
    assert (a.rel_path, b.rel_path) == ("images/a.jpg", "images/b.jpg")
    assert a.image_path.exists() and (a.width, a.height) == (32, 24) and a.origin == str(json_path)
    assert [(o.cls, o.hbb, o.line) for o in a.objects] == [("airplane", (1, 2, 11, 7), 0), ("ship", (4, 4, 7, 7), 3)]
    assert reasons(a) == ["unknown_class", "malformed_annotation"]
    assert "annotations[1]" in a.issues[0].message and str(json_path) in a.issues[0].message
    assert not b.objects and not b.issues


def test_coco_single_json_file_images_beside_it(tmp_path):
    json_path = write(tmp_path / "set" / "ann.json", coco_json([{"id": 1, "file_name": "x.png"}], []))
    (record,) = read("coco", json_path)
    assert record.image_path == tmp_path / "set" / "x.png" and record.rel_path == "x.png"


@pytest.mark.parametrize("text, message", [("{not json", "not valid JSON"), ('{"images": []}', "annotations")])
def test_coco_unusable_json_is_fatal(tmp_path, text, message):
    bad = write(tmp_path / "coco" / "bad.json", text)
    with pytest.raises(AnnotationError, match=message) as info:
        read("coco", tmp_path / "coco")
    assert str(bad) in str(info.value)


# ---------------------------------------------------------------- captions


def test_caption_entry_without_sentences(tmp_path):
    entries = [{"filename": "a.tif", "split": "train", "sentences": [{"raw": " A farm . "}]},
               {"filename": "b.tif", "split": "train", "sentences": []},
               {"filepath": "sub", "filename": "c.tif", "sentences": [{"tokens": ["two", "roads"]}]}]
    json_path = write(tmp_path / "caps" / "dataset_x.json", json.dumps({"images": entries, "dataset": "x"}))
    (tmp_path / "caps" / "imgs" / "sub").mkdir(parents=True)
    a, b, c = read("captions", tmp_path / "caps")
    assert a.captions == ["A farm ."] and a.image_path == tmp_path / "caps" / "imgs" / "a.tif" and not a.issues
    assert reasons(b, "record") == ["malformed_annotation"]
    assert str(json_path) in b.issues[0].message and "images[1]" in b.issues[0].message
    assert c.rel_path == "imgs/sub/c.tif" and c.captions == ["two roads"] and c.split is None and not c.issues


def test_caption_duplicate_entry_is_skipped_naming_the_first(tmp_path):
    entry = {"filename": "a.tif", "split": "train", "sentences": [{"raw": "a farm"}]}
    json_path = write(tmp_path / "dataset.json", json.dumps({"images": [entry, entry]}))
    first, second = read("captions", json_path)
    assert not first.issues and reasons(second, "record") == ["malformed_annotation"]
    assert f"{json_path}:0" in second.issues[0].message


def test_caption_json_without_images_is_fatal(tmp_path):
    bad = write(tmp_path / "dataset.json", json.dumps({"annotations": []}))
    with pytest.raises(AnnotationError, match="images") as info:
        read("captions", bad)
    assert str(bad) in str(info.value)


# ---------------------------------------------------------------- masks and folders


def test_mask_pairs_splits_and_missing_mask(tmp_path):
    root = tmp_path / "seg"
    write_image(root / "img_dir" / "train" / "a.jpg")
    write_image(root / "img_dir" / "val" / "b.jpg")
    Image.fromarray(np.ones((24, 32), np.uint8)).save(write_path(root / "ann_dir" / "train" / "a.png"))
    cfg = BuildConfig()
    cfg.masks.classes = {"2": "building", "255,0,0": "car", 3: "road"}
    a, b = read("mask", root, cfg)
    assert (a.split, b.split) == ("train", "val")
    assert a.mask_path == root / "ann_dir" / "train" / "a.png" and a.mask_classes == {2: "building", (255, 0, 0): "car", 3: "road"}
    assert reasons(b, "record") == ["missing_annotation"] and b.mask_path is None


def test_mask_class_keys_and_load_mask_modes(tmp_path):
    assert resolve_mask_classes({}) == dict(LOVEDA_CLASSES)
    with pytest.raises(ValueError, match="r,g,b"):
        resolve_mask_classes({"red": "car"})
    palette_mask = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    palette_mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    palette_mask.save(tmp_path / "p.png")
    assert load_mask(tmp_path / "p.png").tolist() == [[0, 1], [2, 1]]  # indices, not colours
    palette_mask.convert("RGB").save(tmp_path / "rgb.png")
    rgb = load_mask(tmp_path / "rgb.png")
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8 and tuple(rgb[0, 1]) == (255, 0, 0)
    with pytest.raises(FileNotFoundError):
        load_mask(tmp_path / "none.png")


def test_folders_camel_case_names_and_non_images(tmp_path):
    root = tmp_path / "scenes"
    write_image(root / "denseResidential" / "x" / "1.jpg")
    write_image(root / "large_vehicle" / "2.PNG")
    write(root / "large_vehicle" / "notes.txt", "not an image")
    write_image(root / "stray.jpg")
    cfg = BuildConfig()
    cfg.folders.templates = ["{}."]
    records = read("folders", root, cfg)
    assert [(r.rel_path, r.label, r.captions) for r in records] == [
        ("denseResidential/x/1.jpg", "denseResidential", ["dense residential."]),
        ("large_vehicle/2.PNG", "large_vehicle", ["large vehicle."]),
    ]


def test_reading_twice_gives_the_same_records(tmp_path):
    root = dota_dir(tmp_path, {"a": "1 1 9 1 9 9 1 9 plane 0\n", "c": "bad\n"}, ("a.png", "b.png", "c.png"))
    assert read("dota", root) == read("dota", root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read("dota", root)) == 3
