"""GeoChat-Bench scoring: the metrics of GeoChat's paper on its released bench files, as pure functions.

Each ``score_*`` takes the bench items of one file, each a record of the file (a dict) with the model's text under
``"answer"`` (``None`` when there is none: counted in ``n_no_answer`` and scored as wrong), and returns the metrics in
percent plus the counts. What is GeoChat's own rule and what is ours:

* **Scene classification** (``aid``, ``UCmerced``): GeoChat's rule (``geochat/eval/batch_geochat_scene.py``): the
  class is ``question_id`` before the first ``/``, lowercased; the answer is lowercased with every space and dot
  removed; exact match. (A ``question_id`` without ``/`` falls back to the record's ``ground_truth``.)
* **RSVQA** (``lrben``, ``hrben``): GeoChat released no VQA scorer; the answer rule is the scene rule applied to both
  sides (``"Yes."`` == ``"yes"``). The question type is read from ``category`` (what GeoChat-Bench's files use),
  else ``type`` / ``question_type``; RSVQA's spellings are mapped to ``presence``, ``comparison`` (``comp``),
  ``rural_urban`` (``rural/urban``, ``urban_rural``), ``count``, ``area``. ``average`` is the accuracy over all
  questions of the types of the paper's table (presence, comparison, rural/urban: count and area are excluded, as
  in the paper), i.e. weighted by question count; ``mean_of_types`` is the unweighted mean of those types beside it.
* **Referring / grounding** (``referring``, ``grounding_description``): acc@0.5 with rotated IoU on the 0-100 grid
  (:mod:`vlm_finetune.metrics`, :mod:`vlm_finetune.boxes`). A single-object sample is a hit when the FIRST predicted
  box has IoU >= 0.5 with the reference; a multi-object sample when every reference box is matched one-to-one
  (greedy, highest IoU first) by a predicted box with IoU >= 0.5 (GeoChat's paper does not say; ``box_rule``
  ``first`` / ``best`` / ``all`` applies one rule to every sample). Split keys: ``small`` / ``medium`` / ``large``
  (``size_group``), ``single`` / ``multi`` (``obj_ids``: more than one id = multi; without it, the number of
  reference boxes), ``refer`` / ``grounding`` (``type == "ref"`` or not), ``overall``.
* **Region captioning** (``region_captioning``): ROUGE-1 / ROUGE-L F (``rouge_score``, no stemming) and METEOR
  (nltk; with WordNet synonyms when its data is installed, else exact + stem matches only, noted in ``meteor_impl``).
"""

from __future__ import annotations

import math
import re
from collections import Counter

from .boxes import Box, box_from_obb, box_from_pixels, parse_boxes
from .metrics import meteor, rotated_iou, rouge_scores, sample_iou

SCENE, VQA, BOXES, CAPTION = "scene", "vqa", "boxes", "caption"
BENCH_FILES = {  # stem -> kind, in the order of GeoChat's paper tables
    "UCmerced": SCENE, "aid": SCENE, "lrben": VQA, "hrben": VQA,
    "referring": BOXES, "grounding_description": BOXES, "region_captioning": CAPTION,
}
PAPER_VQA_TYPES = ("presence", "comparison", "rural_urban")
VQA_TYPE_ALIASES = {"comp": "comparison", "comparison": "comparison", "presence": "presence",
                    "rural_urban": "rural_urban", "rural/urban": "rural_urban", "urban_rural": "rural_urban",
                    "rural urban": "rural_urban", "ruralurban": "rural_urban", "count": "count", "counting": "count",
                    "area": "area"}
BOX_SPLITS = ("overall", "small", "medium", "large", "single", "multi", "refer", "grounding")
BOX_RULES = ("auto", "first", "best", "all")


def pct(hits: int, n: int) -> float:
    return 100.0 * hits / n if n else 0.0


def no_answer_count(items) -> int:
    return sum(1 for it in items if it.get("answer") is None)


# ---------------------------------------------------------------- scene classification and RSVQA

def geochat_norm(text) -> str:
    """GeoChat's answer normalisation: lowercase, every space and dot removed."""
    return str(text).replace(" ", "").lower().replace(".", "")


def scene_class(record: dict) -> str | None:
    """The reference class of a scene record: ``question_id`` before the first ``/``, lowercased (GeoChat's rule)."""
    qid = str(record.get("question_id", ""))
    if "/" in qid:
        return qid.split("/")[0].lower()
    gt = record.get("ground_truth")
    return str(gt).lower() if isinstance(gt, str) and gt.strip() else None


def scene_hit(record: dict) -> bool:
    answer, cls = record.get("answer"), scene_class(record)
    return answer is not None and cls is not None and geochat_norm(answer) == geochat_norm(cls)


def score_scene(items: list[dict]) -> dict:
    hits = sum(scene_hit(it) for it in items)
    return {"accuracy": pct(hits, len(items)), "n": len(items), "n_correct": hits,
            "n_no_answer": no_answer_count(items)}


def vqa_type(record: dict) -> str:
    """The RSVQA question type of a record, mapped to the paper's names (``unknown`` when the record has none)."""
    raw = next((record[k] for k in ("category", "type", "question_type") if isinstance(record.get(k), str)), None)
    if raw is None:
        return "unknown"
    key = raw.strip().lower()
    return VQA_TYPE_ALIASES.get(key, key.replace(" ", "_"))


def vqa_truth(record: dict) -> str | None:
    for key in ("ground_truth", "gt", "gt_answer"):
        if isinstance(record.get(key), (str, int, float)) and not isinstance(record.get(key), bool):
            return str(record[key])
    return None


def score_vqa(items: list[dict]) -> dict:
    per_type: dict[str, list[int]] = {}
    for it in items:
        truth, answer = vqa_truth(it), it.get("answer")
        hit = answer is not None and truth is not None and geochat_norm(answer) == geochat_norm(truth)
        per_type.setdefault(vqa_type(it), [0, 0])
        per_type[vqa_type(it)][0] += int(hit)
        per_type[vqa_type(it)][1] += 1
    order = [t for t in (*PAPER_VQA_TYPES, "count", "area") if t in per_type] + \
        sorted(t for t in per_type if t not in (*PAPER_VQA_TYPES, "count", "area"))
    accuracy = {t: pct(per_type[t][0], per_type[t][1]) for t in order}
    paper = [t for t in PAPER_VQA_TYPES if t in per_type]
    hits = sum(per_type[t][0] for t in paper)
    n = sum(per_type[t][1] for t in paper)
    accuracy["average"] = pct(hits, n)
    out = {"accuracy": accuracy,
           "mean_of_types": sum(accuracy[t] for t in paper) / len(paper) if paper else 0.0,
           "average_over": paper, "n": len(items), "n_by_type": {t: per_type[t][1] for t in order},
           "n_no_answer": no_answer_count(items)}
    return out


# ---------------------------------------------------------------- referring / grounding

def _numbers(value) -> list[float] | None:
    """A flat list of finite numbers from ``[x, y, ...]`` or ``[[x, y], ...]``; None for anything else."""
    flat = []
    for v in value:
        if isinstance(v, (list, tuple)):
            flat.extend(v)
        else:
            flat.append(v)
    if not flat or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        return None
    return [float(v) for v in flat] if all(math.isfinite(v) for v in flat) else None


def _one_object(value) -> bool:
    """``[x1, y1, ..., x4, y4]``, ``[[x, y] x 4]`` or ``[x1, y1, x2, y2]``: the geometry of ONE object."""
    if all(isinstance(v, (int, float)) for v in value):
        return len(value) in (4, 8)
    return len(value) == 4 and all(isinstance(v, (list, tuple)) and len(v) == 2 for v in value)


def reference_boxes(truth, image_size: tuple[int, int] | None) -> tuple[list[Box], str | None]:
    """``(boxes on the 0-100 grid, problem)`` of a referring/grounding ``ground_truth``.

    Accepted: GeoChat box text (``{<x1><y1><x2><y2>|θ}``, on the grid already), or pixel geometry (what
    GeoChat-Bench ships: one polygon per object, 4 corner points as ``[[x, y] x 4]`` or 8 numbers; also
    ``[x1, y1, x2, y2]``), one object or a list of them; pixel geometry needs the image's ``(width, height)``.
    ``problem`` names why a truth cannot be used (the record is then counted as malformed)."""
    if isinstance(truth, str):
        parsed = parse_boxes(truth)
        return (parsed.boxes, None) if parsed.boxes else ([], "ground_truth_without_box")
    if not isinstance(truth, (list, tuple)) or not truth:
        return [], "ground_truth_without_box"
    objects = [truth] if _one_object(truth) else list(truth)
    boxes: list[Box] = []
    for obj in objects:
        if isinstance(obj, str):
            boxes.extend(parse_boxes(obj).boxes)
            continue
        nums = _numbers(obj) if isinstance(obj, (list, tuple)) else None
        if nums is None or len(nums) not in (4, 8):
            return [], "unreadable_ground_truth_box"
        if image_size is None:
            return [], "no_image_size_for_pixel_ground_truth"
        w, h = image_size
        boxes.append(box_from_obb(nums, w, h) if len(nums) == 8 else box_from_pixels(nums, w, h))
    return (boxes, None) if boxes else ([], "ground_truth_without_box")


def all_matched(pred: list[Box], refs: list[Box], thr: float) -> bool:
    """Every reference box matched one-to-one (greedy, highest IoU first) by a predicted box with IoU >= ``thr``."""
    pairs = sorted(((rotated_iou(p, r), i, j) for i, p in enumerate(pred) for j, r in enumerate(refs)), reverse=True)
    used_p, used_r = set(), set()
    for iou, i, j in pairs:
        if iou < thr:
            break
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
    return bool(refs) and len(used_r) == len(refs)


def is_multi(record: dict, refs: list[Box]) -> bool:
    ids = record.get("obj_ids")
    if isinstance(ids, (list, tuple)):
        return len(ids) > 1
    return len(refs) > 1


def box_hit(pred: list[Box], refs: list[Box], multi: bool, thr: float, rule: str = "auto") -> bool:
    if rule == "all" or (rule == "auto" and multi):
        return all_matched(pred, refs, thr)
    return sample_iou(pred, refs, "best" if rule == "best" else "first") >= thr


def box_splits(record: dict, multi: bool) -> list[str]:
    size = str(record.get("size_group") or "").strip().lower()
    kind = "refer" if str(record.get("type", "")).strip().lower() == "ref" else "grounding"
    return ["overall", *([size] if size else []), "multi" if multi else "single", kind]


def score_boxes(items: list[dict], thr: float = 0.5, rule: str = "auto") -> dict:
    """acc@thr per split. Each item carries ``ref_boxes`` (from :func:`reference_boxes`) besides its record fields."""
    hits: Counter = Counter()
    counts: Counter = Counter()
    n_malformed_pred = n_no_box = 0
    for it in items:
        parsed = parse_boxes(it.get("answer")) if it.get("answer") is not None else None
        pred = parsed.boxes if parsed is not None else []
        n_malformed_pred += parsed.n_malformed if parsed is not None else 0
        n_no_box += int(parsed is not None and not parsed.boxes)
        multi = is_multi(it, it["ref_boxes"])
        hit = box_hit(pred, it["ref_boxes"], multi, thr, rule)
        it["hit"] = hit
        for key in box_splits(it, multi):
            counts[key] += 1
            hits[key] += int(hit)
    order = [k for k in BOX_SPLITS if k in counts] + sorted(k for k in counts if k not in BOX_SPLITS)
    return {f"acc@{thr:g}": {k: pct(hits[k], counts[k]) for k in order}, "n_by_split": {k: counts[k] for k in order},
            "n": len(items), "box_rule": rule, "n_no_answer": no_answer_count(items),
            "n_answers_without_box": n_no_box, "n_malformed_answer_boxes": n_malformed_pred}


# ---------------------------------------------------------------- region captioning

_TAGS = re.compile(r"</?p>")


class _NoSynonyms:
    """Stands in for nltk's WordNet reader when its data is not installed: METEOR with exact + stem matches only."""

    @staticmethod
    def synsets(*_args, **_kwargs):
        return []


def has_wordnet() -> bool:
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
    except (ImportError, LookupError, OSError):
        return False
    return True


def meteor_any(preds: list, refs: list) -> tuple[float | None, str]:
    """Mean METEOR in percent and how it was computed (``nltk`` with WordNet synonyms, ``nltk-exact+stem`` without
    its data, or why it is missing); decided up front, so the same data always gets the same kind of METEOR."""
    try:
        from nltk.translate.meteor_score import meteor_score
    except ImportError:
        return None, "METEOR omitted: nltk is not installed"
    if has_wordnet():
        value, note = meteor(preds, refs)
        return value, note or "nltk"
    tok = [re.findall(r"[a-z0-9]+", str(t or "").lower()) for t in (*preds, *refs)]
    hyp, ref = tok[:len(preds)], tok[len(preds):]
    total = sum(meteor_score([r], h, wordnet=_NoSynonyms()) for p, h, r in zip(preds, hyp, ref) if p is not None)
    return 100.0 * total / max(1, len(refs)), "nltk-exact+stem (WordNet data not installed: no synonym matches)"


def score_captions(items: list[dict]) -> dict:
    preds = [None if it.get("answer") is None else _TAGS.sub(" ", str(it["answer"])).strip() for it in items]
    refs = [str(it.get("ground_truth", "")) for it in items]
    rs = rouge_scores(preds, refs)
    value, impl = meteor_any(preds, refs)
    return {"rouge1": rs["rouge1"], "rougeL": rs["rougeL"], "meteor": value, "rouge_impl": rs["rouge_impl"],
            "meteor_impl": impl, "n": len(items), "n_no_answer": no_answer_count(items)}


def score_file(kind: str, items: list[dict], thr: float = 0.5, box_rule: str = "auto") -> dict:
    if kind == SCENE:
        return score_scene(items)
    if kind == VQA:
        return score_vqa(items)
    if kind == BOXES:
        return score_boxes(items, thr, box_rule)
    if kind == CAPTION:
        return score_captions(items)
    raise ValueError(f"unknown bench kind {kind!r}")
