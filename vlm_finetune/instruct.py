"""GeoChat instruction data: build LLaVA records (:mod:`rs_common.formats.llava_record`) from stage-0 datasets,
RSVQA and GeoChat-Bench.

:func:`build_instruct` turns the records of :func:`shards.readers.read_records` into single-turn samples, one per
task that the record's annotations allow:

- ``refer``: ``[refer] give me the location of <p>the plane at the top left</p>`` -> ``{<x1><y1><x2><y2>|<t>}``
- ``grounding``: ``[grounding] Describe the image in detail.`` -> ``There are <p>3 planes</p>{..}{..}{..} ...``
- ``identify``: ``[identify] What is the object present at {box}?`` -> ``plane``
- ``region_caption``: ``[identify] Give a short description of the region {box}.`` -> ``a plane at the top left ...``
- ``count`` / ``presence``: VQA, prompts ending ``Answer the question using a single word or phrase.``
- ``scene``: folders datasets, ``Classify the image from the following classes. Answer in one word or a short
  phrase.`` (the class list of that dataset given before it)
- ``caption``: caption datasets, ``Describe the image in detail.`` -> one of the human captions

``rsvqa:`` and ``geochat-bench:`` inputs give their questions and answers as they are
(:mod:`vlm_finetune.instruct_sources`). The samples of one image become single- or multi-turn records by the
``turns`` setting (:mod:`vlm_finetune.instruct_turns`). ``format="earthgpt"`` writes EarthGPT/MMRS-style unified
instructions instead (boxes normalised to [0, 1]; :mod:`vlm_finetune.earthgpt`); ``geochat`` is the default.

Boxes use :mod:`vlm_finetune.boxes` (0-100 grid, oriented when the source has an OBB). The sampling (which object,
which caption, which absent class, the order of the rounds) is seeded per image from ``(seed, source, rel_path)``:
the output does not depend on the order of the inputs nor on Python's hash seed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from rs_common.config import ConfigError
from rs_common.files import atomic_write_text
from rs_common.formats.llava_record import make_record, read_records
from vlm_finetune.earthgpt import plural
from vlm_finetune.instruct_report import write_instruct_report
from vlm_finetune.instruct_sources import (
    CLS_SUFFIX,
    SOURCE_FORMATS,
    VQA_SUFFIX,
    SourceCounts,
    read_source,
    source_root,
)
from vlm_finetune.instruct_turns import TURN_MODES, assemble, turn_summary, unique_ids

logger = logging.getLogger(__name__)

TASKS = ("refer", "grounding", "identify", "region_caption", "count", "presence", "scene", "caption")
POSITIONS = (("top left", "top", "top right"), ("left", "centre", "right"), ("bottom left", "bottom", "bottom right"))


class InstructError(ValueError):
    """Bad instruction data (names the record) or bad inputs to the builder."""


# ----------------------------------------------------------------------------------------------------------------
# reading / validating: the record format is rs_common.formats.llava_record's
# ----------------------------------------------------------------------------------------------------------------


def read_instruct_json(path) -> list[dict]:
    """Load and validate a LLaVA-format json list (or jsonl); errors (InstructError) name the file, record index
    and id."""
    return read_records(path, InstructError)


# ----------------------------------------------------------------------------------------------------------------
# building
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class InstructConfig:
    input: list[str] = field(default_factory=list, metadata={
        "help": "datasets as FORMAT:PATH: the formats of shards.readers (coco dota voc mask captions folders), "
                "rsvqa:DIR|*_questions.json (RSVQA-LR/HR json), geochat-bench:FILE.jsonl (GeoChat-Bench questions)"})
    output: str | None = field(default=None, metadata={"help": "the LLaVA-format json to write", "metavar": "JSON"})
    image_root: str | None = field(default=None, metadata={
        "help": "folder the 'image' paths are relative to (fine-tuning's --images); default: the deepest folder "
                "holding every input"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling (per image mixed with source and path)"})
    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={
        "help": "tasks to make from stage-0 datasets (rsvqa / geochat-bench inputs are converted whole): "
                + " ".join(TASKS)})
    max_boxes_per_phrase: int = field(default=10, metadata={"help": "grounding: at most this many boxes per phrase"})
    max_objects: int = field(default=100, metadata={"help": "images with more objects are skipped for box tasks"})
    turns: str = field(default="single", metadata={
        "help": "single: one question per record; multi: the questions of an image as conversations of up to "
                "max_turns rounds (<image> in the first only); both: the single-turn records and the multi-turn ones"})
    max_turns: int = field(default=3, metadata={"help": "rounds per multi-turn conversation (turns multi/both)"})
    format: str = field(default="geochat", metadata={
        "help": "geochat: GeoChat's prompts and {<x1><y1><x2><y2>|θ} boxes; earthgpt: EarthGPT/MMRS-style unified "
                "instructions, boxes [xmin, ymin, xmax, ymax] normalised to [0, 1] (vlm_finetune/earthgpt.py)"})
    obb: bool = field(default=False, metadata={
        "help": "format earthgpt: oriented boxes [x1, y1, ..., x4, y4] instead of horizontal ones"})
    name_sensor: bool = field(default=False, metadata={
        "help": "format earthgpt: name the sensor in prompts ('this SAR image'), from the record or --sensor"})
    sensor: str | None = field(default=None, metadata={
        "help": "format earthgpt: the sensor of inputs whose records carry none (optical, sar, infrared)"})
    bench_images: str | None = field(default=None, metadata={
        "help": "folder the image names of geochat-bench inputs are in (or in its <file stem>/ folder); default: "
                "the jsonl's folder", "metavar": "DIR"})

    def validate(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ConfigError(f"unknown tasks {bad}; valid: {', '.join(TASKS)}")
        for item in self.input:
            parse_input(item)
        if self.max_boxes_per_phrase < 1:
            raise ConfigError(f"max_boxes_per_phrase must be >= 1, got {self.max_boxes_per_phrase}")
        if self.max_objects < 1:
            raise ConfigError(f"max_objects must be >= 1, got {self.max_objects}")
        if not self.tasks:
            raise ConfigError(f"tasks must name at least one of {', '.join(TASKS)}")
        if self.turns not in TURN_MODES:
            raise ConfigError(f"turns must be one of {', '.join(TURN_MODES)}, got {self.turns!r}")
        if self.format not in ("geochat", "earthgpt"):
            raise ConfigError(f"format must be geochat or earthgpt, got {self.format!r}")
        if self.max_turns < 2:
            raise ConfigError(f"max_turns must be >= 2 (rounds of a multi-turn conversation), got {self.max_turns}")


def parse_input(item: str) -> tuple[str, str]:
    fmt, sep, path = str(item).partition(":")
    if not sep or not path:
        raise ConfigError(f"input {item!r} must be FORMAT:PATH, e.g. dota:data/dota")
    return fmt, path


def _human(name: str) -> str:
    """``BareLand`` / ``storage-tank`` / ``small_vehicle`` -> ``bare land`` / ``storage tank`` / ``small vehicle``."""
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(name))
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


def _position(hbb, width, height) -> str:
    cx = (hbb[0] + hbb[2]) / 2 / width
    cy = (hbb[1] + hbb[3]) / 2 / height
    col = min(2, max(0, int(cx * 3)))
    row = min(2, max(0, int(cy * 3)))
    return POSITIONS[row][col]


def _box(obj, width, height):
    from vlm_finetune.boxes import box_from_obb, box_from_pixels

    if obj.obb is not None and len(obj.obb) == 8:
        return box_from_obb(obj.obb, width, height)
    return box_from_pixels(obj.hbb, width, height)


def _sample(rec_id: str, image: str, question: str, answer: str, task: str) -> dict:
    return make_record(f"{rec_id}#{task}", image, question, answer, task=task)


def _image_size(record) -> tuple[int, int]:
    if record.width and record.height:
        return int(record.width), int(record.height)
    from PIL import Image

    with Image.open(record.image_path) as im:
        return im.size


def _kept_objects(record) -> tuple[list, int, int]:
    """The record's objects (non-difficult ones if any) whose centre lies on the image, and the image size (0, 0
    when there are no objects)."""
    objects = [o for o in record.objects if not o.difficult] or list(record.objects)
    if not objects:
        return [], 0, 0
    width, height = _image_size(record)
    # some shipped crops keep labels of the uncropped image: drop objects whose centre is off the image
    objects = [o for o in objects if 0 <= (o.hbb[0] + o.hbb[2]) / 2 < width and 0 <= (o.hbb[1] + o.hbb[3]) / 2 < height]
    return objects, width, height


def _earthgpt_samples(record, image, tasks, classes, objects, size, rng, cfg: InstructConfig) -> list[dict]:
    from vlm_finetune.earthgpt import EarthOptions, ImageView, earthgpt_samples

    objects = objects if len(objects) <= cfg.max_objects else []
    by_cls: dict[str, list] = {}
    for o in objects:
        by_cls.setdefault(_human(o.cls), []).append(o)
    view = ImageView(f"{record.source}/{record.rel_path}", image, size[0], size[1], objects, by_cls, _human, _position)
    opts = EarthOptions(obb=cfg.obb, name_sensor=cfg.name_sensor, sensor=cfg.sensor)
    return earthgpt_samples(record, view, set(tasks), classes, opts, rng)


def samples_for_record(record, image: str, tasks, classes: list[str], scene_classes: list[str], seed: int,
                       cfg: InstructConfig) -> list[dict]:
    """The instruction samples of one stage-0 record (see the module docstring)."""
    from vlm_finetune.boxes import format_boxes

    rng = random.Random(f"{seed}:{record.source}:{record.rel_path}")
    rec_id = f"{record.source}/{record.rel_path}"
    out: list[dict] = []
    objects, width, height = _kept_objects(record)
    if cfg.format == "earthgpt":
        return _earthgpt_samples(record, image, tasks, classes, objects, (width, height), rng, cfg)
    if objects and len(objects) <= cfg.max_objects:
        by_cls: dict[str, list] = {}
        for o in objects:
            by_cls.setdefault(_human(o.cls), []).append(o)
        names = sorted(by_cls)
        if "refer" in tasks:
            obj = rng.choice(objects)
            desc = f"the {_human(obj.cls)} at the {_position(obj.hbb, width, height)}"
            out.append(_sample(rec_id, image, f"[refer] give me the location of <p>{desc}</p>",
                               format_boxes([_box(obj, width, height)]), "refer"))
        if "grounding" in tasks:
            parts = []
            for name in names:
                objs = by_cls[name][:cfg.max_boxes_per_phrase]
                n = len(by_cls[name])
                boxes = format_boxes([_box(o, width, height) for o in objs])
                parts.append(f"<p>{n} {plural(name, n)}</p>{boxes}")
            text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
            verb = "is" if len(objects) == 1 else "are"
            out.append(_sample(rec_id, image, "[grounding] Describe the image in detail.",
                               f"There {verb} {text} in the image.", "grounding"))
        if "identify" in tasks:
            obj = rng.choice(objects)
            box = format_boxes([_box(obj, width, height)])
            out.append(_sample(rec_id, image, f"[identify] What is the object present at {box}?",
                               _human(obj.cls), "identify"))
        if "region_caption" in tasks:
            obj = rng.choice(objects)
            box = format_boxes([_box(obj, width, height)])
            name = _human(obj.cls)
            same = len(by_cls[name])
            tail = f" , one of {same} {plural(name, same)} in the image" if same > 1 else ""
            out.append(_sample(rec_id, image, f"[identify] Give a short description of the region {box}.",
                               f"a {name} at the {_position(obj.hbb, width, height)} of the image{tail}.",
                               "region_caption"))
        if "count" in tasks:
            name = rng.choice(names)
            out.append(_sample(rec_id, image, f"How many {plural(name, 2)} are there in the image? {VQA_SUFFIX}",
                               str(len(by_cls[name])), "count"))
        if "presence" in tasks:
            absent = [c for c in classes if c not in by_cls]
            if absent and rng.random() < 0.5:
                name, answer = rng.choice(absent), "No"
            else:
                name, answer = rng.choice(names), "Yes"
            out.append(_sample(rec_id, image, f"Is there a {name} in the image? {VQA_SUFFIX}", answer, "presence"))
    if record.label is not None and "scene" in tasks and scene_classes:
        listed = ", ".join(scene_classes)
        out.append(_sample(rec_id, image, f"Classes: {listed}.\n{CLS_SUFFIX}", _human(record.label), "scene"))
    captions = [c for c in record.captions if c.strip()]
    if captions and record.label is None and "caption" in tasks:  # folders records carry template captions only
        out.append(_sample(rec_id, image, "Describe the image in detail.", rng.choice(captions).strip(), "caption"))
    return out


def default_image_root(paths) -> Path:
    resolved = [str(Path(p).resolve()) for p in paths]
    return Path(os.path.commonpath(resolved)) if resolved else Path.cwd()


def _relative_image(path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        raise InstructError(f"image {path} is not under the image root {root}; "
                            "give an image_root holding every input") from None


def _dataset_groups(fmt: str, path: str, cfg: InstructConfig, seed: int, root: Path, stats: dict) -> list:
    """``(image id, single-turn samples)`` of each image of a stage-0 dataset; images counted in ``stats``."""
    from shards.build_config import BuildConfig
    from shards.readers import read_records
    from shards.record import Record

    source = f"{fmt}:{Path(path).name}"
    try:
        items = list(read_records(fmt, Path(path), source, BuildConfig()))
    except (ValueError, FileNotFoundError) as exc:
        raise InstructError(str(exc)) from None
    # readers yield DatasetIssues (e.g. an annotation of no image) between their records: counted, not samples
    records = [r for r in items if isinstance(r, Record)]
    stats["dataset_issues"] = stats.get("dataset_issues", 0) + len(items) - len(records)
    records.sort(key=lambda r: r.rel_path)
    classes = sorted({_human(o.cls) for r in records for o in r.objects})
    scene_classes = sorted({_human(r.label) for r in records if r.label is not None})
    counts = SourceCounts("image")
    groups = []
    for record in records:
        counts.read += 1
        where = str(record.image_path)
        if any(i.level == "record" for i in record.issues) or not Path(record.image_path).is_file():
            stats["skipped"] += 1
            counts.skip("missing_image" if not Path(record.image_path).is_file() else "record_issue", where)
            continue
        image = _relative_image(record.image_path, root)
        samples = samples_for_record(record, image, set(cfg.tasks), classes, scene_classes, seed, cfg)
        if not samples:
            counts.skip("no_task_applies", where)
            continue
        counts.written += 1
        groups.append((f"{record.source}/{record.rel_path}", samples))
    stats["sources"][f"{fmt}:{path}"] = counts.as_dict()
    return groups


def _source_groups(fmt: str, path: str, cfg: InstructConfig, root: Path, stats: dict) -> list:
    """``(image id, single-turn samples)`` of each image of an ``rsvqa:`` / ``geochat-bench:`` input."""
    counts = SourceCounts("question" if fmt == "rsvqa" else "line")
    images = read_source(fmt, path, cfg.bench_images, counts, InstructError)
    groups = []
    for group in images:
        image = _relative_image(group.image, root)
        groups.append((group.base_id, [make_record(rid, image, question, answer, task=task, **extra)
                                       for rid, task, question, answer, extra in group.items]))
    stats["sources"][f"{fmt}:{path}"] = counts.as_dict()
    return groups


def build_instruct(inputs, cfg: InstructConfig | None = None, seed: int | None = None, image_root=None,
                   stats: dict | None = None) -> list[dict]:
    """Instruction records from ``inputs`` = ``[(fmt, path), ...]`` (stage-0 datasets, ``rsvqa``,
    ``geochat-bench``); ``image`` paths are relative to ``image_root`` (default ``cfg.image_root``, else the deepest
    folder holding every input's images). Single- or multi-turn by ``cfg.turns`` (:mod:`vlm_finetune.instruct_turns`).
    Deterministic for a seed. ``stats`` (a dict) receives rounds per task, records by rounds, per-input counts
    (read = written + skipped by reason) and skipped stage-0 images."""
    cfg = cfg or InstructConfig()
    seed = cfg.seed if seed is None else seed
    inputs = [parse_input(i) if isinstance(i, str) else tuple(i) for i in inputs]
    if not inputs:
        raise InstructError("no inputs: give at least one FORMAT:PATH")
    if cfg.turns not in TURN_MODES:
        raise InstructError(f"turns must be one of {', '.join(TURN_MODES)}, got {cfg.turns!r}")
    root = Path(image_root or cfg.image_root or default_image_root(
        [source_root(f, p, cfg.bench_images) for f, p in inputs])).resolve()
    stats = stats if stats is not None else {}
    stats.setdefault("skipped", 0)
    stats.setdefault("sources", {})
    groups = []
    for fmt, path in inputs:
        if fmt in SOURCE_FORMATS:
            groups += _source_groups(fmt, path, cfg, root, stats)
        else:
            groups += _dataset_groups(fmt, path, cfg, seed, root, stats)
    out = [rec for base, samples in groups for rec in assemble(samples, base, cfg.turns, cfg.max_turns, seed)]
    stats["renamed_ids"] = unique_ids(out)
    stats.update(turn_summary(out))
    stats["image_root"] = str(root)
    stats["records"] = len(out)
    return out


def run_build_instruct(cfg: InstructConfig) -> dict:
    """The CLI: build, write ``cfg.output`` (json list) and its report, return a summary (image root, counts)."""
    if not cfg.output:
        raise InstructError("--output JSON is required")
    out = Path(cfg.output)
    if out.is_dir():
        raise InstructError(f"--output {out} is a folder (expected the path of the .json file to write)")
    if cfg.image_root and not Path(cfg.image_root).is_dir():
        raise InstructError(f"--image-root {cfg.image_root}: no such folder")
    stats: dict = {}
    data = build_instruct(cfg.input, cfg, stats=stats)
    if not data:
        skipped = {name: c["skipped"] for name, c in stats.get("sources", {}).items() if c["skipped"]}
        raise InstructError(f"no instruction records from {', '.join(cfg.input)} for tasks {', '.join(cfg.tasks)} "
                            f"({stats.get('skipped', 0)} images skipped; skipped by input: {skipped or 'none'}); "
                            f"nothing written to {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(data, indent=1))
    report = write_instruct_report(data, Path(stats["image_root"]), out.with_name(out.stem + "_report.html"))
    return {"output": str(out), "report": str(report), **stats}
