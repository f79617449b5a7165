"""DOTA (v1.0 / v1.5 / v2.0): ``ROOT/images/*`` + ``ROOT/labelTxt/<stem>.txt``.

Label lines are ``x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]``; the optional header lines
``imagesource:...`` and ``gsd:...`` go to ``record.meta``. Images and labels are paired by file stem
(DOTA names are unique; sub-folders, e.g. from nested zips, are ignored); a label with no image still
yields a record (the image path guessed as ``images/<stem>.png``) so the worker counts it as
``missing_image``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from shards.build_config import BuildConfig
from shards.readers._common import (
    absolute,
    box_problem,
    hbb_of_points,
    list_images,
    list_with_suffix,
    object_issue,
    parse_floats,
    record_issue,
    rel_posix,
    sort_records,
)
from shards.readers.classes import DOTA_CLASSES, ClassPolicy, class_policy, unknown_class_message
from shards.record import Issue, ObjectAnn, Record

HEADER_KEYS = ("imagesource", "gsd")
LINE_FORMAT = "expected 8 coordinates + class [+ difficult]"


def read(root: Path, source: str, cfg: BuildConfig) -> Iterator[Record]:
    root = absolute(root)
    images_dir, labels_dir = root / "images", root / "labelTxt"
    if not images_dir.is_dir() and not labels_dir.is_dir():
        raise FileNotFoundError(f"{root}: a DOTA folder needs images/ and labelTxt/ (neither found)")
    policy = class_policy(cfg, DOTA_CLASSES)
    images = list_images(images_dir)
    labels = labels_by_stem(labels_dir)
    records = [make_record(root, source, path, labels.get(path.stem), policy) for path in images]
    with_image = {path.stem for path in images}
    records += [
        make_record(root, source, images_dir / f"{stem}.png", label, policy)
        for stem, label in labels.items() if stem not in with_image
    ]
    yield from sort_records(records)


def labels_by_stem(labels_dir: Path) -> dict[str, Path]:
    """{file stem: label file}; DOTA names are unique, so pairing ignores sub-folders (zips nest them)."""
    labels: dict[str, Path] = {}
    for path in list_with_suffix(labels_dir, ".txt"):
        labels.setdefault(path.stem, path)
    return labels


def make_record(root: Path, source: str, image_path: Path, label_path: Path | None, policy: ClassPolicy) -> Record:
    record = Record(source=source, image_path=image_path, rel_path=rel_posix(image_path, root))
    if label_path is None:
        record.issues.append(record_issue("missing_annotation", image_path, None, "no label file in labelTxt/"))
        return record
    record.origin = str(label_path)
    try:
        text = label_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        record.issues.append(record_issue("malformed_annotation", label_path, None, f"cannot read label file: {exc}"))
        return record
    for number, line in enumerate(text.splitlines(), start=1):
        add_label_line(record, line.strip(), number, label_path, policy)
    return record


def add_label_line(record: Record, line: str, number: int, path: Path, policy: ClassPolicy) -> None:
    """One label line -> a header value in meta, an object, or an issue on the record."""
    if not line:
        return
    key, sep, value = line.partition(":")
    if sep and key.strip().lower() in HEADER_KEYS:
        record.meta[key.strip().lower()] = header_value(key.strip().lower(), value.strip())
        return
    obj_or_issue = parse_object_line(line, number, path, policy)
    if isinstance(obj_or_issue, Issue):
        record.issues.append(obj_or_issue)
    else:
        record.objects.append(obj_or_issue)


def header_value(key: str, value: str) -> float | str | None:
    """``gsd`` as a float (None for DOTA's ``gsd:null``); other headers as text."""
    if key != "gsd":
        return value
    try:
        return float(value)
    except ValueError:
        return None if value.lower() in ("", "null", "none", "nan") else value


def parse_object_line(line: str, number: int, path: Path, policy: ClassPolicy) -> ObjectAnn | Issue:
    parts = line.split()
    coords = parse_floats(parts[:8]) if len(parts) in (9, 10) else None
    difficult = parse_difficult(parts[9]) if len(parts) == 10 else False
    if coords is None or difficult is None:
        return object_issue("malformed_annotation", path, number, f"{LINE_FORMAT}, got {line!r}")
    name, known = policy.check(parts[8])
    if not known:
        return object_issue("unknown_class", path, number, unknown_class_message(parts[8]))
    hbb = hbb_of_points(coords)
    problem = box_problem(hbb, coords)
    if problem is not None:
        return object_issue("degenerate_box", path, number, problem)
    return ObjectAnn(cls=name, hbb=hbb, obb=coords, difficult=difficult, line=number)


def parse_difficult(token: str) -> bool | None:
    """DOTA's difficult flag (0/1; any integer accepted), None when it is not an integer."""
    try:
        return int(token) != 0
    except ValueError:
        return None
