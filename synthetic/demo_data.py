"""The demo data set: synthetic aerial scenes written in the real remote-sensing annotation formats.

Why: the demo and the end-to-end tests need data that goes through exactly the readers real data goes
through (DOTA labelTxt, COCO json, LoveDA-style masks, Karpathy caption json, scene-class folders), with
answers known in advance: images with one object and with more than ten of one class (B2C's "many"), a
mask with nothing but background (the build's ``empty_mask`` skip), held-out caption splits, and planted
near-duplicates and test-set contamination for the p-Hash de-duplication to find (``planted.json``).
Nothing is downloaded; the scenes are painted with numpy + OpenCV.

The scenes are top-down views: planes on an apron, cars in parking lots and on roads, trucks, ships at
piers and at sea, storage tanks, houses with pools, on textured grass, soil, sand, asphalt, concrete and
water. Every object is placed rotated and annotated with the rectangle it was painted in (DOTA's
8-point oriented box); COCO gets the painted outline as its segmentation and the outline's box as bbox.
Buildings are painted but, as in real DOTA, only COCO and the masks annotate them.

Determinism: each image has its own ``numpy.random.Generator`` seeded by (seed, source, index), and files
are encoded by OpenCV with fixed parameters, so one seed gives byte-identical files, and changing the
count of one source leaves the images of the others as they were.

The jobs live beside this module: ``drawing`` (primitives, textures, the encoder), ``painters`` (objects),
``scenes`` (recipes), ``landcover`` (LoveDA masks), ``captions`` (caption grammar), ``formats`` (the writers),
``faults`` (planted duplicates and contamination).

    python -m synthetic runs/demo/data --seed 0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import cv2

from rs_common.config import plain_int
from synthetic.faults import plant_contamination, plant_cross_source, plant_within_source
from synthetic.formats import write_captions, write_coco, write_dota, write_json, write_masks, write_scenes
from synthetic.scenes import SCENE_CLASSES

SOURCES = ("dota", "coco", "masks", "captions", "scenes")
DEMO_MARKER = ".rs-demo-data"  # written first into a folder of generated demo data: "the generator owns this"
DEMO_MARKER_TEXT = "demo data written by synthetic.demo_data; safe to delete\n"


def prepare_out(out: Path) -> Path:
    """Create ``out``; an earlier demo there (marked, and holding only our own folders) is replaced, anything else
    refused - a folder that merely holds a ``dota/`` or ``coco/`` may be someone's real dataset."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        ours = set(SOURCES) | {"planted.json", DEMO_MARKER}
        foreign = [p.name for p in out.iterdir() if p.name not in ours]
        if foreign or not (out / DEMO_MARKER).is_file():
            what = f"files that are not demo data ({', '.join(sorted(foreign)[:5])})" if foreign else f"no {DEMO_MARKER} marker"
            raise FileExistsError(f"{out} is not empty and holds {what}; use an empty or new folder - nothing was changed")
        for name in SOURCES:
            path = out / name
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
        (out / "planted.json").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text(DEMO_MARKER_TEXT)
    return out


@contextlib.contextmanager
def opencv_without_thread_pool():
    """Paint with OpenCV's worker threads off, restoring the setting after.

    Why: a process that forks after OpenCV has started its thread pool hands the children a pool whose
    threads do not exist; a child that then calls ``cv2.setNumThreads`` (as the build's workers do) waits
    for them forever. The demo is generated in the process that then builds the shards (tests, launch/demo.py),
    so it must leave no pool running. The painting is fast enough on one thread."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def check_arguments(seed: int, n_dota: int, n_coco: int, n_masks: int, n_captions: int, n_scenes_per_class: int, size: int) -> None:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if size < 96:
        raise ValueError(f"size must be >= 96 pixels, got {size}")
    if n_dota < 2 or n_coco < 1 or n_scenes_per_class < 1:
        raise ValueError("need n_dota >= 2, n_coco >= 1 and n_scenes_per_class >= 1")
    if n_masks < 1:
        raise ValueError(f"n_masks must be >= 1 (one of them is the all-background mask), got {n_masks}")
    if n_captions < 2:
        raise ValueError(f"n_captions must be >= 2 (2 test images are copied into COCO as contamination), got {n_captions}")


def generate_demo(out: Path, seed: int = 0, n_dota: int = 40, n_coco: int = 40, n_masks: int = 12, n_captions: int = 120,
                  n_scenes_per_class: int = 8, size: int = 384) -> dict:
    """Write the demo data set under ``out`` (see the module docstring) and return a summary of it.

    ``planted.json`` is written last, so its presence means a complete set."""
    check_arguments(seed, n_dota, n_coco, n_masks, n_captions, n_scenes_per_class, size)
    out = prepare_out(out)
    with opencv_without_thread_pool():
        return write_demo(out, seed, n_dota, n_coco, n_masks, n_captions, n_scenes_per_class, size)


def write_demo(out: Path, seed: int, n_dota: int, n_coco: int, n_masks: int, n_captions: int, n_scenes_per_class: int,
               size: int) -> dict:
    dota = write_dota(out, seed, n_dota, size)
    captions = write_captions(out, seed, n_captions, size)
    masks, empty_mask = write_masks(out, seed, n_masks, size)
    scenes = write_scenes(out, seed, n_scenes_per_class, size)
    cross_copy, cross = plant_cross_source(out, dota, n_coco + 1)
    contamination_copies, contaminated = plant_contamination(out, captions, n_coco + 2)
    within = plant_within_source(out, scenes, n_scenes_per_class)
    coco = write_coco(out, seed, n_coco, size, [cross_copy, *contamination_copies])
    planted = {"duplicates": [cross, within], "contaminated": contaminated}
    write_json(out / "planted.json", planted, indent=1)
    objects = Counter(o.cls for w in dota + coco + captions + scenes for o in w.objects)
    return {
        "out": str(out),
        "seed": seed,
        "size": size,
        "images": {"dota": len(dota), "coco": len(coco), "masks": len(masks), "captions": len(captions),
                   "scenes": len(scenes) + 1},
        "caption_splits": dict(Counter(w.split for w in captions)),
        "scene_classes": list(SCENE_CLASSES),
        "empty_mask": empty_mask,
        "objects": dict(sorted(objects.items())),
        "planted": planted,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m synthetic",
        description="Write synthetic aerial scenes in the real RS formats (DOTA, COCO, LoveDA masks, Karpathy "
                    "captions, scene folders) with planted duplicates and contamination listed in planted.json.",
    )
    parser.add_argument("out", type=Path, help="folder to write (created; an earlier demo there is replaced)")
    parser.add_argument("--seed", type=plain_int, default=0, help="random seed; the same seed gives byte-identical files")
    parser.add_argument("--size", type=plain_int, default=384, help="side of every image in pixels")
    parser.add_argument("--n-dota", type=plain_int, default=40, help="DOTA images")
    parser.add_argument("--n-coco", type=plain_int, default=40, help="COCO images (plus 3 planted copies)")
    parser.add_argument("--n-masks", type=plain_int, default=12, help="LoveDA-style image/mask pairs")
    parser.add_argument("--n-captions", type=plain_int, default=120, help="captioned images (Karpathy json)")
    parser.add_argument("--n-scenes-per-class", type=plain_int, default=8, help=f"images per scene class ({', '.join(SCENE_CLASSES)})")
    args = parser.parse_args(argv)
    try:
        summary = generate_demo(args.out, seed=args.seed, n_dota=args.n_dota, n_coco=args.n_coco, n_masks=args.n_masks,
                                n_captions=args.n_captions, n_scenes_per_class=args.n_scenes_per_class, size=args.size)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0
