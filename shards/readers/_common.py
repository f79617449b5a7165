"""Helpers shared by the readers: file listing, paths, issue messages, json loading, box maths.

Nothing here decodes or even stats an image: listing a folder once is cheap, opening 100k images in
the reader would not be (the build's workers do that, in parallel).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from shards.record import AnnotationError, Issue, Record

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})


# ---------------------------------------------------------------- files and paths


def is_image_file(path: Path) -> bool:
    """True for a file name with an image extension (case-insensitive); does not touch the disk."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def absolute(path: Path) -> Path:
    """Absolute path without resolving symlinks (datasets are often linked in from elsewhere)."""
    return Path(os.path.abspath(path))


def rel_posix(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as a posix string (with ``..`` when it is not under ``root``; never absolute,
    so keys and shard JSON never carry a machine's paths)."""
    return Path(os.path.relpath(absolute(path), absolute(root))).as_posix()


def is_under(path: Path, root: Path) -> bool:
    """True when ``path`` lies in ``root`` after normalising ``..`` (symlinks are not resolved: a dataset whose
    folders are links to elsewhere is still one dataset)."""
    rel = os.path.relpath(absolute(path), absolute(root))
    return rel != ".." and not rel.startswith("../") and not os.path.isabs(rel)


def is_hidden(path: Path, root: Path) -> bool:
    """True when a component of ``path`` below ``root`` starts with a dot (``.ipynb_checkpoints/``, macOS ``._x.jpg``)."""
    return any(part.startswith(".") and part not in (".", "..") for part in Path(rel_posix(path, root)).parts)


def rel_stem(path: Path, root: Path) -> str:
    """Relative posix path without the extension: the key that pairs an image with its annotation."""
    rel = rel_posix(path, root)
    head, _, name = rel.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{head}/{stem}" if head else stem


def walk(folder: Path, hidden: bool = True,
         seen: set[tuple[int, int]] | None = None) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``os.walk(folder, followlinks=True)`` that enters every real folder once.

    Links are followed (datasets are often assembled from links), but a folder reached a second time - a link
    loop, or two links to one folder - is not entered again, so a loop can neither hang the listing nor list
    one image many times. Pass one ``seen`` set to several walks to share that across them. ``hidden=False``
    also skips entries whose name starts with a dot. Sub-folder names come sorted; prune ``dirnames`` in place
    as with os.walk."""
    seen = set() if seen is None else seen
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        try:
            here = real_id(Path(dirpath))
        except OSError:
            dirnames[:] = []
            continue
        if here in seen:
            dirnames[:] = []
            continue
        seen.add(here)
        dirnames[:] = sorted(d for d in dirnames if hidden or not d.startswith("."))
        yield Path(dirpath), dirnames, [f for f in filenames if hidden or not f.startswith(".")]


def list_files(folder: Path, keep: Callable[[Path], bool] = lambda p: True, hidden: bool = False,
               seen: set[tuple[int, int]] | None = None) -> list[Path]:
    """Every file under ``folder`` (recursive, following links, each real folder once - see ``walk``) that
    ``keep`` accepts, sorted by relative path so every reader's order is deterministic. Hidden entries (names
    starting with a dot) are left out unless ``hidden``: the readers list them and the build counts them
    (``hidden_file``)."""
    found: list[Path] = []
    for base, _, filenames in walk(folder, hidden, seen):
        found.extend(base / name for name in filenames if keep(base / name))
    return sorted(found, key=lambda p: rel_posix(p, folder))


def list_images(folder: Path, hidden: bool = False, seen: set[tuple[int, int]] | None = None) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by relative path; [] when it does not exist."""
    return list_files(folder, is_image_file, hidden, seen) if folder.is_dir() else []


def real_id(folder: Path) -> tuple[int, int]:
    """(device, inode) of a folder: what ``walk``'s ``seen`` holds."""
    st = os.stat(folder)
    return st.st_dev, st.st_ino


def list_with_suffix(folder: Path, suffix: str, hidden: bool = False) -> list[Path]:
    """Files under ``folder`` (recursive) whose extension is ``suffix`` (any case); [] when it does not exist."""
    return list_files(folder, lambda p: p.suffix.lower() == suffix, hidden) if folder.is_dir() else []


def index_by_rel_stem(files: Iterable[Path], root: Path) -> dict[str, Path]:
    """{relative stem: file}; with two files of one stem (a.png, a.jpg) the first in sorted order wins."""
    index: dict[str, Path] = {}
    for path in files:
        index.setdefault(rel_stem(path, root), path)
    return index


def first_existing_dir(root: Path, names: Sequence[str]) -> Path | None:
    """The first ``root/name`` that is a directory, or None."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


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


# ---------------------------------------------------------------- json


def load_json_file(path: Path) -> Any:
    """Parse a whole-dataset json; an unreadable or invalid file is fatal (AnnotationError with the line)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise AnnotationError(path, exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(path, None, f"cannot read: {exc}") from None


# ---------------------------------------------------------------- numbers and boxes


# A number as annotation files write it. Python's float() also takes "1_0" (= 10) and surrounding blanks; a
# label line "1_0 5 ..." is a typo, not a ten. NaN/inf are let through here and reported by ``box_problem``.
NUMBER_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)
INT_TEXT = re.compile(r"[+-]?\d+")


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
