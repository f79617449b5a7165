r"""GeoChat-Bench, read as released: the bench files of ``MBZUAI/GeoChat-Bench`` scored with GeoChat's metrics.

    python launch/eval_geochat.py --bench DIR --model MODEL_DIR --images IMAGES [--output DIR]
    python launch/eval_geochat.py --bench DIR --answers ANSWERS_DIR [--images IMAGES] [--output DIR]

Bench files (jsonl, one record a line, under ``--bench``), as GeoChat's ``geochat/eval/batch_geochat_*.py`` read
them. Field names are GeoChat's; where its release does not fix one, the plausible spellings are accepted (marked *):

* ``aid.jsonl``, ``UCmerced.jsonl``: ``{question_id: "<class>/<file>", image, text, ground_truth}``;
* ``lrben.jsonl``, ``hrben.jsonl``: ``{question_id, image, text, category}`` + the answer: ``ground_truth``
  (* or ``gt`` / ``gt_answer``); the released files may lack it: ``--lrben-gt`` / ``--hrben-gt`` then give RSVQA's
  ``*_answers.json`` (``{"answers": [{question_id, answer, active}]}``) or a jsonl of ``{question_id,
  ground_truth}``; the question type is ``category`` (* or ``type`` / ``question_type``);
* ``referring.jsonl``, ``grounding_description.jsonl``: ``{question_id, image_id, question, ground_truth, type,
  dataset, obj_ids, size_group}``; the image is ``image_id + ".png"`` (* or ``image``); ``ground_truth`` is pixel
  geometry per object (4 corner points, read against the image's size) * or GeoChat box text on the 0-100 grid;
* ``region_captioning.jsonl``: ``{question_id, image_id, question (the region), ground_truth (the caption)}``.

Prompts are GeoChat's, in vicuna_v1 (:func:`vlm_finetune.evaluate.answer_question`): scene and VQA ``text`` as it
is (its instruction line appended only when missing: "Classify the image from the following classes. Answer in one
word or a short phrase." / "Answer the question using a single word or phrase."); ``type == "ref"``:
``[refer] Give me the location of <p> {question} </p>``, other grounding records ``[grounding]{question}``; region
captioning ``[identify] What is the object present at {question}``. Images are looked up at ``IMAGES/<name>``, then
``IMAGES/<stem>/<name>`` (one folder per bench file, e.g. ``IMAGES/lrben/``); never outside ``IMAGES``.

Answers go to ``OUTPUT/answers/<stem>.jsonl`` in GeoChat's answers-file format (``question_id, image_id, answer,
ground_truth`` + the record's task fields), so GeoChat's scripts and ``--answers`` read each other's output;
``--answers DIR`` holds one answers file per bench file, named like it, and without ``--bench`` the answers files
are scored on their own fields. A malformed line or record is counted by reason, never a crash; per file
``n_lines = n_records + n_malformed``; a record without an answer (none in the answers file, image missing) counts
as wrong (``n_no_answer``). Missing bench files are skipped with a line saying so. Output: ``metrics.json`` (stem ->
metrics, percent; rules in :mod:`vlm_finetune.bench_metrics`), ``table.md`` and ``report.html`` (ours beside
GeoChat's published numbers, :mod:`vlm_finetune.bench_report`), ``run.json`` (counts, skipped files, settings).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from rs_common.config import ConfigError
from rs_common.files import IMAGE_EXTENSIONS, atomic_write_json, atomic_write_text, check_output_folder

from .bench_metrics import BENCH_FILES, BOX_RULES, BOXES, CAPTION, SCENE, VQA, reference_boxes, scene_class, \
    score_file, vqa_truth

log = logging.getLogger(__name__)

SCENE_SUFFIX = "Classify the image from the following classes. Answer in one word or a short phrase."
VQA_SUFFIX = "Answer the question using a single word or phrase."
TASK_FIELDS = ("text", "question", "type", "category", "dataset", "obj_ids", "size_group")


class BenchError(ValueError):
    """A bench run that cannot start (no bench folder, no bench file, bad settings): a one-line error."""


@dataclass
class BenchConfig:
    bench: str | None = field(default=None, metadata={
        "help": "folder with GeoChat-Bench's files as released (aid.jsonl, UCmerced.jsonl, lrben.jsonl, hrben.jsonl, "
                "referring.jsonl, grounding_description.jsonl, region_captioning.jsonl)", "metavar": "DIR"})
    model: str | None = field(default=None, metadata={"help": "HF Llava GeoChat directory to generate answers with",
                                                      "metavar": "DIR"})
    answers: str | None = field(default=None, metadata={
        "help": "score these answers files (one per bench file, named like it) instead of running a model",
        "metavar": "DIR"})
    images: str | None = field(default=None, metadata={"help": "image root: IMAGES/<name> or IMAGES/<stem>/<name>",
                                                       "metavar": "DIR"})
    output: str | None = field(default=None, metadata={"help": "output folder (default runs/geochat_bench)"})
    files: list[str] = field(default_factory=list, metadata={"help": "only these bench files (stems, e.g. aid lrben)"})
    adapter: str | None = field(default=None, metadata={"help": "peft (LoRA) adapter directory to apply"})
    lrben_gt: str | None = field(default=None, metadata={"help": "RSVQA-LR answers (when lrben.jsonl has none)"})
    hrben_gt: str | None = field(default=None, metadata={"help": "RSVQA-HR answers (when hrben.jsonl has none)"})
    max_new_tokens: int = field(default=256, metadata={"help": "generation length (GeoChat's scripts: 256)"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    iou_threshold: float = field(default=0.5, metadata={"help": "IoU for a box hit"})
    box_rule: str = field(default="auto", metadata={"help": "auto (first box; all objects one-to-one for "
                                                            "multi-object), first, best or all"})
    limit: int | None = field(default=None, metadata={"help": "only the first N records of each bench file"})

    def validate(self) -> None:
        if not self.bench and not self.answers:
            raise ConfigError("give --bench DIR (with --model or --answers) or --answers DIR")
        if self.answers and self.model:
            raise ConfigError("give --model (generate answers) or --answers (score saved ones), not both")
        if not self.answers and not self.model:
            raise ConfigError("--bench needs --model DIR (to generate answers) or --answers DIR")
        if self.model and not self.images:
            raise ConfigError("--model needs --images DIR (the root the bench files' image names are relative to)")
        unknown = [f for f in self.files if f not in BENCH_FILES]
        if unknown:
            raise ConfigError(f"files {unknown}: use bench file stems: {', '.join(BENCH_FILES)}")
        if self.box_rule not in BOX_RULES:
            raise ConfigError(f"box_rule {self.box_rule!r}: use one of {', '.join(BOX_RULES)}")
        if not 0 < self.iou_threshold <= 1:
            raise ConfigError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1 (or left out for every record), got {self.limit}")


# ---------------------------------------------------------------- files

def read_jsonl(path: Path, limit: int | None = None) -> tuple[list[dict], Counter, int]:
    """``(objects, malformed reasons, non-blank lines)`` of a jsonl file (a file holding one JSON list is read as
    its items), its first ``limit`` lines when given; a line that is not a JSON object is counted, never raised."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    lines = whole if isinstance(whole, list) else [ln for ln in text.splitlines() if ln.strip()]
    lines = lines[:limit] if limit is not None else lines
    rows, bad = [], Counter()
    for line in lines:
        try:
            row = json.loads(line) if isinstance(line, str) else line
        except json.JSONDecodeError:
            bad["not_json"] += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad["not_an_object"] += 1
    return rows, bad, len(lines)


def load_rsvqa_truth(path) -> dict[str, str]:
    """``{question_id: answer}`` from RSVQA's ``*_answers.json`` (active answers) or a json/jsonl of
    ``{question_id, ground_truth | answer}``."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{path}: RSVQA answers file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data.get("answers", []) if isinstance(data, dict) else data
    except json.JSONDecodeError:
        rows, _, _ = read_jsonl(path)
    truth = {}
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and "question_id" in row and row.get("active", True) is not False:
            value = row.get("ground_truth", row.get("answer"))
            if value is not None:
                truth[str(row["question_id"])] = str(value)
    return truth


def image_name(record: dict) -> str | None:
    """The record's image file name: ``image``, else ``image_id`` (+ ``.png`` when it has no image extension)."""
    if isinstance(record.get("image"), str) and record["image"]:
        return record["image"]
    image_id = record.get("image_id")
    if image_id is None or isinstance(image_id, bool):
        return None
    name = str(image_id)
    return name if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name + ".png"


def find_image(images, stem: str, record: dict) -> Path | None:
    """``IMAGES/<name>`` or ``IMAGES/<stem>/<name>``; None when absent or when the name leaves the root."""
    name = image_name(record)
    if images is None or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return None
    root = Path(images)
    return next((p for p in (root / name, root / stem / name) if p.is_file()), None)


def image_size(images, stem: str, record: dict) -> tuple[int, int] | None:
    from PIL import Image

    path = find_image(images, stem, record)
    if path is None:
        return None
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - a broken image: no size, the record is counted as such
        return None


def record_problem(kind: str, record: dict, stem: str, images) -> str | None:
    """Why ``record`` cannot be scored (None when it can); box records get their ``ref_boxes`` here."""
    if record.get("question_id") is None:
        return "no_question_id"
    if kind == SCENE and scene_class(record) is None:
        return "no_class_in_question_id"
    if kind == VQA and vqa_truth(record) is None:
        return "no_ground_truth"
    if kind == CAPTION and not (isinstance(record.get("ground_truth"), str) and record["ground_truth"].strip()):
        return "no_ground_truth"
    if kind == BOXES:
        truth = record.get("ground_truth")
        size = image_size(images, stem, record) if images and not isinstance(truth, str) else None
        boxes, problem = reference_boxes(truth, size)
        record["ref_boxes"] = boxes
        return problem
    return None


def load_bench_file(path: Path, kind: str, images, truth: dict[str, str] | None = None,
                    limit: int | None = None) -> tuple[list[dict], dict]:
    """The usable records of one bench (or answers) file and its counts (``n_lines = n_records + n_malformed``)."""
    rows, bad, n_lines = read_jsonl(path, limit)
    records = []
    for row in rows:
        if truth and kind == VQA and vqa_truth(row) is None and str(row.get("question_id")) in truth:
            row["ground_truth"] = truth[str(row["question_id"])]
        problem = record_problem(kind, row, path.stem, images)
        if problem:
            bad[problem] += 1
        else:
            records.append(row)
    counts = {"n_lines": n_lines, "n_records": len(records), "n_malformed": sum(bad.values()),
              "malformed": dict(sorted(bad.items()))}
    return records, counts


def attach_answers(records: list[dict], path: Path) -> dict:
    """Put each answer of the answers file ``path`` on its record (by ``question_id``; repeated ids pair in order);
    returns the answers file's counts."""
    rows, bad, n_lines = read_jsonl(path)
    by_id: dict[str, deque] = {}
    for row in rows:
        if row.get("question_id") is None or not isinstance(row.get("answer"), str):
            bad["no_question_id_or_answer"] += 1
            continue
        by_id.setdefault(str(row["question_id"]), deque()).append(row["answer"])
    matched = 0
    for rec in records:
        queue = by_id.get(str(rec["question_id"]))
        rec["answer"] = queue.popleft() if queue else None
        matched += rec["answer"] is not None
    unmatched = sum(len(q) for q in by_id.values())
    return {"n_lines": n_lines, "n_matched": matched, "n_unmatched": unmatched, "n_malformed": sum(bad.values()),
            "malformed": dict(sorted(bad.items()))}


# ---------------------------------------------------------------- prompts and generation

def with_suffix(text: str, suffix: str) -> str:
    return text if suffix.lower() in text.lower() else f"{text.rstrip()}\n{suffix}"


def bench_prompt(kind: str, record: dict) -> str | None:
    """The question GeoChat asks for ``record`` (before the vicuna_v1 template); None when the record has none."""
    key = "text" if kind in (SCENE, VQA) else "question"
    text = record.get(key, record.get("text" if key == "question" else "question"))
    if not isinstance(text, str) or not text.strip():
        return None
    if kind == SCENE:
        return with_suffix(text, SCENE_SUFFIX)
    if kind == VQA:
        return with_suffix(text, VQA_SUFFIX)
    if kind == BOXES:
        if str(record.get("type", "")).strip().lower() == "ref":
            return f"[refer] Give me the location of <p> {text} </p>"
        return "[grounding]" + text
    return "[identify] What is the object present at " + text


def answer_row(record: dict) -> dict:
    """One line of GeoChat's answers-file format."""
    row = {"question_id": record["question_id"], "image_id": record.get("image_id", record.get("image")),
           "answer": record["answer"], "ground_truth": record.get("ground_truth")}
    row.update({k: record[k] for k in TASK_FIELDS if k in record})
    return row


def generate_answers(chat, kind: str, stem: str, records: list[dict], cfg: BenchConfig) -> Counter:
    """Answer every record with the model (``chat`` = ``(model, processor)``); a record whose image is missing or
    does not decode, or that has no question, gets no answer and is counted by reason."""
    from PIL import Image

    from .evaluate import answer_question

    model, processor = chat
    skipped: Counter = Counter()
    t0 = time.time()
    for i, rec in enumerate(records):
        rec["answer"] = None
        prompt, path = bench_prompt(kind, rec), find_image(cfg.images, stem, rec)
        if prompt is None or path is None:
            skipped["no_question" if prompt is None else "missing_image"] += 1
            continue
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except Exception as exc:  # noqa: BLE001 - truncated data, decompression bombs...
            log.warning("%s %s: %s does not decode (%s): no answer", stem, rec["question_id"], path, exc)
            skipped["unreadable_image"] += 1
            continue
        rec["answer"] = answer_question(model, processor, image, prompt, cfg.max_new_tokens)
        if (i + 1) % 50 == 0:
            log.info("%s: %d/%d answered (%.1f s)", stem, i + 1, len(records), time.time() - t0)
    return skipped


# ---------------------------------------------------------------- the run

def bench_sources(cfg: BenchConfig) -> tuple[dict[str, Path], list[str]]:
    """``{stem: file to read records from}`` and the lines about skipped files."""
    root = Path(cfg.bench or cfg.answers)
    if not root.is_dir():
        raise BenchError(f"{'--bench' if cfg.bench else '--answers'} {root}: not a folder")
    found, skipped = {}, []
    for stem in cfg.files or list(BENCH_FILES):
        path = root / f"{stem}.jsonl"
        if path.is_file():
            found[stem] = path
        else:
            skipped.append(f"{stem}: no {path.name} in {root}: skipped")
    if not found:
        raise BenchError(f"{root}: holds none of GeoChat-Bench's files ({', '.join(s + '.jsonl' for s in BENCH_FILES)})")
    return found, skipped


def score_one(stem: str, path: Path, cfg: BenchConfig, chat, out_dir: Path) -> dict | None:
    """Load, answer (model) or attach answers (``--answers``), and score one bench file; None when skipped."""
    kind = BENCH_FILES[stem]
    gt_file = {"lrben": cfg.lrben_gt, "hrben": cfg.hrben_gt}.get(stem)
    records, counts = load_bench_file(path, kind, cfg.images, load_rsvqa_truth(gt_file) if gt_file else None,
                                      cfg.limit)
    if cfg.answers and cfg.bench:
        answers = Path(cfg.answers) / path.name
        if not answers.is_file():
            return None
        counts["answers"] = attach_answers(records, answers)
    elif chat is not None:
        counts["no_answer_reasons"] = dict(sorted(generate_answers(chat, kind, stem, records, cfg).items()))
        (out_dir / "answers").mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "answers" / path.name, "".join(
            json.dumps(answer_row(r), ensure_ascii=False) + "\n" for r in records if r["answer"] is not None))
    else:  # answers files scored on their own fields
        for rec in records:
            rec["answer"] = rec["answer"] if isinstance(rec.get("answer"), str) else None
    metrics = score_file(kind, records, cfg.iou_threshold, cfg.box_rule)
    metrics.update(counts)
    return metrics


def run_bench(cfg: BenchConfig) -> dict:
    """Score every GeoChat-Bench file found; write metrics.json, table.md, report.html, run.json (+ answers/)."""
    from .bench_report import write_tables

    cfg.validate()
    if cfg.answers and not Path(cfg.answers).is_dir():
        raise BenchError(f"--answers {cfg.answers}: not a folder")
    if cfg.images and not Path(cfg.images).is_dir():
        raise BenchError(f"--images {cfg.images}: not a folder")
    sources, skipped = bench_sources(cfg)
    out_dir = check_output_folder(cfg.output or Path("runs") / "geochat_bench", BenchError)
    chat = None
    if cfg.model:
        from .evaluate import EvalError, load_for_inference

        try:
            chat = load_for_inference(cfg.model, cfg.adapter, cfg.device)
        except EvalError as exc:
            raise BenchError(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for stem, path in sources.items():
        metrics = score_one(stem, path, cfg, chat, out_dir)
        if metrics is None:
            skipped.append(f"{stem}: no {path.name} in --answers {cfg.answers}: skipped")
        else:
            results[stem] = metrics
    for line in skipped:
        log.info("%s", line)
    atomic_write_json(out_dir / "metrics.json", results)
    write_tables(out_dir, results, skipped)
    run = {"source": "answers" if cfg.answers else "model", "bench": cfg.bench, "answers": cfg.answers,
           "model": cfg.model, "adapter": cfg.adapter, "images": cfg.images, "skipped": skipped,
           "files": {s: {k: m[k] for k in m if k.startswith("n_") or k in ("malformed", "answers")}
                     for s, m in results.items()}}
    atomic_write_json(out_dir / "run.json", run)
    return {"metrics": results, "skipped": skipped, "output": str(out_dir)}


def pick_eval_tool(argv: list[str]) -> tuple[type, object]:
    """``launch/eval_geochat.py``'s two modes: GeoChat-Bench (``--bench`` / ``--answers`` given) or one task on
    LLaVA-format data (:class:`vlm_finetune.evaluate.EvalGeoChatConfig`)."""
    from .evaluate import EvalGeoChatConfig, evaluate_geochat

    bench = any(a in ("--bench", "--answers") or a.startswith(("--bench=", "--answers=")) for a in argv)
    return (BenchConfig, run_bench) if bench else (EvalGeoChatConfig, evaluate_geochat)
