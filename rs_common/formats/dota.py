"""DOTA (v1.0 / v1.5 / v2.0) label files and layout: stage 0's ``dota`` reader builds shards from them, stage-1
``counting`` evaluation counts objects in them. ``ROOT/images/*`` + ``ROOT/labelTxt/<stem>.txt``.

A label line is ``x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]`` (9 or 10 blank-separated tokens; the difficult flag
is an integer, non-zero = difficult), or one of the header lines ``imagesource:...`` / ``gsd:...``; blank lines
are ignored. Numbers are plain decimals (``1_0`` is a typo, not ten; NaN/inf parse, the caller judges them).
Images pair with labels by relative path, else by an unambiguous file stem (``pair_labels``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from rs_common.files import rel_posix, rel_stem
from rs_common.formats.numbers import INT_TEXT, NUMBER_TEXT

HEADER_KEYS = ("imagesource", "gsd")
LINE_FORMAT = "expected 8 coordinates + class [+ difficult]"
NO_LABEL = "no label file in labelTxt/"


@dataclass(frozen=True)
class DotaObject:
    """One object line: the 4 corner points ``(x1, y1, ..., x4, y4)``, the class as written, the difficult flag."""

    coords: tuple[float, ...]
    cls: str
    difficult: bool


@dataclass(frozen=True)
class DotaHeader:
    """A header line: ``key`` lower case, ``value`` as ``header_value`` reads it."""

    key: str
    value: float | str | None


def header_value(key: str, value: str) -> float | str | None:
    """``gsd`` as a float (None for DOTA's ``gsd:null``); other headers as text."""
    if key != "gsd":
        return value
    try:
        return float(value)
    except ValueError:
        return None if value.lower() in ("", "null", "none", "nan") else value


def parse_label_line(line: str) -> DotaObject | DotaHeader | str | None:
    """One label line -> an object, a header, a problem (the message, without a place) or None (blank line)."""
    line = line.strip()
    if not line:
        return None
    key, sep, value = line.partition(":")
    if sep and key.strip().lower() in HEADER_KEYS:
        key = key.strip().lower()
        return DotaHeader(key, header_value(key, value.strip()))
    parts = line.split()
    coords = None
    if len(parts) in (9, 10) and all(NUMBER_TEXT.fullmatch(p) for p in parts[:8]):
        coords = tuple(float(p) for p in parts[:8])
    difficult = parse_difficult(parts[9]) if len(parts) == 10 else False
    if coords is None or difficult is None:
        return f"{LINE_FORMAT}, got {line!r}"
    return DotaObject(coords, parts[8], difficult)


def parse_difficult(token: str) -> bool | None:
    """DOTA's difficult flag (0/1; any integer accepted), None when it is not a plain integer."""
    return int(token) != 0 if INT_TEXT.fullmatch(token.strip()) else None


def read_label_file(path: Path) -> tuple[list[DotaObject], list[str]]:
    """The objects of one label file and its problems (``path:line: message``; an unreadable file is one problem).

    An object line with a NaN/inf coordinate is a problem here, not an object (headers are skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{path}: cannot read label file: {exc}"]
    objects: list[DotaObject] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        parsed = parse_label_line(line)
        if isinstance(parsed, str):
            problems.append(f"{path}:{number}: {parsed}")
        elif isinstance(parsed, DotaObject):
            if all(math.isfinite(v) for v in parsed.coords):
                objects.append(parsed)
            else:
                problems.append(f"{path}:{number}: box {parsed.coords} has a non-finite coordinate")
    return objects, problems


# ---------------------------------------------------------------- layout


def pair_labels(images: list[Path], images_dir: Path, labels: list[Path],
                labels_dir: Path) -> tuple[dict[Path, tuple[Path | None, str]], list[Path]]:
    """Each image's label file (or None with the reason), and the labels no image took.

    ``images/x/a.png`` pairs with ``labelTxt/x/a.txt``. DOTA's zips nest their files in extra folders
    (``images/part1/P0001.png`` beside ``labelTxt/P0001.txt``), so an image without a label at its own relative
    path takes the label of the same file stem - but only when that stem names exactly one image and one
    label, and the label is not already another image's exact pair: ``images/sub/ok.png`` never gets
    ``labelTxt/ok.txt`` when ``images/ok.png`` exists."""
    by_rel = {rel_stem(label, labels_dir): label for label in labels}
    exact = {image: by_rel.get(rel_stem(image, images_dir)) for image in images}
    taken = {label for label in exact.values() if label is not None}
    image_stems = Counter(image.stem for image in images)
    free_by_stem: dict[str, list[Path]] = defaultdict(list)
    for label in labels:
        free_by_stem[label.stem].append(label)
    pairs: dict[Path, tuple[Path | None, str]] = {}
    for image, label in exact.items():
        if label is not None:
            pairs[image] = (label, "")
            continue
        candidates = free_by_stem.get(image.stem, [])
        if len(candidates) == 1 and image_stems[image.stem] == 1 and candidates[0] not in taken:
            pairs[image] = (candidates[0], "")
            taken.add(candidates[0])
        elif candidates:
            names = ", ".join(rel_posix(c, labels_dir) for c in candidates[:3])
            pairs[image] = (None, f"no labelTxt/{rel_stem(image, images_dir)}.txt, and the label(s) of the same "
                                  f"name ({names}) cannot be assigned to it unambiguously")
        else:
            pairs[image] = (None, NO_LABEL)
    return pairs, [label for label in labels if label not in taken]
