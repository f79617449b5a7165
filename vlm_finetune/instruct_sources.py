"""Question/answer datasets as instruction data: RSVQA-LR/HR (``rsvqa:``) and GeoChat-Bench (``geochat-bench:``).

``rsvqa:PATH`` reads RSVQA's released json layout (zenodo 6344334 / 6344367; the field names of RSVQA's
``DataSpecification.md``):

- ``*_questions.json`` ``{"questions": [{"id", "img_id", "type", "question", "answers_ids": [..], "active"}]}``,
  ``*_answers.json`` ``{"answers": [{"id", "question_id", "answer", "active"}]}``, ``*_images.json``
  ``{"images": [{"id", "questions_ids", "active"}]}``, linked by ids; image ``{id}.tif`` in ``Images_LR/``
  (LR), ``Data/`` (HR), ``Images_HR/`` or ``Images/`` beside the json files (or one folder up);
- PATH is a ``*_questions.json`` (its ``_answers``/``_images`` files beside it) or a folder, of which the
  ``*train_questions.json`` files are read (the test splits are what RSVQA scores on: name one to use it);
- each question becomes ``{question} Answer the question using a single word or phrase.`` -> its answer (task
  ``vqa``, the RSVQA ``type`` kept as ``question_type``), all the questions of an image together.

``geochat-bench:FILE.jsonl`` reads GeoChat-Bench question files (the formats :mod:`vlm_finetune.bench` scores) and
asks each question as the bench asks it, so training and evaluation prompts agree: scene (``{"question_id":
"<class>/<file>", "image", "text", "ground_truth"}``) and VQA records (``question_id, image, text, ground_truth``,
a question-type field ``category`` / ``type``, kept as ``question_type``) ask ``text`` as given, their instruction
line ("Classify the image from the following classes. ..." / "Answer the question using a single word or phrase.")
appended only when missing; referring / grounding records (``question_id, image_id, question, ground_truth,
type``, ``dataset``, ``obj_ids``, ``size_group``) ask ``[refer] Give me the location of <p> q </p>`` (type ``ref``)
or ``[grounding]q`` (GeoChat's evaluation prompts, spacing included), region captioning records (a caption as
``ground_truth``) ``[identify] What is the object present at q``; a question that starts with a task token is
asked as given. The answer is ``ground_truth``: text as it is, pixel geometry (4 corner points or ``[x1, y1, x2,
y2]`` per object) as GeoChat box text on the 0-100 grid against the image's size. The image is ``image``, else
``image_id`` (``.png`` added when it has no extension, as GeoChat's scripts do), at ``IMAGES/<name>`` or
``IMAGES/<stem>/<name>`` (``IMAGES``: the ``bench_images`` setting, default the jsonl's folder).

A bad question, line or image is counted by reason (:class:`SourceCounts`, read = written + skipped), never a
crash; a file or folder not in the layout is an :class:`InstructError`-type error naming it, before any record.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from rs_common.formats.llava_record import read_text_file

VQA_SUFFIX = "Answer the question using a single word or phrase."
CLS_SUFFIX = "Classify the image from the following classes. Answer in one word or a short phrase."
SOURCE_FORMATS = ("rsvqa", "geochat-bench")
RSVQA_IMAGE_DIRS = ("Images_LR", "Images_HR", "Data", "Images", "images", "data")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
BOX_TEXT = re.compile(r"^\s*\{\s*<")
TOKEN_TASKS = {"[refer]": "refer", "[grounding]": "grounding", "[identify]": "region_caption"}


@dataclass
class SourceCounts:
    """What one input gave: ``read`` items (questions or lines) = ``written`` + sum of ``skipped`` by reason."""

    unit: str
    read: int = 0
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    first: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.first.setdefault(reason, where)

    def as_dict(self) -> dict:
        return {"unit": self.unit, "read": self.read, "written": self.written,
                "skipped": dict(sorted(self.skipped.items())), "first_skipped": dict(sorted(self.first.items()))}


@dataclass
class ImageQA:
    """The question/answer items of one image: ``(record id, task, question, answer, extra fields)``."""

    base_id: str
    image: Path
    items: list[tuple[str, str, str, str, dict]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# RSVQA
# ----------------------------------------------------------------------------------------------------------------


def rsvqa_files(path: Path, error: type[Exception]) -> list[tuple[Path, Path, Path]]:
    """``(questions, answers, images)`` json triples of an ``rsvqa:`` PATH (see the module docstring)."""
    if path.is_dir():
        found = sorted(path.glob("*train_questions.json"))
        if not found:
            raise error(f"rsvqa:{path}: no *train_questions.json in this folder (RSVQA layout: LR_split_train_"
                        "questions.json, USGS_split_train_questions.json, ...); name a *_questions.json for another "
                        "split")
    elif path.is_file() and path.name.endswith("questions.json"):
        found = [path]
    else:
        raise error(f"rsvqa:{path}: not found or not a *_questions.json file / folder holding one")
    out = []
    for q in found:
        prefix = q.name[:-len("questions.json")]
        triple = (q, q.with_name(prefix + "answers.json"), q.with_name(prefix + "images.json"))
        for f in triple[1:]:
            if not f.is_file():
                raise error(f"rsvqa:{path}: {f.name} not found beside {q.name} (RSVQA ships questions, answers and "
                            "images json files together)")
        out.append(triple)
    return out


def rsvqa_image_dir(questions: Path, error: type[Exception]) -> Path:
    for base in (questions.parent, questions.parent.parent):
        for name in RSVQA_IMAGE_DIRS:
            if (base / name).is_dir():
                return base / name
    raise error(f"rsvqa:{questions}: no image folder ({', '.join(RSVQA_IMAGE_DIRS)}) beside it or one folder up")


def _json_list(path: Path, key: str, error: type[Exception]) -> list:
    text = read_text_file(path, error, "RSVQA file", "an RSVQA json file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid json: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise error(f"{path}: expected {{\"{key}\": [...]}} (RSVQA's layout)")
    return data[key]


def _by_id(entries: list) -> dict:
    return {e["id"]: e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), (int, str))}


def _find_image(folder: Path, name: str) -> Path | None:
    base = folder / name
    if base.suffix and base.is_file():
        return base
    for suffix in IMAGE_SUFFIXES:
        if (cand := folder / f"{name}{suffix}").is_file():
            return cand
    return None


def _rsvqa_answer(q: dict, answers: dict, by_question: dict) -> str | None:
    ids = q.get("answers_ids") if isinstance(q.get("answers_ids"), list) else []
    cands = [answers.get(i) for i in ids if isinstance(i, (int, str))] + by_question.get(q["id"], [])
    for a in cands:
        if isinstance(a, dict) and a.get("active", True) and isinstance(a.get("answer"), (str, int, float)) \
                and not isinstance(a.get("answer"), bool) and str(a["answer"]).strip():
            return str(a["answer"]).strip()
    return None


def _rsvqa_reason(q, images: dict, answers: dict, by_question: dict) -> str | None:
    """Why question entry ``q`` gives no sample (None: it does)."""
    if not isinstance(q, dict) or not isinstance(q.get("question"), str) or not q["question"].strip() \
            or not isinstance(q.get("id"), (int, str)) or not isinstance(q.get("img_id"), (int, str)):
        return "malformed_question"
    if not q.get("active", True):
        return "inactive_question"
    img = images.get(q["img_id"])
    if img is None:
        return "unknown_image"
    if not img.get("active", True):
        return "inactive_image"
    if _rsvqa_answer(q, answers, by_question) is None:
        return "no_answer"
    return None


def read_rsvqa(path, counts: SourceCounts, error: type[Exception]) -> list[ImageQA]:
    """The images of an ``rsvqa:`` PATH with their questions (see the module docstring)."""
    out: list[ImageQA] = []
    for qfile, afile, ifile in rsvqa_files(Path(path), error):
        folder = rsvqa_image_dir(qfile, error)
        questions = _json_list(qfile, "questions", error)
        answers_list = _json_list(afile, "answers", error)
        answers, images = _by_id(answers_list), _by_id(_json_list(ifile, "images", error))
        by_question: dict = {}
        for a in answers_list:
            if isinstance(a, dict) and "question_id" in a:
                by_question.setdefault(a["question_id"], []).append(a)
        split = f"rsvqa:{qfile.parent.name}/{qfile.name[:-len('questions.json')].rstrip('_') or 'rsvqa'}"
        groups: dict = {}
        files: dict = {}
        for n, q in enumerate(questions):
            counts.read += 1
            reason = _rsvqa_reason(q, images, answers, by_question)
            if reason is None:
                if q["img_id"] not in files:
                    files[q["img_id"]] = _find_image(folder, str(q["img_id"]))
                reason = None if files[q["img_id"]] is not None else "missing_image"
            if reason:
                counts.skip(reason, f"{qfile}: question {n}")
                continue
            counts.written += 1
            question = q["question"].strip()
            human = question if question.endswith(VQA_SUFFIX) else f"{question} {VQA_SUFFIX}"
            group = groups.setdefault(q["img_id"], ImageQA(f"{split}/{q['img_id']}", files[q["img_id"]]))
            group.items.append((f"{group.base_id}#q{q['id']}", "vqa", human, _rsvqa_answer(q, answers, by_question),
                                {"question_type": str(q.get("type", ""))}))
        out += [groups[k] for k in sorted(groups, key=lambda i: (str(type(i)), i))]
    return out


# ----------------------------------------------------------------------------------------------------------------
# GeoChat-Bench
# ----------------------------------------------------------------------------------------------------------------


def _numbers(obj) -> list[float] | None:
    """The numbers of a nested list of numbers, flattened; None when anything else is in it."""
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return [float(obj)]
    if isinstance(obj, (list, tuple)) and obj:
        out: list[float] = []
        for x in obj:
            nums = _numbers(x)
            if nums is None:
                return None
            out += nums
        return out
    return None


def geometry_answer(truth, image: Path) -> str | None:
    """GeoChat box text of pixel geometry: one object or a list of them, each 4 corner points (``[[x, y] x 4]`` or 8
    numbers, an oriented box) or ``[x1, y1, x2, y2]``, read against the image's size; None when not geometry."""
    from PIL import Image

    from vlm_finetune.boxes import box_from_obb, box_from_pixels, format_boxes

    whole = _numbers(truth)
    objects = [truth] if whole is not None and len(whole) in (4, 8) else truth
    if not isinstance(objects, list) or not objects:
        return None
    numbers = [_numbers(o) for o in objects]
    if any(n is None or len(n) not in (4, 8) for n in numbers):
        return None
    try:
        with Image.open(image) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - not an image: no size, the line is counted
        return None
    return format_boxes([box_from_obb(n, w, h) if len(n) == 8 else box_from_pixels(n, w, h) for n in numbers])


def bench_answer(truth, image: Path) -> str | None:
    """``ground_truth`` as answer text: a string or number as it is, box strings joined, pixel geometry as boxes."""
    if isinstance(truth, str):
        return truth.strip() or None
    if isinstance(truth, (int, float)) and not isinstance(truth, bool):
        return str(truth)
    if isinstance(truth, list) and truth and all(isinstance(g, str) and BOX_TEXT.match(g) for g in truth):
        return "".join(g.strip() for g in truth)
    return geometry_answer(truth, image)


def with_suffix(text: str, suffix: str) -> str:
    return text if suffix.lower() in text.lower() else f"{text.rstrip()}\n{suffix}"


def bench_question(rec: dict) -> tuple[str, str] | None:
    """``(task, human text)`` of a GeoChat-Bench record (see the module docstring), None when it has no question."""
    text = rec.get("text")
    if isinstance(text, str) and text.strip():
        text = text.strip()
        if "Classes:" in text or "Classify the image" in text:
            return "scene", with_suffix(text, CLS_SUFFIX)
        return "vqa", with_suffix(text, VQA_SUFFIX)
    question = rec.get("question")
    if not isinstance(question, str) or not question.strip():
        return None
    question = question.strip()
    for token, task in TOKEN_TASKS.items():
        if question.startswith(token):
            return task, question
    if str(rec.get("type", "")).strip().lower() == "ref":
        return "refer", f"[refer] Give me the location of <p> {question} </p>"
    truth = rec.get("ground_truth")
    if (isinstance(truth, str) and BOX_TEXT.match(truth)) or not isinstance(truth, str):
        return "grounding", "[grounding]" + question
    return "region_caption", f"[identify] What is the object present at {question}"


def bench_image(rec: dict, images: Path, stem: str) -> Path | str:
    """The image of a record: ``image``, else ``image_id`` (+ ``.png`` when it has no image extension, as GeoChat's
    scripts add), at ``IMAGES/<name>`` or ``IMAGES/<stem>/<name>``; else the reason it has none."""
    name = rec.get("image")
    if not (isinstance(name, str) and name.strip()):
        image_id = rec.get("image_id")
        if not isinstance(image_id, (str, int)) or isinstance(image_id, bool) or str(image_id).strip() == "":
            return "no_image"
        name = str(image_id).strip()
        name = name if Path(name).suffix.lower() in IMAGE_SUFFIXES + (".bmp", ".webp") else name + ".png"
    if Path(name).is_absolute() or ".." in Path(name).parts:
        return "image_outside_folder"
    return next((p for p in (images / name, images / stem / name) if p.is_file()), "missing_image")


def _bench_item(rec, images: Path, stem: str, seen: set) -> tuple[str, tuple | None]:
    """``("", (question id, image path, task, human, answer))`` for a usable line, else ``(reason, None)``."""
    if not isinstance(rec, dict):
        return "not_an_object", None
    image = bench_image(rec, images, stem)
    if isinstance(image, str):
        return image, None
    asked = bench_question(rec)
    if asked is None:
        return "no_question", None
    truth = next((rec[k] for k in ("ground_truth", "gt", "gt_answer") if rec.get(k) not in (None, "", [])), None)
    if truth is None:
        return "no_ground_truth", None
    answer = bench_answer(truth, image)
    if answer is None:
        return "unsupported_ground_truth", None
    qid = rec.get("question_id")
    if not isinstance(qid, (str, int)) or isinstance(qid, bool) or str(qid) == "":
        return "no_question_id", None
    if str(qid) in seen:
        return "duplicate_question_id", None
    seen.add(str(qid))
    return "", (str(qid), image, *asked, answer)


def read_geochat_bench(path, images, counts: SourceCounts, error: type[Exception]) -> list[ImageQA]:
    """The images of a GeoChat-Bench jsonl with their questions; ``images``: the folder the image names are in."""
    path = Path(path)
    text = read_text_file(path, error, "GeoChat-Bench file", "a GeoChat-Bench .jsonl file")
    images = Path(images)
    if not images.is_dir():
        raise error(f"geochat-bench:{path}: image folder {images} not found (bench_images)")
    groups: dict[str, ImageQA] = {}
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        counts.read += 1
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            counts.skip("bad_json", f"{path}:{n}")
            continue
        reason, item = _bench_item(rec, images, path.stem, seen)
        if item is None:
            counts.skip(reason, f"{path}:{n}")
            continue
        counts.written += 1
        qid, image, task, human, answer = item
        base = f"geochat-bench:{path.stem}/{image.relative_to(images).as_posix()}"
        group = groups.setdefault(base, ImageQA(base, image))
        kind = rec.get("category", rec.get("type"))
        extra = {"question_type": kind} if isinstance(kind, str) else {}
        group.items.append((f"geochat-bench:{path.stem}/{qid}", task, human, answer, extra))
    return [groups[k] for k in sorted(groups)]


def read_source(fmt: str, path, bench_images, counts: SourceCounts, error: type[Exception]) -> list[ImageQA]:
    """The images and questions of an ``rsvqa:`` or ``geochat-bench:`` input."""
    if fmt == "rsvqa":
        return read_rsvqa(path, counts, error)
    return read_geochat_bench(path, bench_images or Path(path).parent, counts, error)


def source_root(fmt: str, path, bench_images=None) -> Path:
    """The folder an input's images lie under (for the default image root): RSVQA's json folder's parent, the bench
    image folder, else the input path."""
    path = Path(path)
    if fmt == "rsvqa":
        return (path if path.is_dir() else path.parent).parent
    if fmt == "geochat-bench":
        return Path(bench_images) if bench_images else path.parent
    return path
