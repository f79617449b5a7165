"""DOTA_devkit's ImgSplit as a tool: a DOTA folder cut into overlapping tiles, written as a DOTA folder again.

    rs-split-dota --input DOTA_DIR --output OUT_DIR --tile.size 1024 --tile.overlap 200 [--tile.min-visible 0.7]

The grid and the object rules are :mod:`shards.tiling`'s (the same code the shard build tiles with): an object is
written in a tile when at least ``tile.min_visible`` of its area is inside, as its oriented box in tile pixels (a box
cut by the tile border becomes the minimum-area rectangle of the cut polygon); the others are counted as
``tile_partial_object`` (the devkit writes them with difficult 2). Scenes are read with :mod:`shards.readers`' dota
reader (every class kept as written) and read one window at a time where :mod:`shards.scene_reader` can (a tiled or
striped TIFF), else decoded once. Tiles are ``OUT/images/<stem>__1__<x0>___<y0>.png`` and
``OUT/labelTxt/<stem>__1__<x0>___<y0>.txt`` (the devkit's names at rate 1), label lines ``x1 y1 ... x4 y4 class
difficult`` after the scene's ``imagesource:`` / ``gsd:`` header lines. A tile with no object is written only with
``--keep-empty``.

Counts: ``objects`` per scene object, once each (``read`` = ``kept`` + the ``dropped`` reasons; kept = written in
at least one tile); ``objects.in_tiles`` per object and tile it overlaps (``kept`` whole, ``clipped``, ``partial``
= not written there); ``tiles.read`` = ``written`` + ``empty_not_written``. OUT/split_dota.json holds the summary (also printed as one JSON line); it marks the folder as
this tool's, so a rerun into it replaces only the tiles it wrote before.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rs_common.config import ConfigError
from rs_common.errors import SampleSkip
from rs_common.files import absolute, atomic_write_json, atomic_write_text, is_under
from rs_common.formats.dota import DotaHeader, parse_label_line
from rs_common.imageio import ImageConfig
from shards.build_config import BuildConfig, ClassConfig, TileConfig
from shards.readers import read_records
from shards.record import DatasetIssue, ObjectAnn, Record
from shards.scene_reader import open_scene
from shards.tiling import Box, object_in_tile, tile_grid

log = logging.getLogger(__name__)

SUMMARY = "split_dota.json"
TOOL = "rs-split-dota"
TILE_NAME = re.compile(r".+__1__\d+___\d+\.(png|txt)")


class SplitError(ValueError):
    """A refusal before anything is written (one line)."""


@dataclass
class SplitDotaConfig:
    input: Path = field(default=Path(), metadata={"help": "DOTA folder with images/ and labelTxt/", "metavar": "DIR"})
    output: Path = field(default=Path(), metadata={"help": "folder for images/ and labelTxt/ of the tiles (new, empty, or "
                                                           "one this tool wrote)", "metavar": "DIR"})
    tile: TileConfig = field(default_factory=lambda: TileConfig(size=1024))
    keep_empty: bool = field(default=False, metadata={"help": "also write tiles with no object (counted either way)"})
    image: ImageConfig = field(default_factory=ImageConfig)

    def validate(self) -> None:
        if str(self.input) in ("", ".") or str(self.output) in ("", "."):
            raise ConfigError("--input and --output are required")
        if self.tile.size < 1:
            raise ConfigError(f"tile.size must be >= 1, got {self.tile.size}")
        self.tile.validate()
        self.image.validate()


def tile_stem(stem: str, box: Box) -> str:
    """DOTA_devkit's tile name at rate 1: ``P0001__1__0___824``."""
    return f"{stem}__1__{box[0]}___{box[1]}"


def label_text(headers: list[str], objects: list[ObjectAnn]) -> str:
    """A DOTA label file: the header lines as read, then ``x1 y1 ... x4 y4 class difficult`` per object."""
    lines = list(headers)
    for obj in objects:
        if obj.obb is not None:
            corners = obj.obb
        else:
            x1, y1, x2, y2 = obj.hbb
            corners = (x1, y1, x2, y1, x2, y2, x1, y2)
        lines.append(" ".join(f"{round(v, 2):.10g}" for v in corners) + f" {obj.cls} {int(obj.difficult)}")
    return "".join(line + "\n" for line in lines)


def header_lines(label_path: str | None) -> list[str]:
    """The ``imagesource:`` / ``gsd:`` lines of a label file, as written."""
    if label_path is None:
        return []
    text = Path(label_path).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if isinstance(parse_label_line(line), DotaHeader)]


def prepare_output(cfg: SplitDotaConfig) -> Path:
    """OUT checked and marked as this tool's; tiles of an earlier run of this tool there are removed."""
    src, out = absolute(cfg.input), absolute(cfg.output)
    if any(a == b or is_under(a, b) or is_under(b, a) for a, b in ((src, out), (src.resolve(), out.resolve()))):
        raise SplitError(f"--output {out}: must lie outside the input folder {src} (and not contain it)")
    if out.exists() and not out.is_dir():
        raise SplitError(f"--output {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not is_own_output(out):
            raise SplitError(f"--output {out}: not empty and not written by {TOOL} (no {SUMMARY}); choose a new folder")
        for sub in ("images", "labelTxt"):
            for path in sorted((out / sub).iterdir()) if (out / sub).is_dir() else []:
                path.unlink()
    for sub in ("images", "labelTxt"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / SUMMARY, {"tool": TOOL, "status": "running"})
    return out


def is_own_output(out: Path) -> bool:
    """OUT holds only this tool's summary and tiles (any other file there and it is not ours to clear)."""
    try:
        if json.loads((out / SUMMARY).read_text()).get("tool") != TOOL:
            return False
    except (OSError, ValueError, AttributeError):
        return False
    for path in out.iterdir():
        if path.name == SUMMARY:
            continue
        if path.name not in ("images", "labelTxt") or not path.is_dir():
            return False
        if any(not (p.is_file() and TILE_NAME.fullmatch(p.name)) for p in path.iterdir()):
            return False
    return True


def split_scene(record: Record, cfg: SplitDotaConfig, out: Path, summary: dict) -> None:
    """Every tile of one scene written (or counted as empty); the scene's objects counted once each."""
    objects, tiles, objs = record.objects, summary["tiles"], summary["objects"]
    best: dict[int, str] = {}  # object index -> its best verdict over all tiles
    headers = header_lines(record.origin)
    scene = open_scene(record.image_path, cfg.image)
    try:
        width, height = scene.size
        for box in tile_grid(width, height, cfg.tile.size, cfg.tile.overlap):
            kept: list[ObjectAnn] = []
            for i, obj in enumerate(objects):
                verdict, local = object_in_tile(obj, box, cfg.tile.min_visible)
                if verdict != "outside":
                    best[i] = "kept" if verdict in ("kept", "clipped") or best.get(i) == "kept" else "partial"
                    objs["in_tiles"][verdict] += 1
                if local is not None:
                    kept.append(local)
            tiles["read"] += 1
            if not kept and not cfg.keep_empty:
                tiles["empty_not_written"] += 1
                continue
            name = tile_stem(record.image_path.stem, box)
            rgb, _ = scene.read(box)
            rgb.save(out / "images" / f"{name}.png")
            atomic_write_text(out / "labelTxt" / f"{name}.txt", label_text(headers, kept))
            tiles["written"] += 1
            tiles["written_empty"] += not kept
    finally:
        scene.close()
    verdicts = Counter(best.get(i, "outside") for i in range(len(objects)))
    objs["kept"] += verdicts["kept"]
    objs["dropped"]["tile_partial_object"] += verdicts["partial"]
    objs["dropped"]["box_outside_image"] += verdicts["outside"]


def skip_scene(record: Record, reason: str, summary: dict) -> None:
    summary["scenes"]["skipped"][reason] += 1
    summary["objects"]["dropped"]["image_skipped"] += len(record.objects)


def split_dota(cfg: SplitDotaConfig) -> dict:
    """Split ``cfg.input`` into ``cfg.output``; returns (and writes to OUT/split_dota.json) the summary."""
    out = prepare_output(cfg)
    build_cfg = BuildConfig(classes=ClassConfig(check_known=False), image=cfg.image)
    summary = {"scenes": {"read": 0, "split": 0, "skipped": Counter()},
               "tiles": Counter(read=0, written=0, written_empty=0, empty_not_written=0),
               "objects": {"read": 0, "kept": 0, "dropped": Counter(), "in_tiles": Counter()}}
    stems: set[str] = set()
    for item in read_records("dota", cfg.input, "dota", build_cfg):
        if isinstance(item, DatasetIssue):
            summary["objects"]["read"] += item.objects
            summary["objects"]["dropped"][item.reason] += item.objects
            continue
        split_record(item, cfg, out, summary, stems)
    result = {"tool": TOOL, "status": "done", "input": str(absolute(cfg.input)), "output": str(out),
              "tile": {"size": cfg.tile.size, "overlap": cfg.tile.overlap, "min_visible": cfg.tile.min_visible},
              "keep_empty": cfg.keep_empty, **json.loads(json.dumps(summary))}
    atomic_write_json(out / SUMMARY, result)
    return result


def split_record(record: Record, cfg: SplitDotaConfig, out: Path, summary: dict, stems: set[str]) -> None:
    """One record: its object counts, then its tiles, or a counted skip."""
    summary["scenes"]["read"] += 1
    objs = summary["objects"]
    object_issues = [i for i in record.issues if i.level != "record"]
    objs["read"] += len(record.objects) + len(object_issues)
    objs["dropped"].update(i.reason for i in object_issues)
    blocking = [i for i in record.issues if i.level == "record"]
    if blocking:
        log.warning("%s", blocking[0].message)
        return skip_scene(record, blocking[0].reason, summary)
    if record.image_path.stem in stems:
        log.warning("%s: another image of the same name was split already; skipped", record.image_path)
        return skip_scene(record, "duplicate_name", summary)
    if not record.image_path.is_file():
        return skip_scene(record, "missing_image", summary)
    stems.add(record.image_path.stem)
    try:
        split_scene(record, cfg, out, summary)
    except SampleSkip as skip:
        log.warning("%s", skip)
        return skip_scene(record, skip.reason, summary)
    summary["scenes"]["split"] += 1
