"""EarthGPT / MMRS-1M-style unified instructions (``build_instruct --format earthgpt``) and the parser of their boxes.

One instruction style for every task, the sensor optionally named ("this SAR image" instead of "this remote sensing
image", ``--name-sensor``; the sensor is the record's ``meta["sensor"]`` if the reader set one, else ``--sensor``):

- classification (``scene``): ``What is the category of this remote sensing image? Answer the question using a single
  word or phrase.`` -> the class name
- captioning (``caption``): one multi-turn conversation per image, one human caption per round, repeated captions
  (same text once lowercased, whitespace collapsed and the final period dropped) removed first
- VQA (``count`` + ``presence``): one multi-turn conversation per image: a count question per class present, then
  one presence question, each ending ``Answer the question using a single word or phrase.``
- detection (``grounding``): ``Detect all objects shown in the remote sensing image and describe using horizontal
  bounding boxes.`` (``oriented bounding boxes.`` with ``--obb``) -> one line per object ``class: [..]``
- visual grounding, description -> box (``refer``), box -> region caption (``region_caption``), box -> class
  (``identify``)

Boxes: ``[xmin, ymin, xmax, ymax]`` (HBB) or ``[x1, y1, x2, y2, x3, y3, x4, y4]`` (OBB: the first corner is the one
nearest the image origin (top left), the others follow in ascending angle ``atan2(dy, dx)`` seen from it), each
coordinate divided by the image width / height, clamped to [0, 1] and written with :data:`DECIMALS` decimals.
EarthGPT's README only says that coordinates are transformed (normalised); its exact answer text is not public, so
the ``class: [..]`` line form is this project's choice. Detection objects are listed in reading order (top, then
left, of their horizontal box).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

DECIMALS = 3
FORMATS = ("geochat", "earthgpt")
SINGLE = "Answer the question using a single word or phrase."
SENSOR_WORDS = {"optical": "optical", "sar": "SAR", "infrared": "infrared", "ir": "infrared"}
CLASSIFY = "What is the category of {img}? " + SINGLE
DETECT = "Detect all objects shown in the {kind} image and describe using {shape} bounding boxes."
CAPTION_FIRST = "Describe {img} in detail."
CAPTION_MORE = "Describe {img} again in other words."
REFER = "Output the {shape} bounding box of the region this sentence describes in {img}: {desc}."
REGION = "Give a short description of the region {box} in {img}."
IDENTIFY = "What is the category of the object in the region {box} of {img}? " + SINGLE


def image_phrase(sensor: str | None, name_sensor: bool) -> str:
    """``this remote sensing image``, or ``this SAR image`` / ``this optical image`` when the sensor is named."""
    if name_sensor and sensor:
        return f"this {SENSOR_WORDS.get(str(sensor).lower(), str(sensor))} image"
    return "this remote sensing image"


def _num(v: float) -> str:
    return f"{min(1.0, max(0.0, v)):.{DECIMALS}f}"


def hbb_text(hbb, width: float, height: float) -> str:
    """``[xmin, ymin, xmax, ymax]`` normalised by the image size."""
    x1, y1, x2, y2 = (float(v) for v in hbb)
    return "[" + ", ".join(_num(v) for v in (x1 / width, y1 / height, x2 / width, y2 / height)) + "]"


def order_corners(points) -> list[tuple[float, float]]:
    """4 corners: the one nearest the origin first (ties: smaller y, then x), the others by ascending angle from it."""
    pts = [(float(x), float(y)) for x, y in points]
    first = min(pts, key=lambda p: (p[0] ** 2 + p[1] ** 2, p[1], p[0]))
    rest = list(pts)
    rest.remove(first)
    rest.sort(key=lambda p: math.atan2(p[1] - first[1], p[0] - first[0]))
    return [first] + rest


def obb_text(points8, width: float, height: float) -> str:
    """``[x1, y1, ..., x4, y4]`` normalised, in the corner order of :func:`order_corners`."""
    vals = [float(v) for v in points8]
    pts = order_corners([(vals[2 * i] / width, vals[2 * i + 1] / height) for i in range(4)])
    return "[" + ", ".join(_num(c) for p in pts for c in p) + "]"


def object_box_text(obj, width: float, height: float, obb: bool) -> str:
    """An object's box: its OBB with ``obb`` (its HBB's corners when it has none), else its HBB."""
    if not obb:
        return hbb_text(obj.hbb, width, height)
    pts = obj.obb if obj.obb is not None and len(obj.obb) == 8 else None
    if pts is None:
        x1, y1, x2, y2 = obj.hbb
        pts = (x1, y1, x2, y1, x2, y2, x1, y2)
    return obb_text(pts, width, height)


# ---------------------------------------------------------------- parsing

@dataclass(frozen=True)
class EarthBox:
    """A parsed box: ``label`` (None when the answer names none) and 4 (HBB) or 8 (OBB) normalised numbers."""

    label: str | None
    coords: tuple[float, ...]

    @property
    def polygon(self) -> list[tuple[float, float]]:
        c = self.coords
        if len(c) == 4:
            return [(c[0], c[1]), (c[2], c[1]), (c[2], c[3]), (c[0], c[3])]
        return [(c[2 * i], c[2 * i + 1]) for i in range(4)]


@dataclass
class EarthParse:
    """Boxes found in a text and how many bracket groups could not be read as one."""

    boxes: list[EarthBox] = field(default_factory=list)
    n_malformed: int = 0

    def __iter__(self):
        return iter(self.boxes)


_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
# optional "label:" then "[...]" (a truncated group runs to the end of the line)
_ITEM = re.compile(r"(?:([^\[\]:\n,;]*?)\s*:\s*)?\[([^\[\]\n]*)(?:\]|$)", re.M)


def parse_earthgpt_boxes(text) -> EarthParse:
    """The ``[..]`` boxes of an EarthGPT-format answer, in order of appearance, with the ``label:`` before each (if
    any). A group that is not 4 or 8 numbers counts as malformed; never raises."""
    out = EarthParse()
    if not text:
        return out
    for m in _ITEM.finditer(str(text)):
        parts = [p.strip() for p in m.group(2).split(",")]
        if len(parts) not in (4, 8) or not all(re.fullmatch(_NUM, p) for p in parts):
            out.n_malformed += 1
            continue
        label = (m.group(1) or "").strip().lower() or None
        out.boxes.append(EarthBox(label, tuple(float(p) for p in parts)))
    return out


def looks_earthgpt(text) -> bool:
    """True when ``text`` holds at least one EarthGPT-format box (GeoChat's ``{<x1>..}`` boxes hold no ``[``)."""
    return bool(parse_earthgpt_boxes(text).boxes)


# ---------------------------------------------------------------- building

@dataclass
class EarthOptions:
    """The ``--format earthgpt`` settings of the builder."""

    obb: bool = False
    name_sensor: bool = False
    sensor: str | None = None


def dedup_captions(captions) -> list[str]:
    """Captions without repeats (compared lowercased, spaces collapsed, final period dropped); first kept."""
    seen, out = set(), []
    for c in captions:
        c = str(c).strip()
        key = re.sub(r"\s+", " ", c.lower()).rstrip(". ")
        if c and key not in seen:
            seen.add(key)
            out.append(c)
    return out


def plural(word: str, n: int) -> str:
    """English plural of a class name for ``n`` objects (the builder's counting questions and answers)."""
    if n == 1:
        return word
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


@dataclass
class ImageView:
    """What the builder knows of one image: id, path, size, its objects grouped by human class name, the helpers."""

    rec_id: str
    image: str
    width: int
    height: int
    objects: list
    by_cls: dict
    human: object  # class name -> words
    position: object  # (hbb, width, height) -> "top left" ...


def _make(view: ImageView, task: str, pairs) -> dict:
    from rs_common.formats.llava_record import make_conversation

    extra = {"task": task} if len(pairs) == 1 else {"task": task, "tasks": [task] * len(pairs)}
    return make_conversation(f"{view.rec_id}#{task}", view.image, pairs, **extra)


def caption_record(view: ImageView, captions, img: str) -> dict | None:
    captions = dedup_captions(captions)
    if not captions:
        return None
    pairs = [(CAPTION_FIRST.format(img=img) if k == 0 else CAPTION_MORE.format(img=img), c)
             for k, c in enumerate(captions)]
    return _make(view, "caption", pairs)


def vqa_record(view: ImageView, tasks, classes, img: str, rng: random.Random) -> dict | None:
    names = sorted(view.by_cls)
    pairs = []
    if "count" in tasks:
        pairs += [(f"How many {plural(n, 2)} are there in {img}? {SINGLE}", str(len(view.by_cls[n]))) for n in names]
    if "presence" in tasks:
        absent = [c for c in classes if c not in view.by_cls]
        name, answer = (rng.choice(absent), "No") if absent and rng.random() < 0.5 else (rng.choice(names), "Yes")
        pairs.append((f"Is there a {name} in {img}? {SINGLE}", answer))
    return _make(view, "vqa", pairs) if pairs else None


def detection_answer(view: ImageView, obb: bool) -> str:
    objs = sorted(view.objects, key=lambda o: (round(float(o.hbb[1]), 6), round(float(o.hbb[0]), 6)))
    return "\n".join(f"{view.human(o.cls)}: {object_box_text(o, view.width, view.height, obb)}" for o in objs)


def box_samples(view: ImageView, tasks, opts: EarthOptions, img: str, rng: random.Random) -> list[dict]:
    """Detection and the grounding tasks of an image with objects."""
    out = []
    shape = "oriented" if opts.obb else "horizontal"
    kind = img.removeprefix("this ")[: -len(" image")]
    if "grounding" in tasks:
        out.append(_make(view, "detect", [(DETECT.format(kind=kind, shape=shape), detection_answer(view, opts.obb))]))
    w, h = view.width, view.height
    if "refer" in tasks:
        obj = rng.choice(view.objects)
        desc = f"the {view.human(obj.cls)} at the {view.position(obj.hbb, w, h)}"
        out.append(_make(view, "refer", [(REFER.format(shape=shape, img=img, desc=desc),
                                          object_box_text(obj, w, h, opts.obb))]))
    if "region_caption" in tasks:
        obj = rng.choice(view.objects)
        name = view.human(obj.cls)
        same = len(view.by_cls[name])
        tail = f", one of {same} {plural(name, same)} in the image" if same > 1 else ""
        answer = f"a {name} at the {view.position(obj.hbb, w, h)} of the image{tail}."
        out.append(_make(view, "region_caption", [(REGION.format(box=object_box_text(obj, w, h, opts.obb), img=img),
                                                   answer)]))
    if "identify" in tasks:
        obj = rng.choice(view.objects)
        out.append(_make(view, "identify", [(IDENTIFY.format(box=object_box_text(obj, w, h, opts.obb), img=img),
                                             view.human(obj.cls))]))
    return out


def earthgpt_samples(record, view: ImageView, tasks, classes, opts: EarthOptions, rng: random.Random) -> list[dict]:
    """The EarthGPT-format records of one stage-0 record (see the module docstring); ``view.objects`` already
    filtered (empty when the image has none or too many)."""
    sensor = (record.meta or {}).get("sensor") or opts.sensor
    img = image_phrase(sensor, opts.name_sensor)
    out: list[dict] = []
    if view.objects:
        out += box_samples(view, tasks, opts, img, rng)
        if tasks & {"count", "presence"}:
            rec = vqa_record(view, tasks, classes, img, rng)
            out += [rec] if rec else []
    if record.label is not None and "scene" in tasks:
        out.append(_make(view, "scene", [(CLASSIFY.format(img=img), view.human(record.label))]))
    if record.captions and record.label is None and "caption" in tasks:
        rec = caption_record(view, record.captions, img)
        out += [rec] if rec else []
    return out
