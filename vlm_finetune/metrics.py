"""GeoChat metrics (GeoChat released none): answer accuracy, rotated IoU / acc@0.5, ROUGE-1/L, METEOR.

Optional packages: ``shapely`` (polygon intersection; else OpenCV's ``intersectConvexConvex``), ``rouge_score``
(else the built-in ROUGE-1 / LCS ROUGE-L F-measures below, same tokenisation idea: lowercase alphanumeric tokens, no
stemming), ``nltk`` with its WordNet data (METEOR; else omitted and :func:`meteor` returns None with a note).
"""

from __future__ import annotations

import math
import re
import string

from .boxes import Box, box_to_polygon

# ---------------------------------------------------------------- answers

_NUMBER_WORDS = {
    "zero": "0", "none": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13",
    "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19",
    "twenty": "20",
}
_ARTICLES = {"a", "an", "the"}
_YES = {"yes", "yeah", "yep", "true", "correct"}
_NO = {"no", "nope", "false", "incorrect"}
_PUNCT = re.compile("[" + re.escape(string.punctuation.replace("-", "")) + "]")


def normalize_answer(text) -> str:
    """Lowercase; punctuation dropped (hyphens become spaces, a decimal point between digits is kept); articles
    dropped; number words 0-20 -> digits ("none" -> 0); an answer starting with yes/no (or true/false) -> "yes"/"no"."""
    if text is None:
        return ""
    s = str(text).lower().strip()
    s = re.sub(r"(?<=\d),(?=\d{3})", "", s)  # 1,000 -> 1000
    s = re.sub(r"(?<=\d)\.(?=\d)", "\0", s)  # keep decimal points
    s = s.replace("-", " ").replace("_", " ")
    s = _PUNCT.sub(" ", s).replace("\0", ".")
    words = [_NUMBER_WORDS.get(w, w) for w in s.split() if w not in _ARTICLES]
    if words and words[0] in _YES:
        return "yes"
    if words and words[0] in _NO and (len(words) == 1 or not words[1].isdigit()):
        return "no"
    return " ".join(words)


def accuracy(preds, refs) -> float:
    """Percent of normalised exact matches (``None`` predictions are wrong); 0.0 for no samples."""
    refs = list(refs)
    preds = list(preds)
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    if not refs:
        return 0.0
    hits = sum(1 for p, r in zip(preds, refs) if p is not None and normalize_answer(p) == normalize_answer(r))
    return 100.0 * hits / len(refs)


# ---------------------------------------------------------------- boxes

def _hbb(box: Box) -> bool:
    return box.theta % 180 == 0


def _area(box: Box) -> float:
    return float(max(0, box.width) * max(0, box.height))


def _hbb_iou(a: Box, b: Box) -> float:
    iw = min(a.x2, b.x2) - max(a.x1, b.x1)
    ih = min(a.y2, b.y2) - max(a.y1, b.y1)
    inter = float(max(0, iw) * max(0, ih))
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _polygon_intersection(pa, pb) -> float:
    try:
        from shapely.geometry import Polygon
    except ImportError:
        import cv2
        import numpy as np

        inter, _ = cv2.intersectConvexConvex(np.asarray(pa, np.float32), np.asarray(pb, np.float32))
        return max(0.0, float(inter))
    return float(Polygon(pa).intersection(Polygon(pb)).area)


def rotated_iou(box_a: Box, box_b: Box) -> float:
    """IoU of two (possibly rotated) boxes on the grid; the exact rectangle formula when both are horizontal,
    else polygon intersection (shapely, or OpenCV). Degenerate (zero-area) boxes give 0."""
    if _hbb(box_a) and _hbb(box_b):
        return _hbb_iou(box_a, box_b)
    area_a, area_b = _area(box_a), _area(box_b)
    if area_a <= 0 or area_b <= 0:
        return 0.0
    inter = _polygon_intersection(box_to_polygon(box_a), box_to_polygon(box_b))
    union = area_a + area_b - inter
    if union <= 0:
        return 0.0
    return float(min(1.0, max(0.0, inter / union)))


def sample_iou(pred_boxes, ref_boxes, match: str = "first") -> float:
    """One sample's IoU: ``match="first"``: the FIRST predicted box against its best reference box;
    ``match="best"``: the best pair over all predicted x reference boxes. No boxes on either side -> 0."""
    pred_boxes, ref_boxes = list(pred_boxes or []), list(ref_boxes or [])
    if not pred_boxes or not ref_boxes:
        return 0.0
    if match == "first":
        pred_boxes = pred_boxes[:1]
    elif match != "best":
        raise ValueError(f"match {match!r}: use first or best")
    return max(rotated_iou(p, r) for p in pred_boxes for r in ref_boxes)


def acc_at_iou(pred_boxes_list, ref_boxes_list, thr: float = 0.5, match: str = "first") -> float:
    """Percent of samples whose :func:`sample_iou` is >= ``thr``; an empty (or wholly malformed) prediction is a
    miss; ``None`` in ``pred_boxes_list`` (a missing prediction) is a miss. 0.0 for no samples."""
    preds, refs = list(pred_boxes_list), list(ref_boxes_list)
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    if not refs:
        return 0.0
    hits = sum(1 for p, r in zip(preds, refs) if sample_iou(p, r, match) >= thr)
    return 100.0 * hits / len(refs)


# ---------------------------------------------------------------- polygons and detection mAP (EarthGPT format)

def _shoelace(poly) -> float:
    return abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(poly, poly[1:] + poly[:1]))) / 2.0


def _axis_rect(poly):
    xs, ys = sorted({round(p[0], 9) for p in poly}), sorted({round(p[1], 9) for p in poly})
    return (xs[0], ys[0], xs[-1], ys[-1]) if len(poly) == 4 and len(xs) == 2 and len(ys) == 2 else None


def polygon_iou(pa, pb) -> float:
    """IoU of two convex quadrilaterals given as 4 ``(x, y)`` corners in any consistent order (e.g. EarthGPT boxes
    normalised to [0, 1]): exact rectangle formula when both are axis-aligned, else polygon intersection (shapely,
    or OpenCV). Zero-area polygons give 0."""
    pa, pb = [tuple(map(float, p)) for p in pa], [tuple(map(float, p)) for p in pb]
    area_a, area_b = _shoelace(pa), _shoelace(pb)
    if area_a <= 0 or area_b <= 0:
        return 0.0
    ra, rb = _axis_rect(pa), _axis_rect(pb)
    if ra and rb:
        inter = max(0.0, min(ra[2], rb[2]) - max(ra[0], rb[0])) * max(0.0, min(ra[3], rb[3]) - max(ra[1], rb[1]))
    else:
        inter = _polygon_intersection(pa, pb)
    union = area_a + area_b - inter
    return float(min(1.0, max(0.0, inter / union))) if union > 0 else 0.0


def polygon_sample_iou(pred_polys, ref_polys, match: str = "first") -> float:
    """:func:`sample_iou` for polygons (EarthGPT-format grounding answers)."""
    pred_polys, ref_polys = list(pred_polys or []), list(ref_polys or [])
    if not pred_polys or not ref_polys:
        return 0.0
    if match not in ("first", "best"):
        raise ValueError(f"match {match!r}: use first or best")
    return max(polygon_iou(p, r) for p in (pred_polys[:1] if match == "first" else pred_polys) for r in ref_polys)


def voc_ap(tp_flags, n_gt: int) -> float:
    """VOC all-point interpolated AP (0-1) of ranked hits ``tp_flags`` (True = true positive) against ``n_gt``."""
    if n_gt <= 0:
        return 0.0
    recall, precision, tp = [0.0], [1.0], 0
    for k, hit in enumerate(tp_flags, 1):
        tp += bool(hit)
        recall.append(tp / n_gt)
        precision.append(tp / k)
    recall.append(1.0)
    precision.append(0.0)
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    return sum((recall[i] - recall[i - 1]) * precision[i] for i in range(1, len(recall)) if recall[i] != recall[i - 1])


def detection_map(preds, refs, iou_threshold: float = 0.5, iou=polygon_iou) -> dict:
    """mAP (percent) of detections: ``preds`` / ``refs`` = one list per image of ``(label, polygon)``.

    A model's answer carries no scores, so detections are ranked by their order of appearance in the answer (first
    = most confident); the same position in different images keeps the image order. Per class, VOC matching (each
    detection takes its highest-IoU reference box of that class in the image; a hit if IoU >= threshold and that
    box is not already taken, else a false positive) and VOC all-point AP; the mean runs over the classes of the
    references (detections of other classes are false positives of no class counted). ``iou`` is any
    ``(a, b) -> IoU`` (:func:`polygon_iou`, or :func:`rotated_iou` for grid Boxes)."""
    preds, refs = list(preds), list(refs)
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    classes = sorted({label for image in refs for label, _ in image})
    ranked = sorted(((k, i, label, box) for i, image in enumerate(preds) for k, (label, box) in enumerate(image or [])),
                    key=lambda t: (t[0], t[1]))
    per_class = {}
    for cls in classes:
        gts = {i: [box for label, box in image if label == cls] for i, image in enumerate(refs)}
        taken = {i: [False] * len(boxes) for i, boxes in gts.items()}
        flags = []
        for _, i, label, box in ranked:
            if label != cls:
                continue
            ious = [iou(box, g) for g in gts[i]]
            j = max(range(len(ious)), key=ious.__getitem__) if ious else -1
            hit = j >= 0 and ious[j] >= iou_threshold and not taken[i][j]
            if hit:
                taken[i][j] = True
            flags.append(hit)
        per_class[cls] = 100.0 * voc_ap(flags, sum(len(b) for b in gts.values()))
    value = sum(per_class.values()) / len(per_class) if per_class else 0.0
    return {"map": value, "per_class": per_class, "n_classes": len(classes),
            "n_predictions": len(ranked), "n_references": sum(len(image) for image in refs)}


# ---------------------------------------------------------------- captions

def _tokens(text) -> list[str]:
    return re.findall(r"[a-z0-9]+", str(text or "").lower())


def _f(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def rouge1_f(pred, ref) -> float:
    """Unigram-overlap F-measure (clipped counts), 0..1."""
    from collections import Counter

    pt, rt = Counter(_tokens(pred)), Counter(_tokens(ref))
    if not pt or not rt:
        return 0.0
    overlap = sum((pt & rt).values())
    return _f(overlap / sum(pt.values()), overlap / sum(rt.values()))


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rougel_f(pred, ref) -> float:
    """Longest-common-subsequence F-measure (ROUGE-L, beta 1), 0..1."""
    pt, rt = _tokens(pred), _tokens(ref)
    if not pt or not rt:
        return 0.0
    lcs = _lcs(pt, rt)
    return _f(lcs / len(pt), lcs / len(rt))


def rouge_scores(preds, refs) -> dict:
    """Mean ROUGE-1 / ROUGE-L F-measures in percent (``rouge_score`` when installed, else the built-ins); a ``None``
    prediction scores 0. Returns ``{"rouge1", "rougeL", "rouge_impl"}``."""
    preds, refs = list(preds), list(refs)
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    try:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)

        def one(p, r):
            s = scorer.score(str(r), str(p))
            return s["rouge1"].fmeasure, s["rougeL"].fmeasure
        impl = "rouge_score"
    except ImportError:
        def one(p, r):
            return rouge1_f(p, r), rougel_f(p, r)
        impl = "builtin"
    r1 = rl = 0.0
    for p, r in zip(preds, refs):
        if p is None:
            continue
        a, b = one(p, r)
        r1, rl = r1 + a, rl + b
    n = max(1, len(refs))
    return {"rouge1": 100.0 * r1 / n, "rougeL": 100.0 * rl / n, "rouge_impl": impl}


def meteor(preds, refs):
    """Mean METEOR in percent via nltk (needs its WordNet data); ``(None, note)`` when unavailable, else
    ``(value, None)``."""
    try:
        from nltk.translate.meteor_score import meteor_score
    except ImportError:
        return None, "METEOR omitted: nltk is not installed"
    preds, refs = list(preds), list(refs)
    total = 0.0
    try:
        for p, r in zip(preds, refs):
            if p is None:
                continue
            total += meteor_score([_tokens(r)], _tokens(p))
    except LookupError:
        return None, "METEOR omitted: nltk's WordNet data is not installed (nltk.download('wordnet'))"
    except Exception as exc:  # noqa: BLE001 -- an optional metric must not break the evaluation
        return None, f"METEOR omitted: nltk failed ({type(exc).__name__}: {exc})"
    value = 100.0 * total / max(1, len(refs))
    return (value if math.isfinite(value) else None), None
