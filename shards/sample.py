"""One record -> one shard sample (or one counted skip). This is the work a build's worker processes do.

Steps: record-level reader issues -> decode the image (rs_common.imageio via shards.imageio) -> check/clip boxes against the
real image size -> M2B for mask records -> captions (human ones kept, else B2C) -> p-Hash -> JPEG bytes.
Everything random is seeded by (seed, sample key), so a sample is the same whichever worker builds it.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from rs_common.errors import SampleSkip
from rs_common.formats.shard_sample import make_key, meta_json_bytes
from shards.b2c import b2c_captions, caption_objects, display_name
from shards.build_config import BuildConfig
from shards.dedup import image_phash
from shards.imageio import LoadedImage, jpeg_bytes, load_image
from shards.m2b import boxes_from_mask
from shards.readers.masks import load_mask
from shards.record import Issue, ObjectAnn, Record

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Sample:
    """The outcome for one record: ``status`` "ok" with the shard members, or "skip" with a reason."""

    index: int
    key: str
    source: str
    path: str
    status: str
    reason: str | None = None
    message: str | None = None
    phash: int | None = None
    jpg: bytes | None = None
    txt: str | None = None
    meta: dict | None = None
    object_counts: dict = field(default_factory=dict)  # {"read", "kept", "clipped", "dropped:<reason>"}
    issues: list[Issue] = field(default_factory=list)
    classes: dict = field(default_factory=dict)  # display class name -> objects kept
    tile: int | None = None  # the tile's ordinal in its scene's grid (shards.tiling); None for a whole image


def clip_objects(objects: list[ObjectAnn], width: int, height: int, cfg: BuildConfig, where: str) -> tuple[list[ObjectAnn], Counter, list[Issue]]:
    """Clip boxes to the image (or drop them when ``boxes.clip`` is off); drop degenerate ones. All counted."""
    kept: list[ObjectAnn] = []
    counts: Counter = Counter(read=len(objects))
    issues: list[Issue] = []
    for obj in objects:
        x1, y1, x2, y2 = obj.hbb
        where_obj = f"{where}:{obj.line}" if obj.line is not None else where
        if cfg.boxes.drop_difficult and obj.difficult:
            counts["dropped:difficult"] += 1
            continue
        inside = 0 <= x1 and 0 <= y1 and x2 <= width and y2 <= height
        cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)
        if cx2 - cx1 < cfg.boxes.min_size or cy2 - cy1 < cfg.boxes.min_size:
            reason = "degenerate_box" if inside else "box_outside_image"
            counts[f"dropped:{reason}"] += 1
            issues.append(Issue(reason, f"{where_obj}: box {obj.hbb} of {obj.cls!r} dropped (image {width}x{height})"))
            continue
        if not inside:
            if not cfg.boxes.clip:
                counts["dropped:box_outside_image"] += 1
                issues.append(Issue("box_outside_image", f"{where_obj}: box {obj.hbb} leaves the {width}x{height} image"))
                continue
            counts["clipped"] += 1
            obj = replace(obj, hbb=(cx1, cy1, cx2, cy2))
        kept.append(obj)
    counts["kept"] = len(kept)
    return kept, counts, issues


def scaled(obj: ObjectAnn, scale: float) -> ObjectAnn:
    if scale == 1.0:
        return obj
    return replace(
        obj,
        hbb=tuple(v * scale for v in obj.hbb),
        obb=tuple(v * scale for v in obj.obb) if obj.obb is not None else None,
    )


def record_mask(record: Record, size: tuple[int, int]) -> "np.ndarray":
    """The record's mask, checked to be ``size`` (width, height) like its image."""
    try:
        mask = load_mask(record.mask_path)
    except FileNotFoundError:
        raise SampleSkip("missing_mask", f"{record.mask_path}: mask file not found") from None
    except (OSError, ValueError) as exc:
        raise SampleSkip("corrupt_mask", f"{record.mask_path}: cannot read mask ({exc})") from None
    if (mask.shape[1], mask.shape[0]) != tuple(size):
        raise SampleSkip(
            "mask_size_mismatch",
            f"{record.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, image {record.image_path} is {size[0]}x{size[1]}",
        )
    return mask


def mask_objects(record: Record, loaded: LoadedImage, cfg: BuildConfig) -> list[ObjectAnn]:
    """M2B: boxes from the record's mask (in original image pixels)."""
    mask = record_mask(record, loaded.orig_size)
    objects = boxes_from_mask(mask, record.mask_classes or {}, cfg.masks.ignore, cfg.masks.min_area)
    if not objects:
        raise SampleSkip("empty_mask", f"{record.mask_path}: no class region of at least {cfg.masks.min_area} px")
    return objects


SENSOR_NAMES = {"optical": "optical", "sar": "SAR", "infrared": "infrared"}


def sensor_captions(captions: list[str], sensor: str, cfg: BuildConfig) -> list[str]:
    """B2C captions wrapped in ``b2c.sensor_templates[sensor]`` (unchanged when the sensor has none):
    "a SAR image with {caption}" turns "3 ships at the edge of the picture." into "a SAR image with 3 ships at ..."."""
    template = cfg.b2c.sensor_templates.get(sensor)
    if not template:
        return captions
    lower = not template.startswith("{caption}")
    return [template.replace("{sensor}", SENSOR_NAMES[sensor]).replace("{caption}", c[:1].lower() + c[1:] if lower else c)
            for c in captions]


def choose_captions(record: Record, objects: list[ObjectAnn], loaded: LoadedImage, cfg: BuildConfig, rng: random.Random) -> list[str]:
    if record.captions:
        return list(record.captions)
    if not objects:
        raise SampleSkip("no_objects", f"{record.where()}: no usable object to caption and no caption given")
    width, height = loaded.size
    return sensor_captions(b2c_captions(
        caption_objects(objects, loaded.scale), width, height, rng, cfg.b2c.centre_fraction, cfg.b2c.many_above
    ), cfg.input.sensor_of(record.source), cfg)


def build_sample(index: int, record: Record, cfg: BuildConfig) -> Sample:
    """Turn one record into a Sample; never raises for a bad sample unless ``cfg.strict``."""
    key = make_key(record.source, record.rel_path)
    base = dict(index=index, key=key, source=record.source, path=str(record.image_path))
    counts: Counter = Counter()
    try:
        return _build(record, cfg, base, counts)
    except SampleSkip as skip:
        if cfg.strict:
            raise
        message = str(skip)
        return Sample(status="skip", reason=skip.reason, message=message, object_counts=skipped_object_counts(record, counts),
                      issues=[i for i in record.issues if i.message != message], **base)


def skipped_object_counts(record: Record, counts: Counter) -> dict:
    """A skipped image's objects, all dropped: the ones its annotation already lost under their own reasons,
    the rest as ``image_skipped`` (so report.json's object counts still balance: read = kept + dropped)."""
    if counts.get("read"):  # skipped after the boxes were checked (e.g. no object left): nothing was kept after all
        out = Counter({k: v for k, v in counts.items() if k.startswith("dropped:") or k == "read"})
        out["dropped:image_skipped"] += counts.get("kept", 0)
        return dict(out)
    object_issues = [i for i in record.issues if i.level != "record"]
    out = Counter({"read": len(record.objects) + len(object_issues)})
    out.update(f"dropped:{i.reason}" for i in object_issues)
    if record.objects:
        out["dropped:image_skipped"] += len(record.objects)
    return dict(out) if out["read"] else {}


def check_record_issues(record: Record, cfg: BuildConfig) -> list:
    """Raise SampleSkip for the record's first record-level issue (or, with ``--strict``, its first object issue);
    returns the object-level issues."""
    blocking = [i for i in record.issues if i.level == "record"]
    if blocking:
        raise SampleSkip(blocking[0].reason, blocking[0].message)
    object_issues = [i for i in record.issues if i.level != "record"]
    if cfg.strict and object_issues:
        raise SampleSkip(object_issues[0].reason, object_issues[0].message)
    return object_issues


def _build(record: Record, cfg: BuildConfig, base: dict, counts: Counter) -> Sample:
    """The work of build_sample; ``counts`` (object counts) is filled in place so a skip can still report them."""
    object_issues = check_record_issues(record, cfg)
    sensor = cfg.input.sensor_of(record.source)
    loaded = load_image(record.image_path, cfg.image, sensor)
    width, height = loaded.orig_size
    raw_objects = mask_objects(record, loaded, cfg) if record.mask_path is not None else record.objects
    objects, clipped_counts, box_issues = clip_objects(raw_objects, width, height, cfg, record.where())
    counts.update(clipped_counts)
    for issue in object_issues:
        counts[f"dropped:{issue.reason}"] += 1
    counts["read"] += len(object_issues)
    if cfg.strict and box_issues:
        raise SampleSkip(box_issues[0].reason, box_issues[0].message)
    rng = random.Random(f"{cfg.b2c.seed}:{base['key']}")
    captions = choose_captions(record, objects, loaded, cfg, rng)
    written = [scaled(o, loaded.scale) for o in objects]
    meta = sample_meta(record, base["key"], captions, written, loaded.size, loaded.orig_size, loaded.scale, loaded.notes, sensor)
    phash = image_phash(loaded.rgb, cfg.dedup.hash_side)
    meta["phash"] = f"{phash:016x}"
    return Sample(
        status="ok",
        phash=phash,
        jpg=jpeg_bytes(loaded, cfg.image.jpeg_quality),
        txt=rng.choice(captions),
        meta=meta,
        object_counts=dict(counts),
        issues=object_issues + box_issues,
        classes=dict(Counter(display_name(o.cls) for o in objects)),
        **base,
    )


def sample_meta(record: Record, key: str, captions: list[str], written: list[ObjectAnn], size: tuple[int, int],
                orig_size: tuple[int, int], scale: float, notes: list[str], sensor: str = "optical") -> dict:
    """A sample's ``<key>.json`` content (less its phash): ``size`` as written, ``orig_size`` as read; ``sensor``
    (optical, sar, infrared) is what took the image."""
    meta = {
        "key": key,
        "captions": captions,
        "source": record.source,
        "rel_path": record.rel_path,  # relative to the dataset root: shards never carry a machine's absolute paths
        "width": size[0],
        "height": size[1],
        "orig_width": orig_size[0],
        "orig_height": orig_size[1],
        "scale": round(scale, 6),
        "sensor": sensor,
        "caption_kind": "human" if record.captions else ("m2b+b2c" if record.mask_path is not None else "b2c"),
        "objects": [o.to_json() for o in written],
    }
    for name in ("split", "label"):
        if getattr(record, name) is not None:
            meta[name] = getattr(record, name)
    if record.meta:
        meta["source_meta"] = record.meta
    if notes:
        meta["conversion"] = notes
    return meta


def sample_json_bytes(sample: Sample) -> bytes:
    """The sample's ``<key>.json`` member (the shard format's sample json)."""
    return meta_json_bytes(sample.meta)
