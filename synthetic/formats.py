"""Writers of the real remote-sensing formats: DOTA labelTxt, COCO json, LoveDA-style masks, scene-class folders
and Karpathy caption json, each source drawn from its own random stream."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from synthetic.captions import pick_captions
from synthetic.drawing import write_image
from synthetic.landcover import BACKGROUND, NO_DATA, Landcover, landcover_layout, paint_landcover
from synthetic.painters import Obj, Scene
from synthetic.scenes import CAPTION_KINDS, DETECTION_KINDS, MANY_KINDS, SCENE_CLASSES, SCENE_KINDS, compose, finish

GSD = 0.5  # metres per pixel written into the DOTA headers
# one random stream per source (and one for the caption splits), so the sources do not depend on each other
STREAMS = {"dota": 1, "coco": 2, "masks": 3, "captions": 4, "scenes": 5, "splits": 6}

# What each format calls our painted classes; a class a format lacks is painted but not annotated there.
DOTA_NAMES = {c: c for c in ("plane", "ship", "storage-tank", "small-vehicle", "large-vehicle", "harbor", "swimming-pool")}
COCO_CATEGORIES = (
    {"id": 1, "name": "airplane", "supercategory": "aircraft"},
    {"id": 2, "name": "ship", "supercategory": "vessel"},
    {"id": 3, "name": "storage tank", "supercategory": "facility"},
    {"id": 4, "name": "vehicle", "supercategory": "vehicle"},
    {"id": 5, "name": "building", "supercategory": "facility"},
)
COCO_IDS = {"plane": 1, "ship": 2, "storage-tank": 3, "small-vehicle": 4, "large-vehicle": 4, "building": 5}


def rng_for(seed: int, stream: str, index: int) -> np.random.Generator:
    """The generator of one image: independent of every other image and of the other sources' counts."""
    return np.random.default_rng([seed, STREAMS[stream], index])


def write_json(path: Path, data, **dumps) -> None:
    """A json file; ``dumps`` picks the layout of the real files (COCO compact, Karpathy on one line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, **dumps), encoding="utf-8")


@dataclass
class Written:
    """An image written to one source: its path relative to the demo root and what is in it."""

    rel: str
    objects: list[Obj]
    scene: Scene | None = None
    split: str | None = None


def dota_density(index: int) -> str:
    """Every 7th image holds exactly one object, every 3rd (from the 2nd) more than 10 of one class."""
    return "one" if index % 7 == 0 else "many" if index % 3 == 1 else "few"


def detection_kind(i: int, density: str) -> str:
    """Image ``i``'s recipe: "many" images (every 3rd, from the 2nd) take turns over MANY_KINDS, the others
    over all detection recipes."""
    if density == "many":
        return MANY_KINDS[(i // 3) % len(MANY_KINDS)]
    return DETECTION_KINDS[(i - (i + 1) // 3) % len(DETECTION_KINDS)]


def write_dota(out: Path, seed: int, n: int, size: int) -> list[Written]:
    """``dota/images/P####.png`` + ``dota/labelTxt/P####.txt`` (DOTA v1.5 lines with the two header lines)."""
    written = []
    for i in range(n):
        density = dota_density(i)
        kind = detection_kind(i, density)
        rng = rng_for(seed, "dota", i)
        scene, image = compose(kind, rng, size, density)
        name = f"P{i + 1:04d}"
        write_image(out / "dota" / "images" / f"{name}.png", image)
        label = out / "dota" / "labelTxt" / f"{name}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(dota_label_text(scene.objects), encoding="utf-8")
        written.append(Written(f"dota/images/{name}.png", scene.objects, scene))
    return written


def dota_label_text(objects: list[Obj]) -> str:
    lines = ["imagesource:GoogleEarth", f"gsd:{GSD}"]
    for obj in objects:
        if obj.cls in DOTA_NAMES:
            coords = " ".join(f"{v:.1f}" for v in np.round(obj.obb).ravel() + 0.0)  # + 0.0: no "-0.0"
            lines.append(f"{coords} {DOTA_NAMES[obj.cls]} {int(obj.difficult)}")
    return "\n".join(lines) + "\n"


def write_coco(out: Path, seed: int, n: int, size: int, extra: list[Written]) -> list[Written]:
    """``coco/images/<12 digits>.jpg`` + ``coco/annotations.json``; ``extra`` (the planted copies, already
    written under coco/images) are appended to the json after the ``n`` generated images."""
    written = []
    for i in range(n):
        density = "many" if (i + 3) % 3 == 1 else "few"
        kind = detection_kind(i + 3, density)
        scene, image = compose(kind, rng_for(seed, "coco", i), size, density)
        rel = f"coco/images/{coco_file_name(i + 1)}"
        write_image(out / rel, image)
        written.append(Written(rel, scene.objects, scene))
    entries = written + extra
    write_json(out / "coco" / "annotations.json", coco_json(entries, size), separators=(",", ":"))
    return entries


def coco_file_name(image_id: int) -> str:
    return f"{image_id:012d}.jpg"


def coco_json(entries: list[Written], size: int) -> dict:
    images, annotations = [], []
    for image_id, entry in enumerate(entries, start=1):
        images.append({"id": image_id, "file_name": Path(entry.rel).name, "width": size, "height": size})
        for obj in entry.objects:
            if obj.cls in COCO_IDS:
                annotations.append(coco_annotation(len(annotations) + 1, image_id, obj, size))
    return {
        "info": {"description": "synthetic aerial scenes (rs-clip-toolkit demo)", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in COCO_CATEGORIES],
    }


def coco_annotation(ann_id: int, image_id: int, obj: Obj, size: int) -> dict:
    outline = np.clip(obj.outline, 0, size)
    (x0, y0), (x1, y1) = outline.min(0), outline.max(0)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": COCO_IDS[obj.cls],
        "segmentation": [[round(float(v), 1) for v in outline.ravel()]],
        "area": round(float(cv2.contourArea(outline.astype(np.float32))), 2),
        "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
        "iscrowd": 0,
    }


def write_masks(out: Path, seed: int, n: int, size: int) -> tuple[list[Written], str]:
    """``masks/img_dir/<i>.png`` + ``masks/ann_dir/<i>.png`` (mode L, LoveDA values). One tile is all
    background (the build skips it as ``empty_mask``); one has a no-data (0) strip, as LoveDA tiles do."""
    empty_index = n // 2
    written = []
    for i in range(n):
        rng = rng_for(seed, "masks", i)
        if i == empty_index:
            cover = Landcover(np.full((size, size), BACKGROUND, np.uint8), np.zeros((size, size), np.int32), [], {})
        else:
            cover = landcover_layout(rng, size, "mixed")
            if i == 1 and n > 2:
                cover.mask[:, size - max(2, size // 12):] = NO_DATA
        image = paint_landcover(rng, cover)
        image = finish(image, rng)
        image[cover.mask == NO_DATA] = 0
        write_image(out / "masks" / "img_dir" / f"{i}.png", image)
        write_image(out / "masks" / "ann_dir" / f"{i}.png", cover.mask)  # single-channel: Pillow reads mode L
        written.append(Written(f"masks/img_dir/{i}.png", []))
    return written, f"masks/ann_dir/{empty_index}.png"


def write_scenes(out: Path, seed: int, n_per_class: int, size: int) -> list[Written]:
    """``scenes/<class>/<class>_<n>.jpg``, AID-style."""
    written = []
    for c, name in enumerate(SCENE_CLASSES):
        for i in range(n_per_class):
            density = "many" if i % 2 else "few"
            scene, image = compose(SCENE_KINDS[name], rng_for(seed, "scenes", c * 100_000 + i), size, density)
            rel = f"scenes/{name}/{name}_{i + 1}.jpg"
            write_image(out / rel, image)
            written.append(Written(rel, scene.objects, scene))
    return written


def split_plan(n: int, eligible: list[int], rng: np.random.Generator) -> list[str]:
    """~80/10/10 train/val/test; test (at least 2) drawn first from ``eligible`` (images COCO can annotate,
    so the contamination copies carry objects and are not skipped before they are hashed). Tiny sets keep
    one train image before they get a val image."""
    n_test = max(2, round(0.1 * n))
    n_val = min(max(1, round(0.1 * n)), max(0, n - n_test - 1))
    others = [i for i in range(n) if i not in set(eligible)]
    order = [int(i) for i in rng.permutation(eligible)] + [int(i) for i in rng.permutation(others)]
    splits = ["train"] * n
    for i in order[:n_test]:
        splits[i] = "test"
    rest = [i for i in range(n) if splits[i] == "train"]
    for i in rng.permutation(rest)[:n_val]:
        splits[int(i)] = "val"
    return splits


def write_captions(out: Path, seed: int, n: int, size: int) -> list[Written]:
    """``captions/images/<n>.jpg`` + ``captions/dataset.json`` (Karpathy form, 5 sentences an image)."""
    written, sentences = [], []
    for i in range(n):
        kind = CAPTION_KINDS[i % len(CAPTION_KINDS)]
        density = "one" if i % 11 == 5 else "many" if i % 4 == 2 else "few"
        rng = rng_for(seed, "captions", i)
        scene, image = compose(kind, rng, size, density)
        rel = f"captions/images/{i + 1}.jpg"
        write_image(out / rel, image)
        written.append(Written(rel, scene.objects, scene))
        sentences.append(pick_captions(scene, rng))
    eligible = [i for i, w in enumerate(written) if any(o.cls in COCO_IDS for o in w.objects)]
    for entry, split in zip(written, split_plan(n, eligible, rng_for(seed, "splits", 0))):
        entry.split = split
    write_json(out / "captions" / "dataset.json", karpathy_json(written, sentences))
    return written


def karpathy_json(written: list[Written], sentences: list[list[str]]) -> dict:
    images, sentid = [], 0
    for imgid, (entry, raws) in enumerate(zip(written, sentences)):
        sents = []
        for raw in raws:
            sents.append({"tokens": raw.rstrip(" .").split(), "raw": raw, "imgid": imgid, "sentid": sentid})
            sentid += 1
        images.append({"sentids": [s["sentid"] for s in sents], "imgid": imgid, "sentences": sents,
                       "split": entry.split, "filename": Path(entry.rel).name})
    return {"dataset": "synthetic", "images": images}
