"""Helpers shared by the readers: paths, issue messages, box maths (file listing and json loading: ``rs_common.files``).

Nothing here decodes or even stats an image: listing a folder once is cheap, opening 100k images in
the reader would not be (the build's workers do that, in parallel).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rs_common.files import list_files, rel_posix, rel_stem
from rs_common.formats.numbers import INT_TEXT, NUMBER_TEXT
from shards.record import Issue, Record


# ---------------------------------------------------------------- files and paths


def is_hidden(path: Path, root: Path) -> bool:
    """True when a component of ``path`` below ``root`` starts with a dot (``.ipynb_checkpoints/``, macOS ``._x.jpg``)."""
    return any(part.startswith(".") and part not in (".", "..") for part in Path(rel_posix(path, root)).parts)


def list_with_suffix(folder: Path, suffix: str, hidden: bool = False) -> list[Path]:
    """Files under ``folder`` (recursive) whose extension is ``suffix`` (any case); [] when it does not exist."""
    return list_files(folder, lambda p: p.suffix.lower() == suffix, hidden) if folder.is_dir() else []


def index_by_rel_stem(files: Iterable[Path], root: Path) -> dict[str, Path]:
    """{relative stem: file}; with two files of one stem (a.png, a.jpg) the first in sorted order wins."""
    index: dict[str, Path] = {}
    for path in files:
        index.setdefault(rel_stem(path, root), path)
    return index


# ---------------------------------------------------------------- issues


def located(path: str | Path, line: int | str | None, message: str) -> str:
    """``path:line: message`` (or ``path: message`` without a line): how every issue names its place."""
    return f"{path}:{line}: {message}" if line is not None else f"{path}: {message}"


def object_issue(reason: str, path: str | Path, line: int | str | None, message: str) -> Issue:
    """One object dropped, the image kept."""
    return Issue(reason, located(path, line, message), "object")


def record_issue(reason: str, path: str | Path, line: int | str | None, message: str) -> Issue:
    """The whole sample is skipped (the reader still yields the record so the counts balance)."""
    return Issue(reason, located(path, line, message), "record")


def mark_duplicate_rel_paths(records: Sequence[Record]) -> None:
    """A second record of the same image would give two samples one key: skip it, naming the first.

    ``records`` must be sorted by ``rel_path`` (duplicates are then neighbours)."""
    for prev, rec in zip(records, records[1:]):
        if rec.rel_path == prev.rel_path:
            rec.issues.append(
                record_issue("malformed_annotation", rec.origin or rec.image_path, rec.origin_line,
                             f"second entry for {rec.rel_path} (first at {prev.where()})")
            )


def sort_records(records: list[Record]) -> list[Record]:
    """Records in rel_path order with later duplicates flagged: the order every reader yields."""
    records.sort(key=lambda r: r.rel_path)
    mark_duplicate_rel_paths(records)
    return records


# ---------------------------------------------------------------- numbers and boxes


# NUMBER_TEXT / INT_TEXT: a number as annotation files write it (rs_common.formats.numbers); NaN/inf are let through
# there and reported by ``box_problem``.


def parse_number(value: Any) -> float | None:
    """``value`` (a JSON number or a plain decimal string) as a float, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and NUMBER_TEXT.fullmatch(value.strip()):
        return float(value.strip())
    return None


def parse_int(text: Any) -> int | None:
    """A plain decimal integer string (or int) as int, else None ("1_0" is not ten)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    if isinstance(text, str) and INT_TEXT.fullmatch(text.strip()):
        return int(text.strip())
    return None


def parse_floats(values: Sequence[Any]) -> tuple[float, ...] | None:
    """The values as floats, or None when one is not a plain number (NaN/inf pass; see ``all_finite``)."""
    try:
        parsed = tuple(parse_number(v) for v in values)
    except TypeError:
        return None
    return None if any(v is None for v in parsed) else parsed


def all_finite(values: Iterable[float]) -> bool:
    return all(math.isfinite(v) for v in values)


def hbb_of_points(coords: Sequence[float]) -> tuple[float, float, float, float]:
    """Horizontal box (x1, y1, x2, y2) enclosing the points ``x1, y1, x2, y2, ...``."""
    xs, ys = coords[0::2], coords[1::2]
    return (min(xs), min(ys), max(xs), max(ys))


def box_problem(hbb: Sequence[float], points: Sequence[float] = ()) -> str | None:
    """Why a box is obviously invalid before clipping (NaN/inf, negative width or height), else None.

    Zero-size and out-of-image boxes are left to the worker, which knows the real image size."""
    if not all_finite([*hbb, *points]):
        return f"box {tuple(points or hbb)} has a non-finite coordinate"
    if hbb[2] < hbb[0] or hbb[3] < hbb[1]:
        return f"box {tuple(hbb)} has a negative width or height"
    return None


def rotated_box_corners(cx: float, cy: float, w: float, h: float, angle_rad: float) -> tuple[float, ...]:
    """The 4 corners of a rotated rectangle, in the order and convention of ``cv2.boxPoints``
    (angle in radians here, degrees there), as ``(x1, y1, ..., x4, y4)``."""
    b = math.cos(angle_rad) * 0.5
    a = math.sin(angle_rad) * 0.5
    x0, y0 = cx - a * h - b * w, cy + b * h - a * w
    x1, y1 = cx + a * h - b * w, cy - b * h - a * w
    return (x0, y0, x1, y1, 2 * cx - x0, 2 * cy - y0, 2 * cx - x1, 2 * cy - y1)
