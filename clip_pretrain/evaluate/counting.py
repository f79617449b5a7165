"""Zero-shot object counting on DOTA-format detection data (``ROOT/images/*`` + ``ROOT/labelTxt/<stem>.txt``).

Rule (issue 13): an image whose label file holds 1..``max_count`` (10) objects, all of ONE class, is scored
against the prompts "a satellite photo of N {class}s." for N = 1..max_count of its class; the best-scoring N is
the predicted count and top-1 accuracy is the share of exact counts. Every other image is left out and counted by
reason, so a reader of the result sees how much of the set the number covers. No model code here: the driver
embeds ``CountingSet.images`` and the ``count_prompts`` of each class, then calls ``score_counting``.
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clip_pretrain.evaluate.common import EvalError
from clip_pretrain.evaluate.zeroshot import normalise_class_name
from rs_common.files import list_files, list_images
from rs_common.formats.dota import pair_labels, read_label_file

DEFAULT_TEMPLATE = "a satellite photo of {n} {c}s."
DEFAULT_MAX_COUNT = 10
LEFT_OUT_REASONS = ("more_than_max_objects", "several_classes", "no_objects", "no_label_file", "malformed_label")


@dataclass
class CountingSet:
    """The images kept for counting (sorted by path under ``images/``), the one class and the object count of each;
    ``left_out`` counts the others by reason (``left_out_images`` names them). ``n_listed`` images were found:
    ``n_listed == len(images) + sum(left_out.values())``. ``orphan_labels``: label files no image took."""

    root: Path
    images: list[Path]
    classes: list[str]
    counts: np.ndarray
    left_out: Counter = field(default_factory=Counter)
    left_out_images: dict[Path, str] = field(default_factory=dict)
    n_listed: int = 0
    orphan_labels: int = 0
    max_count: int = DEFAULT_MAX_COUNT


def check_max_count(max_count: int) -> int:
    if isinstance(max_count, bool) or not isinstance(max_count, (int, np.integer)) or max_count < 1:
        raise EvalError(f"max_count must be a positive integer, got {max_count!r}")
    return int(max_count)


def image_outcome(label: Path | None, max_count: int) -> tuple[str, int] | str:
    """(class, count) for an image that is kept, else the reason it is left out.

    A label file with any unparseable object line (or a NaN/inf coordinate, or unreadable) is left out whole:
    the true count is unknown. Difficult objects count: they are in the image, and the prompt asks how many
    there are, not how many are easy. Classes are taken as written (not checked against DOTA's list)."""
    if label is None:
        return "no_label_file"
    objects, problems = read_label_file(label)
    if problems:
        return "malformed_label"
    if not objects:
        return "no_objects"
    classes = {obj.cls for obj in objects}
    if len(classes) > 1:
        return "several_classes"
    if len(objects) > max_count:
        return "more_than_max_objects"
    return objects[0].cls, len(objects)


def list_counting_images(root: str | Path, max_count: int = DEFAULT_MAX_COUNT) -> CountingSet:
    """The images of the DOTA folder ``root`` with 1..``max_count`` objects of one class (see ``image_outcome``).

    ``images/<rel>/<stem>.<ext>`` pairs with ``labelTxt/<rel>/<stem>.txt``, else with the one label of its stem
    anywhere under ``labelTxt/`` when that is unambiguous (DOTA's zips nest images in ``images/part1/``): the
    pairing rule of stage 0's reader, from ``rs_common.formats.dota``. Hidden files are not listed."""
    max_count = check_max_count(max_count)
    root = Path(root).expanduser()
    images_dir, labels_dir = root / "images", root / "labelTxt"
    if not root.is_dir():
        raise EvalError(f"{root}: DOTA counting set not found (expected a folder with images/ and labelTxt/)")
    missing = [name for name in ("images", "labelTxt") if not (root / name).is_dir()]
    if missing:
        raise EvalError(f"{root}: not a DOTA folder, no {' or '.join(f'{m}/' for m in missing)} "
                        "(expected images/* and labelTxt/<stem>.txt)")
    images = list_images(images_dir)
    labels = list_files(labels_dir, lambda p: p.suffix.lower() == ".txt")
    pairs, orphans = pair_labels(images, images_dir, labels, labels_dir)
    out = CountingSet(root=root, images=[], classes=[], counts=np.zeros(0, dtype=np.int64),
                      left_out=Counter(dict.fromkeys(LEFT_OUT_REASONS, 0)), n_listed=len(images),
                      orphan_labels=len(orphans), max_count=max_count)
    kept_counts: list[int] = []
    for image in images:  # sorted by path under images/
        outcome = image_outcome(pairs[image][0], max_count)
        if isinstance(outcome, str):
            out.left_out[outcome] += 1
            out.left_out_images[image] = outcome
        else:
            out.images.append(image)
            out.classes.append(outcome[0])
            kept_counts.append(outcome[1])
    out.counts = np.asarray(kept_counts, dtype=np.int64)
    return out


def count_prompts(class_name: str, template: str = DEFAULT_TEMPLATE, max_count: int = DEFAULT_MAX_COUNT) -> list[str]:
    """``template`` filled with N = 1..``max_count`` (``{n}``) and the class name made readable (``{c}``:
    "small-vehicle" -> "small vehicle"). The template is used as given: "1 planes" reads oddly but is the same
    sentence shape for every N, so only the number differs between the prompts."""
    max_count = check_max_count(max_count)
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise EvalError(f"counting template {template!r}: {exc}") from None
    if "n" not in fields or "c" not in fields or set(fields) - {"n", "c"}:
        raise EvalError(f"counting template {template!r} must hold {{n}} (the count) and {{c}} (the class) and no other "
                        "{...} field, e.g. 'a satellite photo of {n} {c}s.'")
    name = normalise_class_name(class_name)
    if not name:
        raise EvalError(f"class name {class_name!r} is empty once normalised for prompts")
    return [template.format(n=n, c=name) for n in range(1, max_count + 1)]


def check_score_inputs(image_emb: np.ndarray, image_classes: list[str], counts: np.ndarray,
                       prompt_emb: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """The embeddings and counts as arrays, and max_count (the prompt rows per class); EvalError on a mismatch."""
    image_emb = np.asarray(image_emb, dtype=np.float32)
    counts = np.asarray(counts)
    n = len(image_classes)
    if image_emb.ndim != 2 or image_emb.shape[0] != n or counts.shape != (n,):
        raise EvalError(f"counting: image embeddings {image_emb.shape}, {n} classes and counts {counts.shape} "
                        "must describe the same images (n, d) / n / (n,)")
    if not prompt_emb:
        raise EvalError("counting: no prompt embeddings")
    shapes = {c: np.shape(e) for c, e in prompt_emb.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
        raise EvalError(f"counting: prompt embeddings must all be (max_count, d), got {shapes}")
    max_count, dim = next(iter(shapes.values()))
    if dim != image_emb.shape[1]:
        raise EvalError(f"counting: prompt embeddings have dimension {dim}, image embeddings {image_emb.shape[1]}")
    missing = sorted(set(image_classes) - set(prompt_emb))
    if missing:
        raise EvalError(f"counting: no prompt embeddings for class(es) {missing}")
    if n and (not np.issubdtype(counts.dtype, np.integer) or counts.min() < 1 or counts.max() > max_count):
        raise EvalError(f"counting: true counts must be integers in 1..{max_count}")
    return image_emb, counts.astype(np.int64), int(max_count)


def predict_counts(image_emb: np.ndarray, image_classes: list[str], prompt_emb: dict[str, np.ndarray]) -> np.ndarray:
    """Per image, the N (1-based) whose prompt of the image's class scores highest; ties go to the lower N
    (``argmax`` takes the first maximum), so equal scores never reward a guess of a larger count."""
    image_emb = np.asarray(image_emb, dtype=np.float32)
    classes = np.asarray(image_classes, dtype=object)
    pred = np.zeros(len(classes), dtype=np.int64)
    for cls in sorted(set(image_classes)):
        rows = np.flatnonzero(classes == cls)
        scores = image_emb[rows] @ np.asarray(prompt_emb[cls], dtype=np.float32).T
        pred[rows] = np.argmax(scores, axis=1) + 1
    return pred


def percent(hits: np.ndarray) -> float | None:
    return float(100.0 * np.mean(hits)) if len(hits) else None


def score_counting(image_emb: np.ndarray, image_classes: list[str], counts: np.ndarray,
                   prompt_emb: dict[str, np.ndarray]) -> dict[str, Any]:
    """Counting metrics for unit-row ``image_emb`` (n, d) against ``prompt_emb[class]`` (max_count, d), row N-1
    being the prompt for N (``count_prompts``' order). ``top1``, ``within_1`` (|pred - true| <= 1) in percent,
    ``mean_abs_error`` in objects; ``per_count`` / ``per_class`` {"n", "top1", ...}; ``confusion[true-1][pred-1]``;
    ``predicted``: the count per image. With no images the rates are None."""
    image_emb, counts, max_count = check_score_inputs(image_emb, image_classes, counts, prompt_emb)
    pred = predict_counts(image_emb, image_classes, prompt_emb)
    hit = pred == counts
    err = np.abs(pred - counts)
    confusion = np.zeros((max_count, max_count), dtype=np.int64)
    np.add.at(confusion, (counts - 1, pred - 1), 1)
    classes = np.asarray(image_classes, dtype=object)
    per_class = {}
    for cls in sorted(set(image_classes)):
        rows = classes == cls
        per_class[cls] = {"n": int(rows.sum()), "top1": percent(hit[rows]),
                          "mean_abs_error": float(err[rows].mean()), "within_1": percent(err[rows] <= 1)}
    return {
        "top1": percent(hit),
        "n_images": int(len(counts)),
        "max_count": max_count,
        "mean_abs_error": float(err.mean()) if len(err) else None,
        "within_1": percent(err <= 1),
        "per_count": {str(k): {"n": int((counts == k).sum()), "top1": percent(hit[counts == k])}
                      for k in range(1, max_count + 1)},
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "predicted": pred.tolist(),
    }
