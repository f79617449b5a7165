"""One record -> its samples: the whole image (``shards.sample.build_sample``), or one sample per tile of a scene cut by
``tile.*`` (grid and object rules: :mod:`shards.tiling`; windowed reading: :mod:`shards.scene_reader`).

Which records are tiled: detection and mask records (B2C / M2B captions; a human or template caption describes the
whole image, so caption and scene-folder records never are) whose scene has a side over ``tile.size``, or, with
``tile.too_large: tile`` (the default), more pixels than ``image.max_pixels`` (tiled at ``tile.size`` or
``tile.too_large_size``) instead of being skipped as ``too_large``. A scene that fits in one tile goes whole as before.

The worker holds one scene open (decoded once, or windowed for a TIFF) and one decoded tile at a time; each tile is
encoded to JPEG before the next is read. Each tile's json carries its provenance: ``scene`` (the scene's rel_path and
size) and ``tile`` ``[x0, y0, x1, y1]`` in scene pixels. Object counts of a tiled scene are per tile: an object counts
in every tile it overlaps (kept, or dropped as ``tile_partial_object``); what the scene itself lost (reader issues,
boxes outside the scene) counts once, on its first tile. A tile with no object left is skipped as ``empty_tile``.
"""

from __future__ import annotations

import random
from collections import Counter

from rs_common.errors import SampleSkip
from rs_common.formats.shard_sample import make_key
from shards.b2c import b2c_captions, caption_objects, display_name
from shards.build_config import BuildConfig
from shards.dedup import image_phash
from shards.imageio import encode_jpeg, fit_within
from shards.m2b import boxes_from_mask
from shards.record import Issue, Record
from shards.sample import (
    Sample,
    build_sample,
    check_record_issues,
    clip_objects,
    record_mask,
    sample_meta,
    sensor_captions,
    scaled,
    skipped_object_counts,
)
from shards.scene_reader import open_scene, scene_size
from shards.tiling import Box, tile_grid, tile_objects


def tile_size_for(record: Record, cfg: BuildConfig) -> int:
    """The tile size the record's scene is cut at, 0 when it goes whole (read from the image header only)."""
    tile = cfg.tile
    if record.captions or record.label is not None or any(i.level == "record" for i in record.issues):
        return 0
    if not tile.size and tile.too_large != "tile":
        return 0
    size = scene_size(record.image_path)
    if size is None:
        return 0  # unreadable header: the whole-image path says why
    width, height = size
    if width * height > cfg.image.max_pixels:
        return (tile.size or tile.too_large_size) if tile.too_large == "tile" else 0
    return tile.size if tile.size and (width > tile.size or height > tile.size) else 0


def build_samples(index: int, record: Record, cfg: BuildConfig) -> list[Sample]:
    """The samples of one record: one whole image, or every tile of its scene; never raises unless ``cfg.strict``."""
    size = tile_size_for(record, cfg)
    if not size:
        return [build_sample(index, record, cfg)]
    base = dict(index=index, key=make_key(record.source, record.rel_path), source=record.source, path=str(record.image_path))
    counts: Counter = Counter()
    try:
        return tile_scene(index, record, cfg, size, counts)
    except SampleSkip as skip:
        if cfg.strict:
            raise
        message = str(skip)
        return [Sample(status="skip", reason=skip.reason, message=message, object_counts=skipped_object_counts(record, counts),
                       issues=[i for i in record.issues if i.message != message], **base)]


def tile_scene(index: int, record: Record, cfg: BuildConfig, size: int, counts: Counter) -> list[Sample]:
    """Every tile of the record's scene as a sample (``counts``: the scene's own object counts, for a skip)."""
    object_issues = check_record_issues(record, cfg)
    scene = open_scene(record.image_path, cfg.image, cfg.input.sensor_of(record.source))
    try:
        width, height = scene.size
        mask = record_mask(record, (width, height)) if record.mask_path is not None else None
        objects, scene_counts, box_issues = clip_objects(record.objects, width, height, cfg, record.where())
        if cfg.strict and box_issues:
            raise SampleSkip(box_issues[0].reason, box_issues[0].message)
        # what the scene lost before tiling, counted once (on the first tile); the kept ones are counted per tile
        counts.update({k: v for k, v in scene_counts.items() if k.startswith("dropped:")})
        counts.update(f"dropped:{i.reason}" for i in object_issues)
        counts["read"] += sum(counts.values())
        samples = []
        for ordinal, box in enumerate(tile_grid(width, height, size, cfg.tile.overlap)):
            scene_part = (counts, object_issues + box_issues) if ordinal == 0 else (Counter(), [])
            samples.append(tile_sample(index, ordinal, box, record, scene, objects, mask, cfg, scene_part))
    finally:
        scene.close()
    return samples


def tile_sample(index: int, ordinal: int, box: Box, record: Record, scene, objects, mask, cfg: BuildConfig,
                scene_part: tuple[Counter, list[Issue]]) -> Sample:
    """One tile as a sample, or a counted skip (``empty_tile``, a window that cannot be decoded)."""
    x0, y0, x1, y1 = box
    key = f"{make_key(record.source, record.rel_path)}__{x0}_{y0}"
    base = dict(index=index, tile=ordinal, key=key, source=record.source, path=str(record.image_path))
    counts: Counter = Counter(scene_part[0])
    where = f"{record.where()}: tile {list(box)}"
    try:
        if mask is not None:
            kept = boxes_from_mask(mask[y0:y1, x0:x1], record.mask_classes or {}, cfg.masks.ignore, cfg.masks.min_area)
            counts.update(read=len(kept), kept=len(kept))
        else:
            kept, tile_counts = tile_objects(objects, box, cfg.tile.min_visible)
            counts.update(tile_counts)
        if not kept:
            raise SampleSkip("empty_tile", f"{where}: no object with at least {cfg.tile.min_visible:g} of its area inside")
        rgb, notes = scene.read(box)
        orig_size = rgb.size
        rgb, scale = fit_within(rgb, cfg.image.max_side)
        rng = random.Random(f"{cfg.b2c.seed}:{key}")
        captions = b2c_captions(caption_objects(kept, scale), rgb.width, rgb.height, rng, cfg.b2c.centre_fraction, cfg.b2c.many_above)
        sensor = cfg.input.sensor_of(record.source)
        meta = sample_meta(record, key, sensor_captions(captions, sensor, cfg), [scaled(o, scale) for o in kept], rgb.size,
                           orig_size, scale, notes, sensor)
        meta["scene"] = {"rel_path": record.rel_path, "width": scene.size[0], "height": scene.size[1]}
        meta["tile"] = [x0, y0, x1, y1]
        phash = image_phash(rgb, cfg.dedup.hash_side)
        meta["phash"] = f"{phash:016x}"
    except SampleSkip as skip:
        if cfg.strict and skip.reason != "empty_tile":  # a tile of open sea is no fault in the data
            raise
        dropped = Counter({k: v for k, v in counts.items() if k == "read" or k.startswith("dropped:")})
        dropped["dropped:image_skipped"] += counts.get("kept", 0)
        return Sample(status="skip", reason=skip.reason, message=str(skip), object_counts=dict(dropped),
                      issues=list(scene_part[1]), **base)
    return Sample(status="ok", phash=phash, jpg=encode_jpeg(rgb, cfg.image.jpeg_quality), txt=rng.choice(captions), meta=meta,
                  object_counts=dict(counts), issues=list(scene_part[1]), classes=dict(Counter(display_name(o.cls) for o in kept)),
                  **base)
